"""Codecs: one :class:`Codec` interface, a registry, many implementations.

>>> from voicelab import codecs
>>> codecs.names()
['pcmu', 'pcma', 'g722', 'g723', 'g726', 'g729', 'amr-nb', 'opus', 'l16']
>>> c = codecs.get("g711u")          # a new instance on every call
>>> c.rtpmap, c.frame_samples
('PCMU/8000', 160)

=========  =====================================  ======================================
name       implementation                         concealment / FEC
=========  =====================================  ======================================
pcmu/pcma  numpy tables (:mod:`.g711`)             generic waveform substitution
l16        numpy (:mod:`.l16`)                     generic waveform substitution
g722       FFmpeg via PyAV (:mod:`.pyav`)          generic waveform substitution
g723       FFmpeg via PyAV                         generic waveform substitution
g726       FFmpeg via PyAV                         generic waveform substitution
amr-nb     opencore-amr via PyAV                   AMR's own (NO_DATA frames)
g729       bcg729 via ctypes (:mod:`.g729`)        G.729's own erasure concealment
opus       libopus via ctypes (:mod:`.opus`)       libopus PLC, in-band FEC (LBRR)
=========  =====================================  ======================================

See Also
--------
voicelab.codecs.plc.WaveformSubstitutionPLC : the generic concealment.
voicelab.codecs.registry.measure_lookahead_ms : how ``lookahead_ms`` was measured.
"""

from __future__ import annotations

from .base import Codec
from .registry import available, canonical_name, get, is_available, measure_lookahead_ms, modes, names

__all__ = [
    "Codec",
    "get",
    "names",
    "available",
    "is_available",
    "canonical_name",
    "modes",
    "measure_lookahead_ms",
]
