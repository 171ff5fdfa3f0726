"""Shared test fixtures: where natural speech lives, and how missing peers are handled.

Natural speech: ``VOICELAB_DATA``, else ``<repo>/../shared/datasets/speech``. Tests that
need it skip with a reason when it is absent; in CI (``CI=true``) they fail instead,
because CI must run them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def speech_dir() -> Path | None:
    env = os.environ.get("VOICELAB_DATA")
    cands = [Path(env)] if env else []
    cands.append(REPO.parent / "shared" / "datasets" / "speech")
    for c in cands:
        if c.is_dir() and any(c.glob("*.wav")):
            return c
    return None


def need(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) when a required peer or data set is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI but missing: {reason}")
    pytest.skip(reason)


@pytest.fixture
def natural_speech_dir() -> Path:
    d = speech_dir()
    need(d is not None, "natural speech not found: set VOICELAB_DATA or provide ../shared/datasets/speech")
    return d  # type: ignore[return-value]


@pytest.fixture
def natural_env(monkeypatch, natural_speech_dir):
    """Point the corpus at the natural speech folder for this test."""
    monkeypatch.setenv("VOICELAB_DATA", str(natural_speech_dir))
    try:
        from voicelab.audio import corpus as _c

        for fn in ("cache_clear",):
            for obj in vars(_c).values():
                if callable(getattr(obj, fn, None)):
                    getattr(obj, fn)()
    except ImportError:
        pass
    return natural_speech_dir


def need_tool(exe: str, package: str) -> str:
    path = shutil.which(exe)
    need(path is not None, f"{exe} not installed (Debian package {package})")
    return path  # type: ignore[return-value]


def open_fds() -> int | None:
    """Open file descriptors of this process (None where /proc is missing)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def run_clean(fn, *, timeout: float):
    """Run ``await fn()`` in a fresh event loop; fail on tasks or file descriptors left
    behind; return what ``fn`` returned."""
    import asyncio
    import gc

    gc.collect()  # earlier tests' unreachable sockets/pipes close now, not during this test
    before = open_fds()

    async def main():
        result = await asyncio.wait_for(fn(), timeout)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not left, f"tasks left running: {left}"
        return result

    result = asyncio.run(main())
    gc.collect()
    after = open_fds()
    if before is not None:  # fewer is fine: something older (a finished subprocess's pipe) closed meanwhile
        assert after <= before, f"{after - before} file descriptors leaked"
    return result
