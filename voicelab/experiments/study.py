"""Studies: a base scenario, a grid, repeats and talkers -> trials -> a tidy table.

A :class:`Study` expands into trials in a stable order (:meth:`Study.trials`): every grid
point times ``repeats``. Two dimensions vary inside a cell:

* the **network seed**: repeat ``r`` gets a seed derived from the study seed and ``r``;
* the **speech**: repeat ``r`` sends a different corpus item (``talkers="corpus"``:
  rotate over every item of :func:`voicelab.audio.corpus`; a list of talker names: rotate
  over the talkers, and within a talker over its utterances; a list entry may also be a
  corpus item name). So a cell's mean is over talkers and utterances, not one recording.

With ``paired=True`` (the default) repeat ``r`` uses the same seed and the same
utterance in every grid point: the arms being compared see the same network draw and
the same speech, and :func:`voicelab.experiments.stats.paired_difference` compares them
trial by trial. ``paired=False`` gives every (point, repeat) its own seed and shifts the
speech rotation by the point's index.

Each trial has a ``trial_id`` (a hash of its scenario key and repeat) that is the same in
every process, so a :class:`~voicelab.experiments.store.ResultStore` can resume a study:
trials already stored are skipped. Trials run one by one in this process
(``executor="serial"``), on a local Dask cluster (``"local"``) or on an existing Dask
scheduler (``"dask://HOST:PORT"`` or ``client=``), see :mod:`.executors`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import CodecUnavailableError, DataUnavailableError, ParameterError, VoicelabError
from .scenario import Scenario

__all__ = ["Study", "Trial", "run_trial", "KEY_METRICS", "TRANSIENT_ERRORS"]

#: Errors that may go away on a rerun (a library installed, data fetched, a peer tool
#: installed): such trials are reported but not stored, so a resumed study retries them.
TRANSIENT_ERRORS = (CodecUnavailableError, DataUnavailableError)

#: Metrics :meth:`Study.summary` reports by default (those with values).
KEY_METRICS = ("mouth_to_ear_ms", "pesq_wb", "pesq_nb", "stoi", "loss_rate", "jitter_ms", "r_factor", "setup_ms")

_STUDY_KEYS = ("name", "base", "grid", "repeats", "talkers", "paired", "seed", "store", "executor", "workers")


@dataclass(frozen=True)
class Trial:
    """One trial of a study.

    Attributes
    ----------
    trial_id : str
        Stable id (16 hex digits): the same in every process.
    point : dict
        The grid values of this trial (dotted names as in the grid).
    repeat : int
        Repeat index, 0-based.
    scenario : Scenario
        What to run.
    talker : str or None
        The talker whose utterance is sent (None when the study does not rotate speech).
    speech_item : str or None
        The corpus item's name.
    """

    trial_id: str
    point: dict
    repeat: int
    scenario: Scenario
    talker: str | None = None
    speech_item: str | None = None

    def __iter__(self) -> Iterator[Any]:  # (trial_id, point, repeat, scenario) unpacking
        return iter((self.trial_id, self.point, self.repeat, self.scenario))


def trial_id(scenario: Scenario, repeat: int) -> str:
    """The stable id of a trial: SHA-256 of its scenario key and repeat, 16 hex digits."""
    return hashlib.sha256(f"{scenario.key()}:{int(repeat)}".encode()).hexdigest()[:16]


def _derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def _talker_of(item: Any) -> str:
    t = getattr(item, "talker", None)
    if t:
        return str(t)
    name = str(item.name)
    return name.rsplit("_", 1)[0] if "_" in name else name


def _corpus_items() -> list[tuple[str, str, str]]:
    """(speech spec, item name, talker) of every corpus item; the spec names the item by its id
    (``"corpus:cmu_arctic_aew_a0001"``), so trial ids do not move when the corpus grows."""
    from ..audio import corpus_items

    return [(it.speech, str(it.id), _talker_of(it)) for it in corpus_items(sample_rate=16000)]


def _int(v: Any, name: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ParameterError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _is_arm(key: str) -> bool:
    """A grid key that names no scenario field: its values are mappings of fields (arms)."""
    return "." not in key and key not in Scenario.fields()


def _changes(point: Mapping[str, Any]) -> dict[str, Any]:
    """Scenario changes of a grid point: arm mappings expand into their fields."""
    out: dict[str, Any] = {}
    for k, v in point.items():
        if _is_arm(k):
            out.update({f: x for f, x in v.items() if f != "name"})
        else:
            out[k] = v
    return out


def _grid_label(v: Any) -> Any:
    """A grid value as a table cell (an arm's ``name``; other dicts/lists as compact JSON)."""
    if isinstance(v, Mapping) and isinstance(v.get("name"), str):
        return v["name"]
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"), default=str)
    return v


@dataclass(frozen=True)
class Study:
    """A set of trials: a base scenario, a grid, repeats and the speech dimension.

    Parameters
    ----------
    base : Scenario or dict
        What every trial starts from.
    grid : dict
        Dotted field name -> list of values, e.g. ``{"transport": ["sip", "webrtc"],
        "channel": ["lan", "wifi"]}`` (see :meth:`Scenario.with_`). A key that names no
        scenario field is a list of **arms**: each value a mapping of fields changed
        together, with an optional ``name`` for the tables, e.g. ``{"arm": [{"name":
        "sip-g711", "transport": "sip", "codec": "pcmu"}, {"name": "webrtc-opus",
        "transport": "webrtc", "codec": "opus"}]}``.
    repeats : int
        Trials per grid point.
    talkers : None, "corpus" or list of str
        The speech dimension. None: every trial sends ``base.speech``. ``"corpus"``:
        repeat ``r`` sends corpus item ``r mod N``. A list: talker names (rotated, each
        talker's utterances in turn) or corpus item names.
    paired : bool
        Same seed and utterance for repeat ``r`` in every grid point (see module docs).
    seed : int
        Study seed; the trials are a pure function of the study.
    name : str
        Label stored in the ``study`` column.
    """

    base: Scenario = field(default_factory=Scenario)
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    repeats: int = 1
    talkers: Any = None
    paired: bool = True
    seed: int = 0
    name: str = "study"

    def __post_init__(self) -> None:
        put = object.__setattr__
        if isinstance(self.base, Mapping):
            put(self, "base", Scenario.from_dict(self.base))
        elif not isinstance(self.base, Scenario):
            raise ParameterError(f"base must be a Scenario or a mapping of scenario fields, got {type(self.base).__name__}")
        if not isinstance(self.grid, Mapping):
            raise ParameterError("grid must map field names to lists of values, e.g. {transport: [sip, webrtc]}")
        grid = {}
        for k, v in self.grid.items():
            if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
                raise ParameterError(f"grid[{k!r}] must be a list of values, got {v!r}")
            if not len(v):
                raise ParameterError(f"grid[{k!r}] is empty")
            if k in ("seed",):
                raise ParameterError("grid cannot vary 'seed': repeats and the study seed set it")
            grid[str(k)] = list(v)
        put(self, "grid", grid)
        put(self, "repeats", _int(self.repeats, "repeats", 1))
        put(self, "seed", _int(self.seed, "seed", 0))
        if not isinstance(self.paired, bool):
            raise ParameterError(f"paired must be true or false, got {self.paired!r}")
        t = self.talkers
        if t is not None and t != "corpus":
            if isinstance(t, str) or not isinstance(t, Sequence) or not t or not all(isinstance(x, str) and x for x in t):
                raise ParameterError(f"talkers must be 'corpus' or a list of talker/item names, got {t!r}")
            put(self, "talkers", list(t))
        if t is not None and ("speech" in grid or "input" in grid):
            raise ParameterError("grid varies 'speech' and talkers rotate it too: use one of the two")
        if not isinstance(self.name, str) or not self.name:
            raise ParameterError(f"name must be a non-empty string, got {self.name!r}")
        # validate every grid value now (a typo fails before anything runs)
        for k, vals in grid.items():
            if _is_arm(k):
                if not all(isinstance(v, Mapping) and v for v in vals):
                    raise ParameterError(
                        f"grid key {k!r} is no scenario field; as an arm list its values must be mappings of "
                        f"fields, e.g. {k}: [{{name: sip-g711, transport: sip, codec: pcmu}}, ...]; "
                        f"fields: {', '.join(Scenario.fields())}")
                for v in vals:
                    if "seed" in v or (t is not None and ("speech" in v or "input" in v)):
                        raise ParameterError(f"grid arm {v!r} sets seed/speech, which the study sets")
            for v in vals:
                self.base.with_(**_changes({k: v}))

    # ------------------------------------------------------------------ plain data
    def to_dict(self) -> dict[str, Any]:
        """Plain data (what :meth:`to_yaml` writes)."""
        return {
            "name": self.name,
            "base": self.base.to_dict(),
            "grid": {k: list(v) for k, v in self.grid.items()},
            "repeats": self.repeats,
            "talkers": self.talkers,
            "paired": self.paired,
            "seed": self.seed,
        }

    def to_yaml(self) -> str:
        """The study as YAML (:meth:`from_yaml` reads it back)."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Study":
        """A study from plain data; run settings (``store``, ``executor``, ``workers``) are ignored
        here (see :meth:`run_settings`)."""
        if not isinstance(data, Mapping):
            raise ParameterError("a study is a mapping with base, grid, repeats, talkers, paired, seed")
        extra = sorted(set(map(str, data)) - set(_STUDY_KEYS))
        if extra:
            raise ParameterError(f"unknown study key(s) {extra}; allowed: {', '.join(_STUDY_KEYS)}")
        kw = {k: data[k] for k in ("name", "grid", "repeats", "talkers", "paired", "seed") if data.get(k) is not None}
        return cls(base=data.get("base") or {}, **kw)

    @staticmethod
    def _load(source: str | os.PathLike) -> dict[str, Any]:
        import yaml

        p = Path(source)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ParameterError(f"cannot read study file {p}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ParameterError(f"study file {p} is not valid YAML{where}") from None
        if not isinstance(data, Mapping):
            raise ParameterError(f"study file {p} must hold a mapping with base, grid, repeats")
        return dict(data)

    @classmethod
    def from_yaml(cls, source: str | os.PathLike) -> "Study":
        """A study from a YAML file (keys: name, base, grid, repeats, talkers, paired, seed;
        optionally store, executor, workers for ``voicelab study run``)."""
        data = cls._load(source)
        try:
            return cls.from_dict(data)
        except ParameterError as exc:
            raise ParameterError(f"study file {source}: {exc}") from None

    @classmethod
    def run_settings(cls, source: str | os.PathLike) -> dict[str, Any]:
        """``store``, ``executor`` and ``workers`` given in a study file (absent keys omitted)."""
        data = cls._load(source)
        return {k: data[k] for k in ("store", "executor", "workers") if data.get(k) is not None}

    # ------------------------------------------------------------------ trials
    def _speech_plan(self) -> list[tuple[str, str, str]] | None:
        """Per rotation slot: (speech spec, item name, talker); None when speech stays fixed."""
        if self.talkers is None:
            return None
        items = _corpus_items()
        if not items:
            raise DataUnavailableError("the speech corpus is empty: no talkers to rotate over")
        if self.talkers == "corpus":
            by_talker: dict[str, list] = {}
            for it in items:
                by_talker.setdefault(it[2], []).append(it)
            # interleave talkers so a few repeats already cover several voices
            out = []
            queues = [list(v) for v in by_talker.values()]
            while any(queues):
                for q in queues:
                    if q:
                        out.append(q.pop(0))
            return out
        by_name = {it[1]: it for it in items}
        groups = []
        for t in self.talkers:
            if t in by_name:
                groups.append([by_name[t]])
                continue
            g = [it for it in items if it[2] == t]
            if not g:
                known = sorted({it[2] for it in items})
                raise ParameterError(f"no talker or corpus item {t!r} in the corpus; talkers: {', '.join(known)}")
            groups.append(g)
        # slot s: talker s mod T, its utterance (s div T) mod len
        n = len(groups) * max(len(g) for g in groups)
        return [groups[s % len(groups)][(s // len(groups)) % len(groups[s % len(groups)])] for s in range(n)]

    def trials(self) -> list[Trial]:
        """Every trial, in a stable order: grid points (in grid order) x repeats.

        Returns
        -------
        list of Trial
            Each unpacks as ``(trial_id, point, repeat, scenario)``.
        """
        names = list(self.grid)
        combos = list(itertools.product(*(self.grid[n] for n in names))) if names else [()]
        plan = self._speech_plan()
        out: list[Trial] = []
        for pi, combo in enumerate(combos):
            point = dict(zip(names, combo))
            for r in range(self.repeats):
                seed = _derive_seed(self.seed, r) if self.paired else _derive_seed(self.seed, pi, r)
                changes: dict[str, Any] = {**_changes(point), "seed": seed}
                talker = item = None
                if plan is not None:
                    spec, item, talker = plan[(r if self.paired else r + pi) % len(plan)]
                    changes["speech"] = spec
                scn = self.base.with_(**changes)
                out.append(Trial(trial_id(scn, r), point, r, scn, talker, item))
        ids = [t.trial_id for t in out]
        if len(set(ids)) != len(ids):
            raise ParameterError("two grid points give the same scenario (a grid value has no effect?); "
                                 "every trial must differ")
        return out

    def __len__(self) -> int:
        n = self.repeats
        for v in self.grid.values():
            n *= len(v)
        return n

    # ------------------------------------------------------------------ running
    def run(
        self,
        store: str | os.PathLike | None = None,
        executor: str = "serial",
        client: Any = None,
        workers: int | None = None,
        progress: bool = True,
    ) -> pd.DataFrame:
        """Run the trials not yet in ``store`` and return the study's table.

        Parameters
        ----------
        store : path, optional
            A :class:`~voicelab.experiments.store.ResultStore` folder. Finished trials are
            appended as they finish; trials already there are skipped (resume). Its lock
            keeps a second study off it while this one runs.
        executor : {"serial", "local"} or "dask://HOST:PORT"
            Where trials run: here, one by one; a local Dask cluster (one single-threaded
            worker process per core, or ``workers``); an existing Dask scheduler.
        client : dask.distributed.Client, optional
            Use this client (overrides ``executor``).
        workers : int, optional
            Worker processes of ``"local"`` (default: one per core).
        progress : bool
            A progress bar (tqdm) and, with Dask, the dashboard link.

        Returns
        -------
        pandas.DataFrame
            One row per trial per direction (:data:`RESULT_COLUMNS` plus ``study``,
            ``trial_id``, ``repeat``, ``talker``, ``speech_item``, ``natural_speech``,
            ``error``, ``grid.<name>`` and the ``prov_*`` provenance columns), in trial
            order. Trials that failed with a transient error (a codec library or data
            missing) are included with their ``error`` but not stored.
        """
        from .executors import execute
        from .store import ResultStore

        if workers is not None:
            workers = _int(workers, "workers", 1)
        plan = self.trials()
        st = ResultStore(store) if store is not None else None
        rows: dict[str, list[dict[str, Any]]] = {}
        failed_transient: list[str] = []
        if st is not None:
            st.lock()
        try:
            if st is not None:
                st.scan()
                st.write_meta("study.yaml", self.to_yaml())
                done = st.done_ids()
            else:
                done = set()
            todo = [t for t in plan if t.trial_id not in done]
            if progress and st is not None and done:
                have = sum(1 for t in plan if t.trial_id in done)
                if have:
                    print(f"voicelab: resuming {self.name}: {have} of {len(plan)} trials already in {st.path}",
                          file=sys.stderr)

            def record(out: dict[str, Any]) -> None:
                rows[out["trial_id"]] = out["rows"]
                if out.get("transient"):
                    failed_transient.append(f"{out['trial_id']}: {out['error']}")
                elif st is not None:
                    st.write_trial(out["trial_id"], out["rows"])

            payloads = [self._payload(t) for t in todo]
            execute(payloads, record, executor=executor, client=client, workers=workers,
                    progress=progress, total=len(plan), initial=len(plan) - len(todo), desc=self.name)
            if st is not None:
                stored = st.load([t.trial_id for t in plan])
                by_id = {tid: g for tid, g in stored.groupby("trial_id", sort=False)} if len(stored) else {}
            else:
                by_id = {}
        finally:
            if st is not None:
                st.unlock()
        frames = []
        for t in plan:
            if t.trial_id in by_id:
                frames.append(by_id[t.trial_id])
            elif t.trial_id in rows:
                frames.append(pd.DataFrame(rows[t.trial_id]))
        if failed_transient and progress:
            print(f"voicelab: {len(failed_transient)} trial(s) failed for a reason a rerun may fix (not stored): "
                  + failed_transient[0], file=sys.stderr)
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True, sort=False)

    def _payload(self, t: Trial) -> dict[str, Any]:
        return {
            "study": self.name,
            "trial_id": t.trial_id,
            "repeat": t.repeat,
            "point": {k: _grid_label(v) for k, v in t.point.items()},
            "talker": t.talker,
            "speech_item": t.speech_item,
            "scenario": t.scenario.to_dict(),
        }

    # ------------------------------------------------------------------ analysis
    def group_columns(self, df: pd.DataFrame | None = None) -> list[str]:
        """Columns that identify a cell: ``grid.<name>`` for each grid field, and ``direction``."""
        cols = [f"grid.{k}" for k in self.grid] + ["direction"]
        if df is not None:
            cols = [c for c in cols if c in df.columns]
        return cols

    def summary(self, df: pd.DataFrame, metrics: Sequence[str] | None = None, *, level: float = 0.95) -> pd.DataFrame:
        """Per cell and metric: n, mean with its Student-t interval, median with its bootstrap
        interval (:func:`voicelab.experiments.stats.summarize`); failed trials left out."""
        from .stats import summarize

        ok = df[df["error"].isna()] if "error" in df.columns else df
        if metrics is None:
            metrics = [m for m in KEY_METRICS if m in ok.columns and pd.to_numeric(ok[m], errors="coerce").notna().any()]
        return summarize(ok, by=self.group_columns(ok), metrics=list(metrics), level=level)

    def compare(self, df: pd.DataFrame, field: str, a: Any, b: Any, metric: str, *,
                direction: str | None = "caller_to_agent", unit: str = "") -> str:
        """A paired verdict line: grid ``field`` = ``a`` versus ``b`` on ``metric``.

        Trials are matched on everything else (the other grid fields and the repeat, i.e.
        the same seed and utterance when ``paired``).
        """
        from .stats import verdict

        col = f"grid.{field}"
        if col not in df.columns:
            raise ParameterError(f"{field!r} is not a grid field of this study; grid: {', '.join(self.grid)}")
        if metric not in df.columns:
            raise ParameterError(f"no metric column {metric!r}")
        d = df[df["error"].isna()] if "error" in df.columns else df
        if direction is not None:
            d = d[d["direction"] == direction]
        keys = [c for c in self.group_columns(d) if c not in (col, "direction")] + ["repeat"]
        la, lb = _grid_label(a), _grid_label(b)
        xa = d[d[col] == la].set_index(keys)[metric]
        xb = d[d[col] == lb].set_index(keys)[metric]
        both = pd.concat([xa.rename("a"), xb.rename("b")], axis=1, join="inner")
        return verdict(both["a"].astype(float).to_numpy(), both["b"].astype(float).to_numpy(),
                       names=(f"{field}={a}", f"{field}={b}"), unit=unit)


# ---------------------------------------------------------------------- the task
_LIMITED = False


def _limit_threads() -> None:
    """Single-threaded numeric libraries in a trial process (one trial per core)."""
    global _LIMITED
    if _LIMITED:
        return
    _LIMITED = True
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass


def _failed_rows(scn: Scenario, err: str) -> list[dict[str, Any]]:
    from .result import Result

    res = Result(scenario=scn, call={}, directions={}, deterministic=scn.deterministic)
    return res.to_rows()


def run_trial(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Run one trial (in any process: this is the Dask task).

    Parameters
    ----------
    payload : dict
        ``trial_id``, ``repeat``, ``point``, ``talker``, ``speech_item``, ``study`` and
        ``scenario`` (plain data).

    Returns
    -------
    dict
        ``trial_id``, ``rows`` (one per direction, ready for the store), ``error`` (None
        or ``"Type: message"``), ``transient`` (bool), ``wall_s``.
    """
    from .provenance import provenance
    from .run import run

    _limit_threads()
    scn = Scenario.from_dict(payload["scenario"])
    t0 = time.perf_counter()
    error = None
    transient = False
    try:
        res = run(scn)
        rows = res.to_rows()
        prov = dict(getattr(res, "provenance", None) or provenance())
    except VoicelabError as exc:
        error = f"{type(exc).__name__}: {exc}"
        transient = isinstance(exc, TRANSIENT_ERRORS)
        rows = _failed_rows(scn, error)
        prov = provenance()
    wall = time.perf_counter() - t0
    extra = {
        "study": payload.get("study"),
        "trial_id": payload["trial_id"],
        "repeat": int(payload["repeat"]),
        "talker": payload.get("talker"),
        "error": error,
        **{f"grid.{k}": v for k, v in (payload.get("point") or {}).items()},
    }
    out_rows = []
    for r in rows:
        r = dict(r)
        if payload.get("speech_item") is not None or r.get("speech_item") is None:
            r["speech_item"] = payload.get("speech_item") or r.get("speech_item")
        syn = r.get("synthetic_speech")
        r["natural_speech"] = None if syn is None else not bool(syn)
        if r.get("wall_s") is None:
            r["wall_s"] = wall
        r.update(extra)
        r.update(prov)
        out_rows.append(r)
    return {"trial_id": payload["trial_id"], "rows": out_rows, "error": error, "transient": transient, "wall_s": wall}
