"""voicelab: a research lab for the trade-offs of real-time voice.

SIP/RTP vs WebRTC vs WebSocket media, codec vs codec, network path vs network path,
for voice agents. See ``docs/`` and the notebooks for a tour.
"""

from __future__ import annotations

from .errors import (
    AudioError,
    CodecError,
    CodecUnavailableError,
    DataUnavailableError,
    LocalProtocolError,
    MetricError,
    ParameterError,
    ProtocolError,
    RemoteProtocolError,
    VoicelabError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "VoicelabError",
    "ParameterError",
    "AudioError",
    "DataUnavailableError",
    "CodecError",
    "CodecUnavailableError",
    "MetricError",
    "ProtocolError",
    "RemoteProtocolError",
    "LocalProtocolError",
]
