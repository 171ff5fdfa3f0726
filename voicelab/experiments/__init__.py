"""Experiments: one :class:`Scenario` -> :func:`run` -> :class:`Result` for every mode and
transport, and studies (grids, repeats, talkers, statistics, a results store, Dask).

>>> from voicelab.experiments import Scenario, run, Study

``voicelab.experiments.run`` and ``voicelab.experiments.provenance`` are the functions
(also after their modules were imported); the modules themselves are
``sys.modules["voicelab.experiments.run"]`` etc., and ``from voicelab.experiments.run
import run_async`` works as usual.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

#: public name -> module that defines it (loaded on first use: importing the package stays cheap)
_NAMES = {
    "Scenario": ".scenario",
    "Result": ".result",
    "RESULT_COLUMNS": ".result",
    "run": ".run",
    "run_async": ".run",
    "provenance": ".provenance",
    "Study": ".study",
    "ResultStore": ".store",
    "stats": None,
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'voicelab.experiments' has no attribute {name!r}")
    mod = _NAMES[name]
    if mod is None:
        return importlib.import_module(f".{name}", __name__)
    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Keeps ``run`` and ``provenance`` the functions: importing the submodules
    ``.run`` / ``.provenance`` (which the import system binds on the package under the
    same names) must not replace the exported functions by their modules."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _NAMES.get(name) == f".{name}" and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
