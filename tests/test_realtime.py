"""realtime_gc freezes what exists when a call starts and gives it back afterwards."""

from __future__ import annotations

import asyncio
import gc

from voicelab.realtime import realtime, realtime_gc


def test_realtime_gc_freezes_and_thaws_once_when_nested():
    keep = [object() for _ in range(1000)]  # noqa: F841 - live objects to be frozen
    assert gc.get_freeze_count() == 0
    with realtime_gc():
        frozen = gc.get_freeze_count()
        assert frozen >= 1000
        with realtime_gc():  # a call inside an experiment: no second freeze, no early thaw
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0


def test_realtime_decorator_thaws_on_error():
    @realtime
    async def call():
        assert gc.get_freeze_count() > 0
        raise RuntimeError("the call failed")

    try:
        asyncio.run(call())
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0
