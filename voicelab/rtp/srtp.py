"""SRTP / SRTCP (RFC 3711) with keys from SDES (RFC 4568): a thin wrapper over pylibsrtp.

:class:`SrtpContext` holds two libsrtp sessions, one for what we send (our master key)
and one for what we receive (the peer's master key), as SDP security descriptions set
them up: each side announces the key it sends with in ``a=crypto``. Suites:

============================  ===========  ======================  =======================
suite                         master key   auth tag per RTP packet  SRTCP trailer
============================  ===========  ======================  =======================
``AES_CM_128_HMAC_SHA1_80``   16 + 14 B    10 bytes                4 (E+index) + 10 bytes
``AES_CM_128_HMAC_SHA1_32``   16 + 14 B    4 bytes                 4 (E+index) + 10 bytes
============================  ===========  ======================  =======================

(RFC 4568 6.2.1: the ``_32`` suite shortens only the SRTP tag; SRTCP keeps 80 bits.)

Errors: a packet that fails authentication raises :class:`SrtpAuthError`, a replayed or
too-old one :class:`SrtpReplayError`; both derive from :class:`SrtpError`, itself a
:class:`~voicelab.errors.RemoteProtocolError`, so a session can drop and count them.
Failures while protecting our own packets raise
:class:`~voicelab.errors.LocalProtocolError`.

Why a wrapper: libsrtp (through pylibsrtp, an aiortc dependency) is the reference
implementation; this module only maps SDES parameters and errors onto the lab's names.
pylibsrtp itself imports :mod:`socket` (for ``htonl``); this module does not.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import pylibsrtp

from ..errors import LocalProtocolError, ParameterError, RemoteProtocolError

__all__ = [
    "SrtpContext",
    "SrtpError",
    "SrtpAuthError",
    "SrtpReplayError",
    "SRTP_SUITES",
    "srtp_overhead_bytes",
]


class SrtpError(RemoteProtocolError):
    """An SRTP/SRTCP packet from the peer was rejected (authentication, replay, format)."""


class SrtpAuthError(SrtpError):
    """The authentication tag did not verify (tampered packet or wrong key)."""


class SrtpReplayError(SrtpError):
    """The packet index was already seen or is too old for the replay window."""


@dataclass(frozen=True)
class _Suite:
    profile: int
    key_bytes: int
    salt_bytes: int
    rtp_tag_bytes: int
    rtcp_tag_bytes: int


#: Supported crypto suites (RFC 4568 6.2) and their sizes.
SRTP_SUITES: dict[str, _Suite] = {
    "AES_CM_128_HMAC_SHA1_80": _Suite(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14, 10, 10),
    "AES_CM_128_HMAC_SHA1_32": _Suite(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 16, 14, 4, 10),
}


def srtp_overhead_bytes(suite: str = "AES_CM_128_HMAC_SHA1_80", *, rtcp: bool = False) -> int:
    """Bytes SRTP adds to each RTP packet (the tag), or SRTCP to each RTCP packet (index + tag).

    Examples
    --------
    >>> srtp_overhead_bytes(), srtp_overhead_bytes("AES_CM_128_HMAC_SHA1_32"), srtp_overhead_bytes(rtcp=True)
    (10, 4, 14)
    """
    s = _suite(suite)
    return 4 + s.rtcp_tag_bytes if rtcp else s.rtp_tag_bytes


def _suite(suite: str) -> _Suite:
    try:
        return SRTP_SUITES[suite]
    except (KeyError, TypeError):
        raise ParameterError(
            f"SRTP suite {suite!r} is not supported: use one of {', '.join(SRTP_SUITES)}"
        ) from None


def _key(key: bytes | str, suite: _Suite, name: str) -> bytes:
    if isinstance(key, str):
        text = key[len("inline:") :] if key.startswith("inline:") else key
        text = text.split("|", 1)[0]
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ParameterError(f"{name} is not valid base64 key||salt (RFC 4568 inline key)") from None
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise ParameterError(f"{name} must be bytes or an SDES inline base64 string, got {type(key).__name__}")
    key = bytes(key)
    need = suite.key_bytes + suite.salt_bytes
    if len(key) != need:
        raise ParameterError(f"{name} must be {need} bytes (master key + salt), got {len(key)}")
    return key


def _map_error(exc: Exception, what: str) -> SrtpError:
    msg = str(exc)
    if "authentication" in msg:
        return SrtpAuthError(f"{what}: authentication tag did not verify (tampered or wrong key)")
    if "replay" in msg or "too old" in msg:
        return SrtpReplayError(f"{what}: replayed or too old packet ({msg})")
    return SrtpError(f"{what}: rejected by libsrtp ({msg})")


class SrtpContext:
    """SRTP/SRTCP protection for one call leg: our key outbound, the peer's key inbound.

    Parameters
    ----------
    our_key, their_key : bytes or str
        Master key + salt (30 bytes for the AES_CM_128 suites), raw or as the SDES
        ``inline:`` base64 text.
    suite : str, optional
        ``"AES_CM_128_HMAC_SHA1_80"`` (default) or ``"AES_CM_128_HMAC_SHA1_32"``.
    replay_window : int, optional
        Replay window in packets (libsrtp's default is 128; 64..32768).

    Raises
    ------
    ParameterError
        On a wrong key size or an unknown suite.

    Examples
    --------
    >>> a = SrtpContext.from_sdes(bytes(30), bytes(range(30)))
    >>> b = SrtpContext.from_sdes(bytes(range(30)), bytes(30))
    >>> rtp = bytes.fromhex("80 00 00 01 00 00 00 a0 de ad be ef") + bytes(160)
    >>> protected = a.protect(rtp)
    >>> len(protected) - len(rtp), b.unprotect(protected) == rtp
    (10, True)
    """

    def __init__(
        self,
        our_key: bytes | str,
        their_key: bytes | str,
        *,
        suite: str = "AES_CM_128_HMAC_SHA1_80",
        replay_window: int = 128,
    ) -> None:
        s = _suite(suite)
        self.suite = suite
        if isinstance(replay_window, bool) or not isinstance(replay_window, int) or not 64 <= replay_window <= 32768:
            raise ParameterError(f"replay_window must be an integer 64..32768, got {replay_window!r}")
        self._tx = pylibsrtp.Session(self._policy(_key(our_key, s, "our_key"), s, outbound=True, window=replay_window))
        self._rx = pylibsrtp.Session(self._policy(_key(their_key, s, "their_key"), s, outbound=False, window=replay_window))

    @staticmethod
    def _policy(key: bytes, s: _Suite, *, outbound: bool, window: int) -> pylibsrtp.Policy:
        policy = pylibsrtp.Policy(
            key=key,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=s.profile,
        )
        policy.window_size = window
        return policy

    @classmethod
    def from_sdes(
        cls,
        our_key: bytes | str,
        their_key: bytes | str,
        suite: str = "AES_CM_128_HMAC_SHA1_80",
        *,
        replay_window: int = 128,
    ) -> "SrtpContext":
        """Context from the two SDES keys of an offer/answer (see the class docstring)."""
        return cls(our_key, their_key, suite=suite, replay_window=replay_window)

    @property
    def rtp_overhead(self) -> int:
        """Bytes added to each RTP packet by :meth:`protect`."""
        return SRTP_SUITES[self.suite].rtp_tag_bytes

    def protect(self, rtp: bytes) -> bytes:
        """Encrypt and authenticate one RTP packet.

        Raises
        ------
        LocalProtocolError
            If libsrtp refuses (not an RTP packet, same index sent twice, too long).
        """
        return self._local(self._tx.protect, rtp, "SRTP protect")

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        """Encrypt and authenticate one (compound) RTCP packet.

        Raises
        ------
        LocalProtocolError
            If libsrtp refuses.
        """
        return self._local(self._tx.protect_rtcp, rtcp, "SRTCP protect")

    def unprotect(self, srtp: bytes) -> bytes:
        """Verify and decrypt one SRTP packet.

        Raises
        ------
        SrtpAuthError
            Bad authentication tag.
        SrtpReplayError
            Replayed or too old packet.
        SrtpError
            Any other rejection (too short, ...).
        """
        return self._remote(self._rx.unprotect, srtp, "SRTP unprotect", 12)

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        """Verify and decrypt one SRTCP packet; errors as :meth:`unprotect`."""
        return self._remote(self._rx.unprotect_rtcp, srtcp, "SRTCP unprotect", 8)

    @staticmethod
    def _local(func, data: bytes, what: str) -> bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ParameterError(f"{what}: packet must be bytes, got {type(data).__name__}")
        try:
            return func(bytes(data))
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise LocalProtocolError(f"{what} failed: {exc}") from None

    @staticmethod
    def _remote(func, data: bytes, what: str, min_len: int) -> bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SrtpError(f"{what}: packet must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < min_len or data[0] >> 6 != 2:
            raise SrtpError(f"{what}: {len(data)} bytes is not an SRTP/SRTCP packet (version 2 header)")
        try:
            return func(data)
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise _map_error(exc, what) from None

    def __repr__(self) -> str:
        return f"SrtpContext(suite={self.suite!r})"
