"""The results store: a Parquet dataset that grows as trials finish and survives crashes.

Layout of a store folder ``DIR``::

    DIR/
      .lock                       fcntl lock: one study writes at a time
      study.yaml                  the last study run into it (for ``results ls``)
      parts/<trial_id>.parquet    one small file per finished trial (its rows, one per direction)

Durability: a trial's rows are written to a temporary file in ``parts/``, flushed to
disk (fsync) and renamed to ``<trial_id>.parquet``; a rename is atomic on POSIX file
systems, so a part is either complete or absent, and a trial appears at most once
(the name is its id). A kill -9 in the middle leaves only a temporary file, which the
next opening removes. A part that is nevertheless unreadable (a truncated copy, a disk
error) is detected when the store is opened (its Parquet footer does not parse), moved
aside to ``parts/*.damaged`` with a message, and its trial counts as not done, so a
resumed study runs it again.

:meth:`ResultStore.load` reads the whole dataset (part by part: a column empty in one
trial is typed null in its part, so ``pandas.read_parquet(DIR / "parts")`` may refuse
to merge the schemas); :meth:`ResultStore.compact` merges the parts into one file once a
study is over (optional).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import ParameterError, VoicelabError

__all__ = ["ResultStore", "StoreBusyError", "STORE_COLUMNS"]

#: Columns every stored row has, besides the result columns and the provenance.
STORE_COLUMNS = (
    "study",
    "trial_id",
    "scenario_key",
    "repeat",
    "talker",
    "speech_item",
    "natural_speech",
    "seed",
    "wall_s",
    "error",
)

_PARTS = "parts"
_SUFFIX = ".parquet"
_COMPACT = "compacted"


class StoreBusyError(VoicelabError):
    """Another process holds the store's lock (a study is already writing to it)."""


