"""WebRTC in the lab: signaling server with tokens, aiortc peers, media bridges.

Submodules are imported on first use of a name, so ``import voicelab.webrtc`` stays
cheap (no aiohttp or aiortc import):

- :mod:`voicelab.webrtc.tokens`: short-lived HMAC-signed tokens (sans-IO).
- :mod:`voicelab.webrtc.signaling`: the aiohttp signaling server, its Python client
  and the browser client page (``static/``).
- :mod:`voicelab.webrtc.peer`: aiortc peer connections with the lab's codecs, jitter
  buffers and PLC, sockets and host candidates through a network interface.
- :mod:`voicelab.webrtc.media`: loop-clock audio tracks and recording sinks.
- :mod:`voicelab.webrtc.call`: :func:`webrtc_call`, one measured WebRTC call.
- :mod:`voicelab.webrtc.agent`: :func:`serve_webrtc`, the voice agent's WebRTC front
  (``voicelab agent serve --webrtc``).
- :mod:`voicelab.webrtc.browser`: headless Chromium with a WAV as its microphone.
"""

from __future__ import annotations

import importlib
from typing import Any

#: name -> submodule that defines it (lazy re-exports).
_EXPORTS = {
    "TokenClaims": "tokens",
    "issue_token": "tokens",
    "verify_token": "tokens",
    "SignalingServer": "signaling",
    "SignalingSession": "signaling",
    "SignalingClient": "signaling",
    "SignalingStats": "signaling",
    "SessionEvent": "signaling",
    "TokenBucket": "signaling",
    "make_peer_connection": "peer",
    "ice_scope": "peer",
    "patches_active": "peer",
    "SourceTrack": "media",
    "AudioSink": "media",
    "webrtc_call": "call",
    "serve_webrtc": "agent",
    "WebRtcFront": "agent",
    "launch_chromium": "browser",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
