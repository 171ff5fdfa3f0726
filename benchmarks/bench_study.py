"""Study throughput: sim trials per second serially and on Dask (1 and 2 workers), and the
Dask overhead per trial against the trial itself.

For each trial length (speech seconds per direction):

* ``trial_s``: median wall time of one trial inside the task (``wall_s`` of the rows:
  both directions simulated and scored with PESQ/STOI);
* ``serial``: trials per second of ``Study.run(executor="serial")`` with a results store;
* ``dask-1``, ``dask-2``: trials per second on a ``LocalCluster`` of 1 or 2
  single-threaded worker processes (started and warmed up before the clock starts:
  cluster start-up is reported separately), results written to a store by the driver
  as they finish;
* ``overhead``: per trial, the Dask wall time on one worker minus the trial's own time
  (``N * trial_s``), divided by N: scheduling, (de)serialising the payload and the rows,
  the driver's Parquet write. Target (issue #9): below 5 % of the trial for trials of
  1 s or more.

    python benchmarks/bench_study.py [--trials 12] [--seconds 1 4 16] [--markdown]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from voicelab.experiments.study import Study  # noqa: E402


def make_study(seconds: float, n: int, tag: str) -> Study:
    # every run gets its own seed so that no trial is found in a store already
    # speech "default": the corpus concatenated up to ``seconds`` (one corpus item is only 3-4 s)
    seed = int.from_bytes(f"{seconds}-{tag}-{time.time_ns()}".encode()[-6:], "big") % 100000
    return Study(base={"mode": "sim", "seconds": seconds}, grid={"codec": ["pcmu"]}, repeats=n,
                 seed=seed, name=f"bench-{tag}")


def timed(study: Study, **kw) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        df = study.run(store=d, progress=False, **kw)
        wall = time.perf_counter() - t0
    assert df["error"].isna().all(), df["error"].dropna().iloc[0]
    per = df.drop_duplicates("trial_id")["wall_s"].astype(float).tolist()
    return wall, per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--seconds", type=float, nargs="+", default=[1.0, 4.0, 16.0])
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    from dask.distributed import Client, LocalCluster

    load0 = os.getloadavg()
    clusters = {}
    startup = {}
    for w in (1, 2):
        t0 = time.perf_counter()
        cl = LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=logging.ERROR)
        c = Client(cl)
        startup[w] = time.perf_counter() - t0
        clusters[w] = (cl, c)
        timed(make_study(1.0, 2 * w, f"warm{w}"), client=c)  # imports, speech corpus in every worker
    timed(make_study(1.0, 2, "warm0"))
    rows = []
    try:
        for s in args.seconds:
            n = args.trials
            wall_serial, per = timed(make_study(s, n, "serial"))
            trial_s = statistics.median(per)
            wall1, per1 = timed(make_study(s, n, "d1"), client=clusters[1][1])
            wall2, _ = timed(make_study(s, n, "d2"), client=clusters[2][1])
            overhead = (wall1 - sum(per1)) / n
            rows.append(dict(seconds=s, trial_s=trial_s, worker_trial_s=statistics.mean(per1), serial=n / wall_serial, dask1=n / wall1, dask2=n / wall2,
                             overhead_ms=overhead * 1000, overhead_pct=100 * overhead / statistics.mean(per1),
                             serial_overhead_ms=1000 * (wall_serial - sum(per)) / n))
    finally:
        logging.getLogger("distributed").setLevel(logging.ERROR)
        for cl, c in clusters.values():
            c.close()
            cl.close()
    load1 = os.getloadavg()
    hdr = ("speech s/dir", "trial s (serial, median)", "trial s (1 worker, mean)", "serial trials/s", "Dask 1 worker trials/s", "Dask 2 workers trials/s",
           "Dask overhead ms/trial", "overhead % of trial", "serial overhead ms/trial")
    if args.markdown:
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
    else:
        print("  ".join(hdr))
    for r in rows:
        vals = (f"{r['seconds']:g}", f"{r['trial_s']:.3f}", f"{r['worker_trial_s']:.3f}", f"{r['serial']:.2f}", f"{r['dask1']:.2f}", f"{r['dask2']:.2f}",
                f"{r['overhead_ms']:.0f}", f"{r['overhead_pct']:.1f}", f"{r['serial_overhead_ms']:.0f}")
        print(("| " + " | ".join(vals) + " |") if args.markdown else "  ".join(vals))
    print(f"\n{args.trials} trials per cell; LocalCluster start-up: 1 worker {startup[1]:.1f} s, 2 workers "
          f"{startup[2]:.1f} s; load average {load0[0]:.1f} at start, {load1[0]:.1f} at end; {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