def _plain(v: Any) -> Any:
    """A value Parquet can hold: numpy scalars -> Python; containers -> JSON text."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (dict, list, tuple, set)):
        return json.dumps(v, sort_keys=True, default=str)
    if isinstance(v, np.ndarray):
        return json.dumps(v.tolist())
    if v is None or isinstance(v, (bool, int, float, str, bytes)):
        return v
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    return str(v)


def _table(rows: Sequence[Mapping[str, Any]]):
    """A pyarrow Table from row dicts; a column whose values mix types becomes text."""
    import pyarrow as pa

    cols: dict[str, list] = {}
    for i, r in enumerate(rows):
        for k, v in r.items():
            cols.setdefault(str(k), [None] * len(rows))[i] = _plain(v)
    arrays = {}
    for k, vals in cols.items():
        try:
            arrays[k] = pa.array(vals)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arrays[k] = pa.array([None if v is None else str(v) for v in vals], type=pa.string())
    return pa.table(arrays)


class ResultStore:
    """A folder of Parquet parts, one per finished trial (see the module docs).

    Parameters
    ----------
    path : str or os.PathLike
        The store folder; created when missing.
    create : bool, default True
        False: the folder must exist already (for reading).

    Notes
    -----
    Opening scans ``parts/``: temporary files left by an interrupted write are removed
    and unreadable parts are moved aside (a message on stderr), so
    :meth:`done_ids` lists exactly the trials whose rows are safely on disk.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True, quiet: bool = False) -> None:
        self.path = Path(path)
        self._quiet = quiet
        self._lock_fh = None
        if not self.path.exists():
            if not create:
                raise ParameterError(f"no results store at {self.path}")
            try:
                self.path.mkdir(parents=True)
            except OSError as exc:
                raise ParameterError(f"cannot create results store {self.path}: {exc.strerror or exc}") from None
        elif not self.path.is_dir():
            raise ParameterError(f"results store {self.path} is a file, not a folder")
        self.parts = self.path / _PARTS
        if create:
            self.parts.mkdir(exist_ok=True)
        self.dropped: list[str] = []
        self._done: set[str] = set()
        self.scan()

    # ------------------------------------------------------------------ locking
    def lock(self) -> "ResultStore":
        """Take the store's exclusive lock (non-blocking).

        Raises
        ------
        StoreBusyError
            Another process (a study running now) holds it.
        """
        if self._lock_fh is not None:
            return self
        fh = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            who = f" (held by {holder})" if holder else ""
            raise StoreBusyError(
                f"results store {self.path} is in use by another study{who}; wait for it to finish or use another --store"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        fh.flush()
        self._lock_fh = fh
        return self

    def unlock(self) -> None:
        """Release the lock (also on :meth:`close` and at process exit)."""
        if self._lock_fh is not None:
            try:
                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            finally:
                self._lock_fh.close()
                self._lock_fh = None

    close = unlock

    def __enter__(self) -> "ResultStore":
        return self.lock()

    def __exit__(self, *exc: Any) -> None:
        self.unlock()

    # ------------------------------------------------------------------ scanning
    def _part_files(self) -> list[Path]:
        if not self.parts.is_dir():
            return []
        # compacted files first, so that a trial rerun after compaction (its own part) wins in load()
        return sorted((p for p in self.parts.iterdir() if p.suffix == _SUFFIX and not p.name.startswith(".")),
                      key=lambda p: (not p.name.startswith(_COMPACT), p.name))

    def scan(self) -> set[str]:
        """Re-read which trials are stored; clean up after interrupted writes.

        Returns
        -------
        set of str
            Trial ids with a readable part.
        """
        import pyarrow.parquet as pq

        done: set[str] = set()
        if self.parts.is_dir():
            for p in self.parts.iterdir():
                if p.name.startswith(".tmp-"):
                    # an interrupted write: only remove it when we own the store (or nobody writes)
                    if self._lock_fh is not None or self._try_lock_probe():
                        p.unlink(missing_ok=True)
            for p in self._part_files():
                if p.name.startswith(_COMPACT):
                    try:
                        ids = pq.read_table(p, columns=["trial_id"]).column("trial_id").to_pylist()
                    except Exception as exc:  # noqa: BLE001 - any unreadable file is damaged
                        self._drop(p, exc)
                        continue
                    done.update(str(i) for i in ids)
                    continue
                try:
                    meta = pq.read_metadata(p)
                    if meta.num_rows < 1:
                        raise ValueError("no rows")
                except Exception as exc:  # noqa: BLE001
                    self._drop(p, exc)
                    continue
                done.add(p.stem)
        self._done = done
        return set(done)

    def _try_lock_probe(self) -> bool:
        """True when no other process holds the lock (so temporary files are stale)."""
        lockf = self.path / ".lock"
        try:
            with open(lockf, "a+") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return True
        except OSError:
            return False

    def _drop(self, p: Path, exc: BaseException) -> None:
        target = p.with_name(p.name + ".damaged")
        try:
            os.replace(p, target)
        except OSError:
            pass
        msg = (f"voicelab: results store {self.path}: part {p.name} is damaged "
               f"({type(exc).__name__}: {str(exc)[:80]}); moved aside to {target.name}, its trial will run again")
        self.dropped.append(p.stem)
        if not self._quiet:
            print(msg, file=sys.stderr)

    def done_ids(self) -> set[str]:
        """Trial ids whose rows are stored (as of the last :meth:`scan` or write)."""
        return set(self._done)

    def __contains__(self, trial_id: str) -> bool:
        return trial_id in self._done

    def __len__(self) -> int:
        return len(self._done)

    # ------------------------------------------------------------------ writing
    def write_trial(self, trial_id: str, rows: Sequence[Mapping[str, Any]]) -> Path:
        """Store one finished trial's rows, atomically.

        Parameters
        ----------
        trial_id : str
            The trial's stable id (the part's file name).
        rows : sequence of dict
            Its rows (one per direction, or one for a failed trial); every row should
            carry ``trial_id``.

        Returns
        -------
        pathlib.Path
            The part file.
        """
        import pyarrow.parquet as pq

        if not rows:
            raise ParameterError(f"trial {trial_id}: no rows to store")
        tid = str(trial_id)
        if not tid or "/" in tid or tid.startswith("."):
            raise ParameterError(f"bad trial id {trial_id!r}")
        table = _table([{**r, "trial_id": tid} for r in rows])
        tmp = self.parts / f".tmp-{tid}-{uuid.uuid4().hex[:8]}{_SUFFIX}"
        final = self.parts / f"{tid}{_SUFFIX}"
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            dfd = os.open(self.parts, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ParameterError(f"cannot write to results store {self.path}: {exc.strerror or exc}") from None
        self._done.add(tid)
        return final

    def write_meta(self, name: str, text: str) -> None:
        """Write a small text file (e.g. ``study.yaml``) atomically."""
        tmp = self.path / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        tmp.write_text(text)
        os.replace(tmp, self.path / name)

    # ------------------------------------------------------------------ reading
    def load(self, trial_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """All stored rows (optionally only those of some trials).

        Returns
        -------
        pandas.DataFrame
            One row per trial per direction; columns are the union over parts.
        """
        import pyarrow.parquet as pq

        want = None if trial_ids is None else {str(t) for t in trial_ids}
        frames = []
        for p in self._part_files():
            if not p.name.startswith(_COMPACT) and want is not None and p.stem not in want:
                continue
            try:
                df = pq.read_table(p).to_pandas()
            except Exception as exc:  # noqa: BLE001
                self._drop(p, exc)
                self._done.discard(p.stem)
                continue
            if want is not None:
                df = df[df["trial_id"].astype(str).isin(want)]
            frames.append(df)
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=list(STORE_COLUMNS))
        df = pd.concat(frames, ignore_index=True, sort=False)
        # one trial's rows exactly once, even if a compacted file and a part overlap
        if "direction" in df.columns:
            df = df.drop_duplicates(subset=["trial_id", "direction"], keep="last")
        return df.reset_index(drop=True)

    def compact(self) -> Path | None:
        """Merge all parts into one ``compacted-<n>.parquet`` (needs the lock).

        Returns
        -------
        pathlib.Path or None
            The merged file, or None when there was nothing to merge.
        """
        self.lock()
        df = self.load()
        if df.empty:
            return None
        olds = self._part_files()
        target = self.parts / f"{_COMPACT}-{uuid.uuid4().hex[:8]}{_SUFFIX}"
        tmp = self.parts / f".tmp-{target.name}"
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            table = _table(df.astype(object).where(df.notna(), None).to_dict("records"))
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        for p in olds:
            p.unlink(missing_ok=True)
        self.scan()
        return target

    def info(self) -> dict[str, Any]:
        """Trials, rows, studies and size of the store (for ``voicelab results ls``)."""
        size = sum(p.stat().st_size for p in self._part_files())
        study = None
        sy = self.path / "study.yaml"
        if sy.exists():
            try:
                import yaml

                study = (yaml.safe_load(sy.read_text()) or {}).get("name")
            except Exception:  # noqa: BLE001 - informational only
                study = None
        return {"path": str(self.path), "trials": len(self._done), "study": study,
                "size_kb": math.ceil(size / 1024), "damaged": len(list(self.parts.glob("*.damaged"))) if self.parts.is_dir() else 0}

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r}, trials={len(self._done)})"
