"""The voice agent's listen-think-speak pipeline (endpoint layer).

One :class:`Pipeline` object sits behind the SIP, WebSocket and WebRTC fronts: caller
frames in (``feed(frame, now)``), agent frames out (``next_frame(now)``), timestamped
stage events and per-turn records on the loop clock. See docs/agent-turn.md.

``Pipeline``, ``PipelineConfig``, ``StageEvent`` and ``AgentTurn`` are imported on first
use (PEP 562): the recogniser's worker process imports ``voicelab.pipeline.asr`` only, and
importing :mod:`.core` would pull in ``voicelab.audio`` (scipy.signal: ~0.75 s of its
start-up, for nothing it uses).
"""

from typing import Any

from .wer import normalize, wer

__all__ = ["Pipeline", "PipelineConfig", "StageEvent", "AgentTurn", "wer", "normalize"]

_LAZY = ("Pipeline", "PipelineConfig", "StageEvent", "AgentTurn")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
