"""Turning a jitter buffer's decision into audio: decode, FEC, PLC or silence.

One function serves the offline simulator and the live media streams, so a lost packet
is handled the same way in ``sim`` and ``loopback`` modes.
"""

from __future__ import annotations

import numpy as np

from .jitterbuffer import Playout

__all__ = ["render", "OUTCOMES"]

#: What a slot became: the frame's own packet, rebuilt from the next packet's FEC,
#: concealed by PLC, silence (PLC off), a DTX pause, or nothing to play yet.
OUTCOMES = ("played", "fec", "concealed", "silence", "dtx", "empty")


def render(playout: Playout, codec, *, plc: bool = True, fec: bool = False, dtx: bool = False) -> tuple[np.ndarray, str]:
    """Audio for one playout slot.

    Parameters
    ----------
    playout : Playout
        What the jitter buffer decided for this slot.
    codec : voicelab.codecs.Codec
        The receiver's decoder (its state advances).
    plc : bool
        Conceal a missing frame with the codec's PLC (else insert silence).
    fec : bool
        Try to rebuild a lost frame from the next packet's in-band FEC first.
    dtx : bool
        The missing frame was never sent (a DTX pause): concealed (comfort noise) or
        silence, reported as ``"dtx"``, and no FEC is attempted.

    Returns
    -------
    frame : numpy.ndarray of int16, shape (codec.frame_samples,)
    outcome : str
        One of :data:`OUTCOMES`.
    """
    if playout.kind in ("frame", "skip"):
        return codec.decode(playout.payload), "played"
    if playout.kind in ("lost", "expand"):
        if playout.kind == "lost" and fec and not dtx and codec.has_fec and playout.next_payload is not None:
            rec = codec.decode_fec(playout.next_payload)
            if rec is not None:
                return rec, "fec"
        if plc:
            return codec.conceal(), "dtx" if dtx else "concealed"
        return np.zeros(codec.frame_samples, dtype=np.int16), "dtx" if dtx else "silence"
    return np.zeros(codec.frame_samples, dtype=np.int16), "empty"
