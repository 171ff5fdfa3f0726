"""Published figures the lab's measurements are checked against.

Each entry names its source (see ../shared/design/REFERENCE-FACTS.md in the project
workspace, and docs/metrics.md). Tests and notebooks compare against these numbers;
when a measurement disagrees, the docs say why.
"""

from __future__ import annotations

__all__ = ["PESQ_CEILING", "PESQ_REF_PAIR", "PESQ_CLEAN_FFMPEG", "PESQ_FLOORS", "CODEC_DELAY_MS"]

#: MOS-LQO for identical reference and degraded signals (P.862.1 / P.862.2 mappings).
PESQ_CEILING = {"nb": 4.549, "wb": 4.644}

#: The `pesq` package's reference pair (speech.wav vs speech_bab_0dB.wav, 16 kHz).
PESQ_REF_PAIR = {"wb": 1.0832337, "nb": 1.6072081}

#: Clean-channel PESQ of plain FFmpeg (PyAV) encode+decode on natural speech (means over
#: 9 files), measured on this project's machines: (codec, bitrate) -> {"nb"|"wb": value}.
PESQ_CLEAN_FFMPEG = {
    ("pcmu", 64000): {"nb": 4.41, "wb": 3.50},
    ("g722", 64000): {"nb": 4.47, "wb": 4.28},
    ("g723", 6300): {"nb": 3.56},
    ("g726", 16000): {"nb": 2.41},
    ("g726", 24000): {"nb": 3.37},
    ("g726", 32000): {"nb": 3.97, "wb": 2.96},
    ("g726", 40000): {"nb": 4.27},
    ("amr-nb", 12200): {"nb": 4.11, "wb": 2.72},
    ("amr-nb", 4750): {"nb": 3.25},
    ("opus", 8000): {"wb": 2.64},
    ("opus", 12000): {"wb": 3.83},
    ("opus", 16000): {"nb": 4.20, "wb": 4.11},
    ("opus", 24000): {"nb": 4.39, "wb": 4.39},
    ("opus", 32000): {"wb": 4.39},
    ("opus", 64000): {"wb": 4.49},
}

#: Minimum lossless sim-mode scores on natural speech (issue #2 acceptance).
PESQ_FLOORS = {
    ("pcmu", 64000): ("nb", 4.35),
    ("g722", 64000): ("wb", 4.2),
    ("opus", 24000): ("wb", 4.3),
    ("amr-nb", 12200): ("nb", 4.0),
    ("g726", 32000): ("nb", 3.9),
}

#: Algorithmic delay (frame + look-ahead, ms) as usually quoted.
CODEC_DELAY_MS = {
    "pcmu": 0.125,
    "pcma": 0.125,
    "g722": 1.5,
    "g723": 37.5,
    "g726": 0.125,
    "g729": 15.0,
    "amr-nb": 25.0,
    "opus": 26.5,
}
