"""The lab's one error hierarchy.

Every error voicelab raises on purpose derives from :class:`VoicelabError`, so a
caller (the command line, a notebook, a sweep runner) can catch one root and show a
one-line message. Errors that a user can cause carry a message that says what was
wrong and what to do about it.

Protocol errors follow h11's split: :class:`RemoteProtocolError` (the peer broke the
rules; carries the status code a server would answer with) and
:class:`LocalProtocolError` (we were asked to break them).
"""

from __future__ import annotations

__all__ = [
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


class VoicelabError(Exception):
    """Root of every error voicelab raises on purpose."""


class ParameterError(VoicelabError, ValueError):
    """A parameter is out of range, of the wrong type, or names nothing known.

    Also a :class:`ValueError`, so generic code that validates inputs still catches it.
    """


class AudioError(VoicelabError):
    """Audio input is unusable: missing or corrupt file, wrong sample rate, bad shape."""


class DataUnavailableError(VoicelabError):
    """A data set (speech corpus, recording) is neither on disk nor fetchable."""


class CodecError(VoicelabError):
    """A codec failed to encode or decode, or got a payload it cannot use."""


class CodecUnavailableError(CodecError):
    """A codec exists in the registry but its library is not installed here.

    The message names the package that provides it (e.g. Debian ``libbcg729-0``).
    """


class MetricError(VoicelabError):
    """A quality metric cannot be computed for this input (silence, too short, ...)."""


class ProtocolError(VoicelabError):
    """A wire-protocol rule was broken.

    Parameters
    ----------
    message : str
        What was wrong.
    status_code : int, optional
        The SIP/HTTP status a server answers with (400 unless stated).
    """

    def __init__(self, message: str, *, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class RemoteProtocolError(ProtocolError):
    """The peer sent something that breaks the protocol (malformed message, ...)."""


class LocalProtocolError(ProtocolError):
    """Our side was asked to do something the protocol forbids."""


class PeerTimeoutError(ProtocolError, TimeoutError):
    """The peer did not answer in time (no response, no media, did not start).

    Also a :class:`TimeoutError`, so ``except asyncio.TimeoutError`` still catches it.
    ``status_code`` is 408 (Request Timeout), what a SIP transaction reports then.
    """

    def __init__(self, message: str, *, status_code: int = 408) -> None:
        super().__init__(message, status_code=status_code)


class ToolUnavailableError(DataUnavailableError):
    """An external program the lab drives (baresip, SIPp, coturn, Chromium) is not installed.

    The message names the Debian package that provides it.
    """
