"""``voicelab study run`` and ``voicelab results ls|show|export`` (wired in :mod:`voicelab.cli`)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import ParameterError

__all__ = ["add_parsers", "cmd_study_run", "cmd_results_ls", "cmd_results_show", "cmd_results_export"]


def _fmt(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "-"
    return f"{f:.4g}" if abs(f) < 1e5 else f"{f:.0f}"


def print_summary(summary, file=None) -> None:
    """A compact text table: one line per cell and metric, ``mean [low, high]  n``."""
    file = file or sys.stdout
    if summary.empty:
        print("  (no finished trials)", file=file)
        return
    by = list(summary.columns[: list(summary.columns).index("metric")])
    lines = []
    for _, r in summary.iterrows():
        cell = "  ".join(f"{c.removeprefix('grid.')}={r[c]}" for c in by)
        ci = f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if not math.isnan(float(r["ci_low"])) else "[no interval]"
        lines.append((cell, str(r["metric"]), _fmt(r["mean"]), ci, str(int(r["n"]))))
    w = [max(len(x[i]) for x in lines) for i in range(4)]
    print(f"  {'cell':<{w[0]}}  {'metric':<{w[1]}}  {'mean':>{w[2]}}  {'95 % t-interval':<{w[3]}}  n", file=file)
    for cell, m, mean, ci, n in lines:
        print(f"  {cell:<{w[0]}}  {m:<{w[1]}}  {mean:>{w[2]}}  {ci:<{w[3]}}  {n}", file=file)


def _executor_arg(text: str) -> str:
    if text in ("serial", "local") or text.startswith(("dask://", "tcp://")):
        return text
    raise argparse.ArgumentTypeError(f"executor must be serial, local or dask://HOST:PORT, got {text!r}")


def _pos_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def cmd_study_run(args: argparse.Namespace) -> int:
    from .experiments.study import Study

    study = Study.from_yaml(args.file)
    settings = Study.run_settings(args.file)
    store = args.store or settings.get("store") or str(Path("results") / f"study-{study.name}")
    executor = args.executor or settings.get("executor") or "serial"
    if not isinstance(executor, str):
        raise ParameterError(f"study file {args.file}: executor must be serial, local or dask://HOST:PORT")
    try:
        _executor_arg(executor)
    except argparse.ArgumentTypeError as exc:
        raise ParameterError(f"study file {args.file}: {exc}") from None
    workers = args.workers if args.workers is not None else settings.get("workers")
    print(f"study {study.name}: {len(study)} trials ({'paired' if study.paired else 'unpaired'}), "
          f"store {store}, executor {executor}", file=sys.stderr)
    df = study.run(store=store, executor=executor, workers=workers, progress=not args.quiet)
    failed = int(df.drop_duplicates("trial_id")["error"].notna().sum()) if "error" in df.columns and len(df) else 0
    print(f"{study.name}: {df['trial_id'].nunique() if len(df) else 0} trials, {failed} failed; "
          "mean with 95 % Student-t interval:")
    print_summary(study.summary(df))
    return 0


def _stores(root: Path) -> list[Path]:
    if (root / "parts").is_dir():
        return [root]
    if not root.is_dir():
        raise ParameterError(f"no results folder {root}")
    return sorted(p for p in root.iterdir() if (p / "parts").is_dir())


def cmd_results_ls(args: argparse.Namespace) -> int:
    from .experiments.store import ResultStore

    root = Path(args.dir)
    stores = _stores(root)
    if not stores:
        print(f"no results stores under {root}")
        return 0
    for p in stores:
        info = ResultStore(p, create=False, quiet=True).info()
        dmg = f", {info['damaged']} damaged part(s) set aside" if info["damaged"] else ""
        print(f"{info['path']}  study={info['study'] or '-'}  trials={info['trials']}  {info['size_kb']} kB{dmg}")
    return 0


def _load(dirname: str):
    from .experiments.store import ResultStore

    st = ResultStore(dirname, create=False)
    if not (Path(dirname) / "parts").is_dir():
        raise ParameterError(f"{dirname} is not a results store (no parts/ folder)")
    df = st.load()
    if df.empty:
        raise ParameterError(f"results store {dirname} holds no trials yet")
    return df


def _summary(df, by: Sequence[str] | None, metrics: Sequence[str] | None):
    from .experiments.stats import summarize
    from .experiments.study import KEY_METRICS

    import pandas as pd

    if by is None:
        by = [c for c in df.columns if c.startswith("grid.")] + ["direction"]
    by = [c if c in df.columns or f"grid.{c}" not in df.columns else f"grid.{c}" for c in by]
    ok = df[df["error"].isna()] if "error" in df.columns else df
    if not metrics:
        metrics = [m for m in KEY_METRICS if m in ok.columns and pd.to_numeric(ok[m], errors="coerce").notna().any()]
    return summarize(ok, by=by, metrics=list(metrics))


def cmd_results_show(args: argparse.Namespace) -> int:
    df = _load(args.dir)
    s = _summary(df, args.by, args.metric)
    print(f"{args.dir}: {df['trial_id'].nunique()} trials, {len(df)} rows; mean with 95 % Student-t interval:")
    print_summary(s)
    if args.by and "direction" in df.columns and "direction" not in s.columns:
        print("  note: both call directions pooled, so n counts directions (2 per trial), which are not "
              "independent: add 'direction' to --by for per-trial intervals")
    return 0


def cmd_results_export(args: argparse.Namespace) -> int:
    df = _load(args.dir)
    fmt = args.format
    out = Path(args.output) if args.output else Path(args.dir) / f"results.{fmt}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            df.to_csv(out, index=False)
        elif fmt == "parquet":
            df.to_parquet(out, index=False)
        else:
            from .viz.study import summary_figure

            s = _summary(df, args.by, args.metric)
            metrics = list(dict.fromkeys(s["metric"]))
            html = []
            for i, m in enumerate(metrics):
                fig = summary_figure(s, m)
                html.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
            out.write_text("<html><head><meta charset='utf-8'><title>voicelab results</title></head><body>\n"
                           + "\n".join(html) + "\n</body></html>\n")
    except OSError as exc:
        raise ParameterError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"wrote {out}")
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``study`` and ``results`` to the ``voicelab`` sub-command parser."""
    st = sub.add_parser("study", help="studies: grids x repeats x talkers with intervals, resumable, on Dask")
    stsub = st.add_subparsers(dest="study_command", metavar="SUBCOMMAND", parser_class=sub._parser_class)
    st.set_defaults(func=lambda _args: (st.print_help(), 2)[1])
    sr = stsub.add_parser("run", help="run a study from a YAML file (see docs/studies.md); resumes from its store")
    sr.add_argument("file", help="study YAML (name, base, grid, repeats, talkers, paired, seed)")
    sr.add_argument("--store", metavar="DIR", help="results store folder (default: the file's store: or results/study-NAME)")
    sr.add_argument("--executor", type=_executor_arg, metavar="serial|local|dask://HOST:PORT",
                    help="where trials run (default: the file's executor: or serial)")
    sr.add_argument("--workers", type=_pos_int, metavar="N", help="worker processes of --executor local (default: one per core)")
    sr.add_argument("--quiet", action="store_true", help="no progress bar")
    sr.set_defaults(func=cmd_study_run)

    rs = sub.add_parser("results", help="results stores: list, summarise, export")
    rsub = rs.add_subparsers(dest="results_command", metavar="SUBCOMMAND", parser_class=sub._parser_class)
    rs.set_defaults(func=lambda _args: (rs.print_help(), 2)[1])
    rl = rsub.add_parser("ls", help="list results stores")
    rl.add_argument("dir", nargs="?", default="results", help="a store, or a folder of stores (default: results)")
    rl.set_defaults(func=cmd_results_ls)
    for name, helptext in (("show", "summary with 95 % Student-t intervals"), ("export", "write the table (csv, parquet) or a figure (html)")):
        r = rsub.add_parser(name, help=helptext)
        r.add_argument("dir", help="a results store folder")
        r.add_argument("--by", nargs="+", metavar="COL", help="group by these columns (default: the grid fields and direction)")
        r.add_argument("--metric", nargs="+", metavar="NAME", help="metrics to summarise (default: the key ones with values)")
        if name == "export":
            r.add_argument("--format", choices=["csv", "parquet", "html"], default="csv")
            r.add_argument("--output", "-o", metavar="FILE", help="output file (default: DIR/results.FORMAT)")
        r.set_defaults(func=cmd_results_show if name == "show" else cmd_results_export)
