"""The voice agent's listen-think-speak pipeline (endpoint layer).

One :class:`Pipeline` object sits behind the SIP, WebSocket and WebRTC fronts: caller
frames in (``feed(frame, now)``), agent frames out (``next_frame(now)``), timestamped
stage events and per-turn records on the loop clock. See docs/agent-turn.md.
"""

from .core import AgentTurn, Pipeline, PipelineConfig, StageEvent
from .wer import normalize, wer

__all__ = ["Pipeline", "PipelineConfig", "StageEvent", "AgentTurn", "wer", "normalize"]
