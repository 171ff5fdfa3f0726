"""Where a study's trials run: here, on a local Dask cluster, or on a Dask scheduler.

* ``"serial"`` -- one trial after the other in this process.
* ``"local"`` -- a :class:`dask.distributed.LocalCluster` of single-threaded worker
  processes (one per core unless ``workers`` says otherwise), started and stopped here.
* ``"dask://HOST:PORT"`` -- an existing scheduler (``dask scheduler`` on some machine,
  ``dask worker tcp://HOST:PORT --nthreads 1`` on each worker machine), or ``client=``
  an existing :class:`dask.distributed.Client`.

One trial is one task, keyed ``voicelab-trial-<trial_id>``. Results come back in the
order they finish (:func:`dask.distributed.as_completed`) and the caller's ``record``
writes them to the store at once, in this (the driver) process, so a worker holds
nothing that matters: when a worker dies, the scheduler runs its unfinished tasks
elsewhere (up to ``distributed.scheduler.allowed-failures`` times per task; this
module sets 5 for its own local clusters, a task that kills that many workers is
reported as failed), and finished results are already on disk.

Workers are single-threaded: codecs and the quality metrics are CPU-bound C code that
would contend for the same core; one trial per process keeps timings honest.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Mapping, Sequence

from ..errors import ParameterError

__all__ = ["execute", "dask_client", "ALLOWED_FAILURES"]

#: Times a task may be on a worker that died before the scheduler gives up on it
#: (local clusters started here; an external scheduler uses its own setting).
ALLOWED_FAILURES = 5


def _bar(progress: bool, total: int, initial: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="trial", file=sys.stderr)


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def dask_client(executor: str, workers: int | None = None) -> tuple[Any, list[Any]]:
    """A Dask client for ``executor`` (``"local"`` or ``"dask://HOST:PORT"``).

    Returns
    -------
    client : dask.distributed.Client
    owned : list
        Objects to close when done (the client, and the cluster for ``"local"``).
    """
    try:
        import dask
        from dask.distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - dask[distributed] is a dependency
        raise ParameterError("executor needs dask.distributed: pip install 'dask[distributed]'") from None
    if executor == "local":
        n = workers or os.cpu_count() or 1
        try:
            import bokeh  # noqa: F401

            dash: str | None = ":0"
        except ImportError:
            dash = None
        with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   dashboard_address=dash or ":0", silence_logs=logging.ERROR)
            client = Client(cluster)
        return client, [client, cluster]
    if isinstance(executor, str) and executor.startswith(("dask://", "tcp://")):
        addr = "tcp://" + executor.split("://", 1)[1]
        try:
            client = Client(addr, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise ParameterError(f"cannot reach the Dask scheduler at {addr}: {exc}") from None
        return client, [client]
    raise ParameterError(f"unknown executor {executor!r}: use serial, local or dask://HOST:PORT")


def execute(
    payloads: Sequence[Mapping[str, Any]],
    record: Callable[[dict[str, Any]], None],
    *,
    executor: str = "serial",
    client: Any = None,
    workers: int | None = None,
    progress: bool = True,
    total: int | None = None,
    initial: int = 0,
    desc: str = "study",
    task: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Run every payload with ``task`` (default :func:`.study.run_trial`) and ``record`` each
    output as it finishes.

    A task that raises something other than a :class:`~voicelab.errors.VoicelabError`
    (a bug, or a worker that died ``allowed-failures`` times) is recorded as a transient
    failure (``transient=True``: not stored, retried by the next run).
    """
    from .study import run_trial

    task = task or run_trial
    total = len(payloads) + initial if total is None else total
    if client is None and executor not in ("serial", "local") and not str(executor).startswith(("dask://", "tcp://")):
        raise ParameterError(f"unknown executor {executor!r}: use serial, local or dask://HOST:PORT")
    if client is None and executor == "serial":
        bar = _bar(progress, total, initial, desc)
        try:
            for p in payloads:
                record(task(p))
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return
    if not payloads:
        return
    owned: list[Any] = []
    if client is None:
        client, owned = dask_client(executor, workers)
    try:
        _run_dask(client, payloads, record, task, progress, total, initial, desc)
    finally:
        quiet = logging.getLogger("distributed")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # no "worker still alive, killing" chatter at teardown
        try:
            for o in owned:
                try:
                    o.close()
                except Exception:  # noqa: BLE001 - best effort teardown
                    pass
        finally:
            quiet.setLevel(level)


def _run_dask(client: Any, payloads: Sequence[Mapping[str, Any]], record: Callable, task: Callable,
              progress: bool, total: int, initial: int, desc: str) -> None:
    from dask.distributed import as_completed

    if progress:
        try:
            threads = client.nthreads()
        except Exception:  # noqa: BLE001
            threads = {}
        if any(n > 1 for n in threads.values()):
            print("voicelab: some Dask workers run several threads; trials are CPU-bound, "
                  "start workers with --nthreads 1", file=sys.stderr)
        if _in_notebook() and getattr(client, "dashboard_link", None):
            print(f"Dask dashboard: {client.dashboard_link}")
    futures = {}
    for p in payloads:
        f = client.submit(task, dict(p), key=f"voicelab-trial-{p['trial_id']}", pure=False)
        futures[f] = p
    bar = _bar(progress, total, initial, desc)
    try:
        for fut in as_completed(list(futures)):
            p = futures.pop(fut)
            try:
                out = fut.result()
            except Exception as exc:  # noqa: BLE001 - a bug or a task that killed its workers
                out = {"trial_id": p["trial_id"], "rows": [], "error": f"{type(exc).__name__}: {exc}",
                       "transient": True, "wall_s": None}
            finally:
                fut.release()
            record(out)
            if bar is not None:
                bar.update(1)
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    finally:
        if bar is not None:
            bar.close()
