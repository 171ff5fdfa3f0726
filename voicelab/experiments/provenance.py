"""Provenance: what produced a result (software versions, checkout, host), as flat columns.

:func:`provenance` returns one flat dict of strings and numbers, every key starting with
``prov_`` so a results store can add them as columns beside the metrics:

=========================  ===============================================================
key                        value
=========================  ===============================================================
``prov_voicelab``          ``voicelab.__version__``
``prov_git_commit``        commit of the checkout voicelab was imported from (None when
                           not a git checkout, or git is missing)
``prov_git_dirty``         True when that checkout has uncommitted changes (None: no checkout)
``prov_python``            Python version (``3.12.3``)
``prov_numpy``             numpy version
``prov_pesq``              pesq package version
``prov_libopus``           libopus version string (``libopus 1.4``) or None
``prov_av``                PyAV version
``prov_ffmpeg``            FFmpeg's libavcodec version under PyAV (``61.19.100``) or None
``prov_aiortc``            aiortc version
``prov_aioice``            aioice version
``prov_dask``              dask version (None when not installed)
``prov_hostname``          host name
``prov_cores``             logical CPUs (``os.cpu_count()``)
``prov_cpu_model``         CPU model from ``/proc/cpuinfo`` (None elsewhere)
``prov_load_1m``           1-minute load average at the first call in this process
=========================  ===============================================================

The first call costs a git subprocess and a few imports (about 0.1-0.3 s); later calls
return a copy of the cached dict (versions and the checkout do not change while a
process runs; the load average is the one at the start, as a study records it).
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["provenance", "PROVENANCE_KEYS"]

#: Every key of :func:`provenance`, in order.
PROVENANCE_KEYS = (
    "prov_voicelab", "prov_git_commit", "prov_git_dirty", "prov_python", "prov_numpy", "prov_pesq",
    "prov_libopus", "prov_av", "prov_ffmpeg", "prov_aiortc", "prov_aioice", "prov_dask", "prov_hostname",
    "prov_cores", "prov_cpu_model", "prov_load_1m",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(root: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout at ``root``; (None, None) when it is not one."""
    if not (root / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return (commit or None), bool(status.strip())


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def _libopus() -> str | None:
    try:
        from ..codecs.opus import opus_version

        return opus_version()
    except Exception:  # noqa: BLE001 - a missing libopus is a fact to record, not an error
        return None


def _ffmpeg() -> str | None:
    try:
        import av

        v = av.library_versions.get("libavcodec")
        return ".".join(str(p) for p in v) if v else None
    except Exception:  # noqa: BLE001 - as above
        return None


@functools.lru_cache(maxsize=1)
def _cached() -> dict[str, Any]:
    import numpy

    from .. import __version__

    root = Path(__file__).resolve().parents[2]
    commit, dirty = _git(root)
    try:
        load = round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        load = None
    return {
        "prov_voicelab": __version__,
        "prov_git_commit": commit,
        "prov_git_dirty": dirty,
        "prov_python": platform.python_version(),
        "prov_numpy": numpy.__version__,
        "prov_pesq": _version("pesq"),
        "prov_libopus": _libopus(),
        "prov_av": _version("av"),
        "prov_ffmpeg": _ffmpeg(),
        "prov_aiortc": _version("aiortc"),
        "prov_aioice": _version("aioice"),
        "prov_dask": _version("dask"),
        "prov_hostname": socket.gethostname(),
        "prov_cores": os.cpu_count(),
        "prov_cpu_model": _cpu_model(),
        "prov_load_1m": load,
    }


def provenance() -> dict[str, Any]:
    """What produced a result: flat ``prov_*`` keys (see the module docstring).

    Returns
    -------
    dict
        :data:`PROVENANCE_KEYS` -> str, bool, int, float or None. A fresh copy of the
        values cached at the first call.
    """
    return dict(_cached())
