"""Statistics a reviewer accepts, for studies with few trials per cell.

* :func:`mean_ci` -- the mean with a Student-t interval. Studies have small n (3 to 30
  trials per cell): the normal quantile 1.96 understates the width badly there (with
  n = 3 the 95 % t quantile is 4.30), so the t distribution with n - 1 degrees of
  freedom is used for every n. One trial has no interval; the result says why.
* :func:`bootstrap_ci` -- an interval for a median or a percentile, which have no
  simple standard error: BCa (bias-corrected and accelerated) bootstrap through
  :func:`scipy.stats.bootstrap`, deterministic for a given ``seed``; the percentile
  bootstrap when BCa cannot be computed (e.g. all values equal).
* :func:`paired_difference` -- for two arms measured on the same trials (same seed,
  same utterance): the mean difference with its t interval, the paired t-test and the
  Wilcoxon signed-rank test. Pairing removes the between-trial spread (talker,
  network draw) from the comparison, which is why studies pair by default.
* :func:`verdict` -- the one-line summary of a paired comparison.
* :func:`summarize` -- a tidy table: one row per cell and metric with n, the mean and
  its t interval, the median and its bootstrap interval.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..errors import ParameterError

__all__ = [
    "Interval",
    "PairedDifference",
    "mean_ci",
    "t_halfwidth",
    "trials_needed",
    "bootstrap_ci",
    "paired_difference",
    "verdict",
    "summarize",
    "SUMMARY_COLUMNS",
]

#: Fewer observations than this get no bootstrap interval: resampling 2-4 values gives
#: an interval that merely spans them, with far less than its nominal coverage.
MIN_BOOTSTRAP_N = 5

#: Columns of :func:`summarize` after the grouping columns.
SUMMARY_COLUMNS = ("metric", "n", "mean", "std", "ci_low", "ci_high", "median", "median_ci_low", "median_ci_high")


@dataclass(frozen=True)
class Interval:
    """An estimate with a confidence interval.

    Attributes
    ----------
    estimate : float
        The point estimate (NaN when there is no data).
    low, high : float or None
        Interval bounds; None when no interval can be given (see ``reason``).
    level : float
        Confidence level, e.g. 0.95.
    n : int
        Number of finite observations used.
    method : str
        ``"student-t"``, ``"bca"``, ``"percentile"`` or ``"degenerate"``.
    reason : str or None
        Why there is no interval (``low``/``high`` None), or why the method changed.
    """

    estimate: float
    low: float | None
    high: float | None
    level: float
    n: int
    method: str
    reason: str | None = None

    @property
    def interval(self) -> tuple[float, float] | None:
        """``(low, high)``, or None when there is no interval."""
        if self.low is None or self.high is None:
            return None
        return (self.low, self.high)

    @property
    def half_width(self) -> float | None:
        """Half the interval width (same unit as the data), or None."""
        if self.interval is None:
            return None
        return (self.high - self.low) / 2.0  # type: ignore[operator]


@dataclass(frozen=True)
class PairedDifference:
    """Arm A minus arm B over paired trials (see :func:`paired_difference`).

    Attributes
    ----------
    mean : float
        Mean of the differences a - b.
    low, high : float or None
        Student-t interval of the mean difference (None for n < 2 or zero spread
        with n < 2).
    level : float
        Confidence level.
    n : int
        Number of complete pairs.
    p_t : float or None
        Two-sided paired t-test p-value (None when undefined: n < 2, or every
        difference equal).
    p_wilcoxon : float or None
        Two-sided Wilcoxon signed-rank p-value (None when undefined: n < 2 or every
        difference zero).
    median : float
        Median of the differences.
    dropped : int
        Pairs dropped because one side was missing (NaN).
    """

    mean: float
    low: float | None
    high: float | None
    level: float
    n: int
    p_t: float | None
    p_wilcoxon: float | None
    median: float
    dropped: int = 0
    reason: str | None = field(default=None)

    @property
    def interval(self) -> tuple[float, float] | None:
        if self.low is None or self.high is None:
            return None
        return (self.low, self.high)


def _check_level(level: float) -> float:
    try:
        lv = float(level)
    except (TypeError, ValueError):
        raise ParameterError(f"confidence level must be a number in (0, 1), got {level!r}") from None
    if not 0.0 < lv < 1.0:
        raise ParameterError(f"confidence level must be in (0, 1) (e.g. 0.95), got {level!r}")
    return lv


def _finite(x: Any, name: str = "x") -> np.ndarray:
    try:
        a = np.asarray(x, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a sequence of numbers") from None
    return a[np.isfinite(a)]


def t_halfwidth(std: Any, n: Any, level: float = 0.95) -> Any:
    """Half-width of the Student-t interval of a mean, from the sample std (ddof = 1) and n.

    ``t(1 - (1 - level)/2, n - 1) * std / sqrt(n)``; vectorised over arrays; 0 where
    n < 2 (one sample gives no interval). :func:`mean_ci` and the figures' error bars
    (:func:`voicelab.viz.ci_halfwidth`) both use it.
    """
    from scipy import stats

    level = _check_level(level)
    sd = np.nan_to_num(np.asarray(std, dtype=float), nan=0.0)
    nn = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.5 + level / 2.0, np.maximum(nn - 1, 1)) * sd / np.sqrt(np.maximum(nn, 1))
    half = np.where(nn >= 2, half, 0.0)
    return half if half.ndim else float(half)


def trials_needed(std: float, halfwidth: float, level: float = 0.95, *, max_n: int = 100000) -> int:
    """The smallest n whose Student-t interval of a mean is at most +/- ``halfwidth`` wide.

    Parameters
    ----------
    std : float
        Standard deviation of the observations (for a paired design: of the paired
        differences), from a pilot study.
    halfwidth : float
        The precision wanted, in the unit of ``std``.

    Returns
    -------
    int
        n >= 2 (``max_n`` when even that is not enough).
    """
    if not (isinstance(std, (int, float)) and std >= 0 and isinstance(halfwidth, (int, float)) and halfwidth > 0):
        raise ParameterError(f"std must be >= 0 and halfwidth > 0, got {std!r}, {halfwidth!r}")
    n = 2
    while n < max_n and float(t_halfwidth(std, n, level)) > halfwidth:
        n = n + 1 if n < 64 else int(n * 1.1) + 1
    return min(n, max_n)


def mean_ci(x: Sequence[float], level: float = 0.95) -> Interval:
    """The mean of ``x`` with its Student-t confidence interval.

    ``mean +/- t(1 - (1 - level)/2, n - 1) * s / sqrt(n)`` with ``s`` the sample
    standard deviation (ddof = 1). The t quantile is used for every n (it tends to
    the normal one as n grows), never 1.96.

    Parameters
    ----------
    x : array_like
        Observations (NaN and infinities are ignored: a failed trial has no value).
    level : float, default 0.95
        Confidence level.

    Returns
    -------
    Interval
        ``low``/``high`` are None for n < 2, with the reason in ``reason``.
    """
    level = _check_level(level)
    a = _finite(x)
    n = int(a.size)
    if n == 0:
        return Interval(math.nan, None, None, level, 0, "student-t", "no data")
    m = float(a.mean())
    if n == 1:
        return Interval(m, None, None, level, 1, "student-t", "n = 1: one trial gives no interval (add repeats)")
    s = float(a.std(ddof=1))
    if s == 0.0:
        return Interval(m, m, m, level, n, "degenerate", "all values equal")
    h = float(t_halfwidth(s, n, level))
    return Interval(m, m - h, m + h, level, n, "student-t")


def _percentile_stat(q: float) -> Callable[..., Any]:
    def stat(x, axis=-1):
        return np.percentile(x, q, axis=axis)

    stat.__name__ = f"p{q:g}"
    return stat


def bootstrap_ci(
    x: Sequence[float],
    stat: Callable[..., Any] | str = np.median,
    *,
    q: float | None = None,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    method: str = "BCa",
) -> Interval:
    """A bootstrap confidence interval for a median, a percentile or any statistic.

    Parameters
    ----------
    x : array_like
        Observations (non-finite values ignored).
    stat : callable or str, default numpy.median
        ``stat(sample, axis=-1)`` (vectorised, like ``np.median``), ``"median"``,
        ``"mean"``, or ``"pNN"`` for the NN-th percentile (e.g. ``"p95"``).
    q : float, optional
        Percentile 0..100; overrides ``stat`` (``q=95`` is the 95th percentile).
    level : float, default 0.95
        Confidence level.
    n_boot : int, default 2000
        Bootstrap resamples.
    seed : int, default 0
        Seed of the resampling; the same seed gives the same interval.
    method : {"BCa", "percentile"}
        BCa corrects for bias and skew; it falls back to the percentile method (with
        a ``reason``) when it cannot be computed.

    Returns
    -------
    Interval
        None bounds for n < :data:`MIN_BOOTSTRAP_N` (with the reason).
    """
    from scipy import stats as sst

    level = _check_level(level)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise ParameterError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    if method not in ("BCa", "percentile"):
        raise ParameterError(f"bootstrap method must be 'BCa' or 'percentile', got {method!r}")
    if q is not None:
        qf = float(q)
        if not 0.0 <= qf <= 100.0:
            raise ParameterError(f"percentile q must be in 0..100, got {q!r}")
        fn = _percentile_stat(qf)
    elif isinstance(stat, str):
        if stat == "median":
            fn = np.median
        elif stat == "mean":
            fn = np.mean
        elif stat.startswith("p"):
            try:
                qf = float(stat[1:])
            except ValueError:
                raise ParameterError(f"statistic {stat!r}: use 'median', 'mean' or 'pNN' (e.g. 'p95')") from None
            if not 0.0 <= qf <= 100.0:
                raise ParameterError(f"percentile in {stat!r} must be in 0..100")
            fn = _percentile_stat(qf)
        else:
            raise ParameterError(f"statistic {stat!r}: use 'median', 'mean' or 'pNN' (e.g. 'p95')")
    elif callable(stat):
        fn = stat
    else:
        raise ParameterError(f"stat must be a function or a name, got {stat!r}")
    a = _finite(x)
    n = int(a.size)
    if n == 0:
        return Interval(math.nan, None, None, level, 0, method.lower(), "no data")
    est = float(fn(a, axis=-1))
    if n == 1:
        return Interval(est, None, None, level, 1, method.lower(), "n = 1: one trial gives no interval (add repeats)")
    if np.all(a == a[0]):
        return Interval(est, est, est, level, n, "degenerate", "all values equal")
    if n < MIN_BOOTSTRAP_N:
        return Interval(est, None, None, level, n, method.lower(),
                        f"n = {n}: a bootstrap interval needs n >= {MIN_BOOTSTRAP_N} (add repeats)")
    rng = np.random.default_rng(seed)
    reason = None
    used = method
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sst.bootstrap((a,), fn, confidence_level=level, n_resamples=int(n_boot),
                            method=method, random_state=rng, vectorized=True)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if method == "BCa" and not (np.isfinite(lo) and np.isfinite(hi)):
            res = sst.bootstrap((a,), fn, confidence_level=level, n_resamples=int(n_boot),
                                method="percentile", random_state=np.random.default_rng(seed), vectorized=True)
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
            used, reason = "percentile", "BCa undefined for this sample; percentile bootstrap"
    return Interval(est, lo, hi, level, n, used.lower(), reason)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> PairedDifference:
    """Compare two arms measured on the same trials: a - b.

    Parameters
    ----------
    a, b : array_like
        Equal-length observations; element i of both comes from trial i (same seed,
        same utterance). Pairs with a NaN on either side are dropped.
    level : float, default 0.95
        Confidence level of the interval.

    Returns
    -------
    PairedDifference
        Mean difference with its Student-t interval, the paired t-test p-value
        (:func:`scipy.stats.ttest_rel`) and the Wilcoxon signed-rank p-value
        (:func:`scipy.stats.wilcoxon`), n.
    """
    from scipy import stats as sst

    level = _check_level(level)
    try:
        xa = np.asarray(a, dtype=float).ravel()
        xb = np.asarray(b, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ParameterError("paired_difference needs two sequences of numbers") from None
    if xa.size != xb.size:
        raise ParameterError(f"paired arms must have the same number of trials, got {xa.size} and {xb.size}")
    ok = np.isfinite(xa) & np.isfinite(xb)
    d = xa[ok] - xb[ok]
    dropped = int((~ok).sum())
    n = int(d.size)
    ci = mean_ci(d, level)
    med = float(np.median(d)) if n else math.nan
    p_t = p_w = None
    reason = ci.reason
    if n >= 2:
        if np.all(d == d[0]):
            reason = "every difference equal: no test"
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p_t = float(sst.ttest_rel(xa[ok], xb[ok]).pvalue)
                if np.any(d != 0):
                    try:
                        p_w = float(sst.wilcoxon(d).pvalue)
                    except ValueError:
                        p_w = None
    return PairedDifference(ci.estimate, ci.low, ci.high, level, n, p_t, p_w, med, dropped, reason)


def _fmt(v: float, unit: str) -> str:
    a = abs(v)
    if a == 0:
        s = "0"
    elif a >= 100:
        s = f"{v:.0f}"
    elif a >= 10:
        s = f"{v:.1f}".rstrip("0").rstrip(".")
    elif a >= 1:
        s = f"{v:.2f}".rstrip("0").rstrip(".")
    else:
        s = f"{v:.3g}"
    return f"{s}{(' ' + unit) if unit else ''}"


def _fmt_p(p: float | None) -> str:
    if p is None or not np.isfinite(p):
        return "p n/a"
    if p < 0.001:
        return "p < 0.001"
    if p < 0.01:
        return "p < 0.01"
    return f"p = {p:.2f}"


def verdict(
    a: Sequence[float] | PairedDifference,
    b: Sequence[float] | None = None,
    *,
    names: tuple[str, str] = ("A", "B"),
    unit: str = "",
    level: float = 0.95,
    alpha: float = 0.05,
    test: str = "t",
) -> str:
    """One line that says what a paired comparison found.

    Parameters
    ----------
    a, b : array_like, or a PairedDifference and None
        The paired arms (see :func:`paired_difference`), or its result.
    names : (str, str)
        How to call arm A and arm B.
    unit : str
        Unit of the values, e.g. ``"ms"``.
    level, alpha : float
        Interval level; significance threshold of the test.
    test : {"t", "wilcoxon"}
        Which p-value decides.

    Returns
    -------
    str
        E.g. ``"A exceeds B by 12 ms [8, 16], p < 0.01, n = 20 paired trials"`` or
        ``"no difference detected between A and B: -0.4 ms [-1.2, 0.5], p = 0.31,
        n = 20 paired trials"``.
    """
    if isinstance(a, PairedDifference):
        pd_ = a
    else:
        if b is None:
            raise ParameterError("verdict needs two paired arms, or one PairedDifference")
        pd_ = paired_difference(a, b, level)
    if test not in ("t", "wilcoxon"):
        raise ParameterError(f"test must be 't' or 'wilcoxon', got {test!r}")
    na, nb = names
    n = pd_.n
    trials = f"n = {n} paired trial{'s' if n != 1 else ''}"
    if n < 2:
        return f"no comparison of {na} and {nb}: {trials} (need at least 2)"
    p = pd_.p_t if test == "t" else pd_.p_wilcoxon
    ci = f"[{_fmt(pd_.low, '')}, {_fmt(pd_.high, '')}]" if pd_.interval is not None else "[no interval]"
    if p is not None and p < alpha and pd_.mean != 0:
        if pd_.mean > 0:
            return f"{na} exceeds {nb} by {_fmt(pd_.mean, unit)} {ci}, {_fmt_p(p)}, {trials}"
        # "A is below B by 12 ms [8, 16]": the interval of the shortfall B - A, in the words' sign
        flipped = f"[{_fmt(-pd_.high, '')}, {_fmt(-pd_.low, '')}]" if pd_.interval is not None else ci
        return f"{na} is below {nb} by {_fmt(-pd_.mean, unit)} {flipped}, {_fmt_p(p)}, {trials}"
    if p is None and pd_.interval is not None and pd_.mean != 0 and pd_.low == pd_.high:
        word = "exceeds" if pd_.mean > 0 else "is below"
        return f"{na} {word} {nb} by {_fmt(abs(pd_.mean), unit)} in every trial, {trials}"
    return f"no difference detected between {na} and {nb}: {_fmt(pd_.mean, unit)} {ci}, {_fmt_p(p)}, {trials}"


def summarize(
    df: pd.DataFrame,
    by: Sequence[str] = (),
    metrics: Sequence[str] | None = None,
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """A tidy summary: one row per group and metric.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per observation (e.g. per trial and direction).
    by : sequence of str
        Grouping columns (the cell: e.g. ``["transport", "network", "direction"]``).
    metrics : sequence of str, optional
        Numeric columns to summarise (default: every numeric column not in ``by``).
    level : float
        Confidence level of both intervals.
    n_boot, seed : int
        Bootstrap settings of the median interval (deterministic with ``seed``).

    Returns
    -------
    pandas.DataFrame
        ``by`` columns, then :data:`SUMMARY_COLUMNS`: ``n``, ``mean``, ``std``,
        ``ci_low``/``ci_high`` (Student-t), ``median``, ``median_ci_low``/``high``
        (bootstrap). Bounds are NaN when there is no interval (n < 2).
    """
    level = _check_level(level)
    if not isinstance(df, pd.DataFrame):
        raise ParameterError("summarize needs a pandas DataFrame")
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in by if c not in df.columns]
    if missing:
        raise ParameterError(f"no column(s) {missing} to group by; columns: {sorted(map(str, df.columns))}")
    if metrics is None:
        metrics = [c for c in df.columns if c not in by and pd.api.types.is_numeric_dtype(df[c])
                   and not pd.api.types.is_bool_dtype(df[c])]
    else:
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        bad = [m for m in metrics if m not in df.columns]
        if bad:
            raise ParameterError(f"no metric column(s) {bad}; columns: {sorted(map(str, df.columns))}")
    rows: list[dict[str, Any]] = []
    groups = df.groupby(by, sort=True, dropna=False) if by else [((), df)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        for m in metrics:
            vals = pd.to_numeric(g[m], errors="coerce").to_numpy(dtype=float)
            ci = mean_ci(vals, level)
            mci = bootstrap_ci(vals, np.median, level=level, n_boot=n_boot, seed=seed)
            fin = vals[np.isfinite(vals)]
            row = dict(zip(by, key))
            row.update(
                metric=m,
                n=ci.n,
                mean=ci.estimate,
                std=float(fin.std(ddof=1)) if fin.size > 1 else math.nan,
                ci_low=ci.low if ci.low is not None else math.nan,
                ci_high=ci.high if ci.high is not None else math.nan,
                median=mci.estimate,
                median_ci_low=mci.low if mci.low is not None else math.nan,
                median_ci_high=mci.high if mci.high is not None else math.nan,
            )
            rows.append(row)
    return pd.DataFrame(rows, columns=[*by, *SUMMARY_COLUMNS])
