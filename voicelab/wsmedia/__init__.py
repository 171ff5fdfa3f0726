"""WebSocket media streams: the telephony "media streams" transport to a voice agent.

- :mod:`voicelab.wsmedia.protocol`: the JSON messages (``connected``, ``start``,
  ``media``, ``mark``, ``dtmf``, ``clear``, ``stop``) carrying base64 8 kHz mu-law, as a
  sans-IO encoder and decoder with typed errors.
- :mod:`voicelab.wsmedia.live`: the agent's server, the platform's client and
  :func:`~voicelab.wsmedia.live.ws_call` (aiohttp through the network interface;
  imported on demand, not from here, so the protocol stays importable without asyncio).
"""

from __future__ import annotations

from .protocol import (
    EVENTS,
    FRAME_BYTES,
    FRAME_MS,
    Cleared,
    Connected,
    DtmfReceived,
    MarkReceived,
    MediaFormat,
    MediaReceived,
    MediaStreamDecoder,
    MediaStreamEncoder,
    StreamStarted,
    StreamStopped,
    mulaw_decode,
    mulaw_encode,
    new_sid,
)

__all__ = [
    "EVENTS",
    "FRAME_BYTES",
    "FRAME_MS",
    "Cleared",
    "Connected",
    "DtmfReceived",
    "MarkReceived",
    "MediaFormat",
    "MediaReceived",
    "MediaStreamDecoder",
    "MediaStreamEncoder",
    "StreamStarted",
    "StreamStopped",
    "mulaw_decode",
    "mulaw_encode",
    "new_sid",
]
