"""Parameter sweeps over simulated calls, on local processes, resumable.

A sweep is a base :class:`~voicelab.sim.Scenario`, a grid (field -> list of values;
dotted names reach into the channel and the codec parameters) and a number of repeats.
Every finished trial is appended at once to a JSON-lines journal, so an interrupted
sweep (Ctrl-C, a killed kernel, a crash) resumes where it stopped without redoing or
losing finished trials.

Seeds: repeat ``r`` of every grid point uses the same seed (derived from the sweep seed
and ``r``), i.e. common random numbers: two codecs at the same loss rate see the same
network randomness, which makes differences between grid points less noisy.
"""

from __future__ import annotations

import itertools
import json
import os
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import CodecUnavailableError, DataUnavailableError, ParameterError, VoicelabError
from .scenario import Scenario

__all__ = ["sweep", "trials", "load_sweep_file", "JournalRepairedWarning"]


def _trial_seed(seed: int, repeat: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(repeat)]).generate_state(1)[0] & 0x7FFFFFFF)


def trials(base: Scenario, grid: Mapping[str, Sequence[Any]], *, repeats: int = 1, seed: int = 0) -> list[tuple[dict[str, Any], int, Scenario]]:
    """Expand a grid into ``(point, repeat, scenario)`` triples, in a stable order."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ParameterError(f"repeats must be an integer >= 1, got {repeats!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(grid, Mapping):
        raise ParameterError(
            f"grid must map field names to lists of values (e.g. {{'codec': ['pcmu', 'opus']}}), got {type(grid).__name__}"
        )
    names = list(grid)
    values = []
    for n in names:
        v = grid[n]
        if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
            raise ParameterError(f"grid[{n!r}] must be a list of values, got {v!r}")
        v = list(v)
        if not v:
            raise ParameterError(f"grid[{n!r}] is empty")
        values.append(v)
    out = []
    for combo in itertools.product(*values) if names else [()]:
        point = dict(zip(names, combo))
        for r in range(repeats):
            scn = base.with_(**point, seed=_trial_seed(seed, r))
            out.append((point, r, scn))
    return out


#: Errors that may go away on a rerun (a library installed, data fetched): not journaled.
_TRANSIENT = (CodecUnavailableError, DataUnavailableError)


def _run_one(scn_dict: dict[str, Any]) -> dict[str, Any]:
    from .engine import Result, simulate_call

    scn = Scenario.from_dict(scn_dict)
    try:
        res = simulate_call(scn)
        row = res.row()
        row["warnings"] = "; ".join(res.warnings)
        row["error"] = None
    except VoicelabError as exc:
        # keep the scenario columns so a failed trial is identifiable in the table
        row = Result.scenario_row(scn)
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["transient"] = isinstance(exc, _TRANSIENT)
    return row


def _init_worker() -> None:
    """One trial per single-threaded worker, so trials do not compete for cores."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn/librosa
        pass


