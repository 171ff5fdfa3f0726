"""``sim`` mode: the offline media path, for big sweeps of codec x loss x jitter.

>>> from voicelab.sim import Scenario, simulate_call, sweep
"""

from .engine import METRIC_NAMES, Result, load_speech, simulate_call, talker_speech
from .scenario import Scenario, parse_jitter_buffer
from .sweep import load_sweep_file, sweep, trials

__all__ = [
    "Scenario",
    "Result",
    "simulate_call",
    "sweep",
    "trials",
    "load_sweep_file",
    "load_speech",
    "talker_speech",
    "parse_jitter_buffer",
    "METRIC_NAMES",
]
