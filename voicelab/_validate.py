"""Parameter checks shared by the lab's models: one wording for one kind of mistake."""

from __future__ import annotations

import math
from typing import Any

from .errors import ParameterError

__all__ = ["nonneg_ms", "positive"]


def _number(value: Any, name: str, what: str) -> float:
    if isinstance(value, bool):
        raise ParameterError(f"{name} must be {what}, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be {what}, got {value!r}") from None
    if not math.isfinite(v):
        raise ParameterError(f"{name} must be {what}, got {v!r}")
    return v


def nonneg_ms(value: Any, name: str) -> float:
    """A duration in milliseconds, >= 0 (``ParameterError`` naming ``name`` otherwise)."""
    v = _number(value, name, "a number of milliseconds >= 0")
    if v < 0:
        raise ParameterError(f"{name} {v:g} ms is negative: give a value >= 0")
    return v


def positive(value: Any, name: str) -> float:
    """A number > 0 (``ParameterError`` naming ``name`` otherwise)."""
    v = _number(value, name, "a number above 0")
    if v <= 0:
        raise ParameterError(f"{name} {v:g} must be above 0")
    return v
