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
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import ParameterError, VoicelabError
from .scenario import Scenario

__all__ = ["sweep", "trials", "load_sweep_file"]


def _trial_seed(seed: int, repeat: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(repeat)]).generate_state(1)[0] & 0x7FFFFFFF)


def trials(base: Scenario, grid: Mapping[str, Sequence[Any]], *, repeats: int = 1, seed: int = 0) -> list[tuple[dict[str, Any], int, Scenario]]:
    """Expand a grid into ``(point, repeat, scenario)`` triples, in a stable order."""
    if repeats < 1:
        raise ParameterError(f"repeats must be >= 1, got {repeats}")
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


def _run_one(scn_dict: dict[str, Any]) -> dict[str, Any]:
    from .engine import simulate_call

    scn = Scenario.from_dict(scn_dict)
    try:
        res = simulate_call(scn)
        row = res.row()
        row["warnings"] = "; ".join(res.warnings)
        row["error"] = None
    except VoicelabError as exc:
        row = {"error": f"{type(exc).__name__}: {exc}"}
    return row


def _init_worker() -> None:  # one trial per single-threaded worker
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def sweep(
    base: Scenario,
    grid: Mapping[str, Sequence[Any]],
    *,
    repeats: int = 1,
    seed: int = 0,
    workers: int | None = 1,
    journal: str | os.PathLike | None = None,
    progress: bool = True,
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

    Returns
    -------
    pandas.DataFrame
        One row per trial: ``repeat``, ``trial_key``, the scenario (flattened, dotted
        column names), every metric, ``warnings`` and ``error``.
    """
    plan = trials(base, grid, repeats=repeats, seed=seed)
    done: dict[str, dict[str, Any]] = {}
    jpath = Path(journal) if journal is not None else None
    if jpath is not None and jpath.exists():
        for line in jpath.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[rec["trial_key"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by an interruption: that trial reruns
    todo = [(p, r, s) for p, r, s in plan if _key(s, r) not in done]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="sweep", unit="call")

    def record(point: dict[str, Any], r: int, scn: Scenario, row: dict[str, Any]) -> None:
        rec = {"trial_key": _key(scn, r), "repeat": r, **{f"grid.{k}": v for k, v in point.items()}, **row}
        rec = json.loads(json.dumps(rec, default=_default))
        done[rec["trial_key"]] = rec
        if jpath is not None:
            jpath.parent.mkdir(parents=True, exist_ok=True)
            with jpath.open("a") as fh:
                fh.write(json.dumps(rec, sort_keys=True) + "\n")
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
    rows = [done[_key(s, r)] for _, r, s in plan]
    return pd.DataFrame(rows)


def _key(scn: Scenario, repeat: int) -> str:
    return f"{scn.key()}-{repeat}"


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
        raise ParameterError(f"sweep file {p} is not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise ParameterError(f"sweep file {p} must hold a mapping with base/grid/repeats")
    allowed = {"base", "grid", "repeats", "seed", "workers", "journal", "output"}
    extra = set(spec) - allowed
    if extra:
        raise ParameterError(f"sweep file {p}: unknown key(s) {sorted(extra)}; allowed: {sorted(allowed)}")
    spec.setdefault("base", {})
    spec.setdefault("grid", {})
    return spec
