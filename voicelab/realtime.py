"""Keep Python's garbage collector from stalling a live call.

A full (generation 2) collection walks every object in the process. In a long-lived
process (a notebook, a test session, an agent that has served many calls) that is
hundreds of thousands of objects and tens to hundreds of milliseconds, during which the
event loop sends and plays nothing: frames go out late, jitter buffers run dry and PLC
fills in, and the call is scored worse than the network made it.

:func:`realtime_gc` moves every object that exists when a call starts into the
collector's permanent generation (:func:`gc.freeze`), so collections during the call
only look at what the call itself allocates, and gives them back afterwards. Nested uses
(a call inside an experiment that is itself a call) freeze once and thaw once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

__all__ = ["realtime_gc", "realtime", "run_sync"]

_depth = 0


@contextlib.contextmanager
def realtime_gc() -> Iterator[None]:
    """Freeze the objects alive now for the duration of the block (see the module docstring)."""
    global _depth
    if _depth == 0:
        gc.collect()  # collect garbage first, so only live objects are frozen
        gc.freeze()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            gc.unfreeze()


def realtime(fn):
    """Decorator: run the coroutine function ``fn`` inside :func:`realtime_gc`."""
    import functools

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        with realtime_gc():
            return await fn(*args, **kwargs)

    return wrapper


def run_sync(factory: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``factory()`` to completion on a fresh event loop and return its result.

    Parameters
    ----------
    factory : callable
        Returns the awaitable to run; it is called on the loop's own thread.

    Returns
    -------
    object
        What the awaitable returned (its exception is raised).

    Notes
    -----
    When the calling thread already runs a loop (a Jupyter kernel), the new loop runs in
    a worker thread and this call blocks until it is done: live calls are timed on their
    own loop's clock either way. Kept at the bottom layer so that every layer (the path
    engines of :mod:`voicelab.hybrid` as well as :mod:`voicelab.experiments`) can use it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicelab-run") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()