def sweep(
    base: Scenario,
    grid: Mapping[str, Sequence[Any]],
    *,
    repeats: int = 1,
    seed: int = 0,
    workers: int | None = 1,
    journal: str | os.PathLike | None = None,
    progress: bool = True,
    desc: str = "sweep",
) -> pd.DataFrame:
    """Run a grid of simulated calls and return a tidy table.

    Parameters
    ----------
    base : Scenario
        The scenario every trial starts from.
    grid : Mapping
        Field name -> values, e.g. ``{"codec": ["pcmu", "opus"], "channel.loss_rate":
        [0, 0.05]}``.
    repeats : int
        Trials per grid point (each with its own seed).
    seed : int
        Sweep seed; the whole table is a pure function of (base, grid, repeats, seed).
    workers : int or None
        Local worker processes (None: one per core). 1 runs in this process.
    journal : path, optional
        JSON-lines file that records each finished trial; reruns skip what it holds.
    progress : bool
        Show a progress bar (tqdm).
    desc : str
        Label of the progress bar.

    Returns
    -------
    pandas.DataFrame
        One row per trial: ``repeat``, ``trial_key``, the scenario (flattened, dotted
        column names), every metric, ``warnings`` and ``error``.
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ParameterError(f"workers must be an integer >= 1 (or None for one per core), got {workers!r}")
    plan = trials(base, grid, repeats=repeats, seed=seed)
    done: dict[str, dict[str, Any]] = {}
    jpath = Path(journal) if journal is not None else None
    jfh = _prepare_journal(jpath, done) if jpath is not None else None
    todo = [(p, r, s) for p, r, s in plan if _key(s, r) not in done]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc=desc, unit="call")

    def record(point: dict[str, Any], r: int, scn: Scenario, row: dict[str, Any]) -> None:
        rec = {"trial_key": _key(scn, r), "repeat": r, **{f"grid.{k}": v for k, v in point.items()}, **row}
        rec = json.loads(json.dumps(rec, default=_default))
        transient = bool(rec.pop("transient", False))
        done[rec["trial_key"]] = rec
        if jfh is not None and not transient:
            jfh.write((json.dumps(rec) + "\n").encode())  # one whole line per finished trial
            jfh.flush()
        if bar is not None:
            bar.update(1)

    try:
        if workers == 1 or len(todo) <= 1:
            for point, r, scn in todo:
                record(point, r, scn, _run_one(scn.to_dict()))
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as ex:
                futs = {ex.submit(_run_one, scn.to_dict()): (point, r, scn) for point, r, scn in todo}
                for fut in as_completed(futs):
                    point, r, scn = futs[fut]
                    record(point, r, scn, fut.result())
    finally:
        if bar is not None:
            bar.close()
        if jfh is not None:
            jfh.close()  # releases the lock
    rows = [done[_key(s, r)] for _, r, s in plan]
    return pd.DataFrame(rows)


def _prepare_journal(path: Path, done: dict[str, dict[str, Any]]) -> Any:
    """Lock the journal, read its finished trials into ``done``, repair a damaged tail.

    Returns the journal open for appending (binary), holding an exclusive
    :func:`fcntl.flock` lock until it is closed: a second sweep on the same journal
    refuses with :class:`~voicelab.errors.ParameterError` instead of running every trial
    again beside the first. A tail that is not a whole JSON line (an interrupted write,
    bytes that are not UTF-8) is cut off with a :class:`JournalRepairedWarning`; those
    trials rerun. Damaged lines before good ones are skipped (kept in the file).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = path.open("a+b")
    except OSError as exc:
        raise ParameterError(f"cannot use sweep journal {path}: {exc.strerror or exc}") from None
    try:
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - not POSIX: no lock
            pass
        except OSError:
            raise ParameterError(
                f"sweep journal {path} is in use by another sweep (it holds the journal's lock); "
                "wait for it to finish or give another --journal"
            ) from None
        fh.seek(0)
        data = fh.read()
        good_end = 0  # end of the last line that parsed
        for start, line in _lines(data):
            try:
                rec = json.loads(line.decode("utf-8"))
                done[rec["trial_key"]] = rec
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
                continue  # a damaged line: that trial reruns
            good_end = start + len(line) + 1
        if good_end < len(data) and data[good_end:].strip(b"\r\n\t "):
            dropped = len(data) - good_end
            fh.truncate(good_end)
            warnings.warn(
                f"sweep journal {path}: dropped a damaged tail of {dropped} bytes (an interrupted write or bytes "
                "that are not UTF-8); those trials run again",
                JournalRepairedWarning,
                stacklevel=3,
            )
        elif data and not data.endswith(b"\n"):
            fh.write(b"\n")  # end the last line so the next record stands alone
        fh.seek(0, os.SEEK_END)
        return fh
    except OSError as exc:
        fh.close()
        raise ParameterError(f"cannot use sweep journal {path}: {exc.strerror or exc}") from None
    except BaseException:
        fh.close()
        raise


def _lines(data: bytes) -> Iterable[tuple[int, bytes]]:
    """(offset, line without its newline) for every line of ``data``."""
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl
        yield pos, data[pos:end]
        pos = end + 1


class JournalRepairedWarning(UserWarning):
    """A sweep journal's damaged tail was cut off on resume (those trials rerun)."""


def _key(scn: Scenario, repeat: int) -> str:
    # the version is part of the key: a journal from another release is not reused
    return f"{scn.key()}-{repeat}-v{__version__}"


def _default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def load_sweep_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a sweep description (YAML or JSON).

    Keys: ``base`` (scenario fields), ``grid`` (field -> list), ``repeats``, ``seed``,
    ``workers``, ``journal`` (path of the resumable journal), ``output`` (a
    ``.parquet`` or ``.csv`` table written at the end).
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ParameterError(f"cannot read sweep file {p}: {exc.strerror}") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ParameterError(f"sweep file {p} is not valid YAML{where}: {problem}") from None
    if not isinstance(spec, dict):
        raise ParameterError(f"sweep file {p} must hold a mapping with base/grid/repeats")
    allowed = {"base", "grid", "repeats", "seed", "workers", "journal", "output"}
    extra = set(spec) - allowed
    if extra:
        raise ParameterError(f"sweep file {p}: unknown key(s) {sorted(extra)}; allowed: {sorted(allowed)}")
    if spec.get("base") is None:
        spec["base"] = {}
    if spec.get("grid") is None:
        spec["grid"] = {}
    if not isinstance(spec["base"], dict):
        raise ParameterError(f"sweep file {p}: 'base' must be a mapping of scenario fields")
    if not isinstance(spec["grid"], dict) or not all(isinstance(v, list) for v in spec["grid"].values()):
        raise ParameterError(f"sweep file {p}: 'grid' must map field names to lists, e.g. codec: [pcmu, opus]")
    for key, lo in (("repeats", 1), ("seed", 0), ("workers", 1)):
        if key in spec and spec[key] is not None:
            v = spec[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ParameterError(f"sweep file {p}: '{key}' must be an integer >= {lo}, got {v!r}")
    return spec
