"""The statistics behind every number the project reports, in one place so that `latentdiffuser run`'s printout, the
benchmarks' JSON and the figures agree to the digit for the same scores.

Statistics follow Agarwal et al. (2021, `rliable`): a setting's score on one task is the mean over seeds of
the per-seed mean over evaluation episodes, with a 95% percentile bootstrap CI over seeds; a family of
several tasks is summarized by the interquartile mean (IQM, the 25%-trimmed mean) of the runs x tasks score
matrix, with a stratified bootstrap CI (runs resampled with replacement within each task).

Pure numpy: `latentdiffuser run` (ld.pipeline) and the benchmarks print these numbers too, so nothing heavier may be
imported here. rliable itself is not a dependency: it installs, but its pin of arch < 8 does not import beside
pandas 3 (arch 7.2: `deprecate_kwarg() missing ... 'new_arg_name'`); tests/test_analysis.py checks these
functions against rliable's recorded answers on a small case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

NAN = float("nan")


def _finite(x: Iterable[float]) -> np.ndarray:
    a = np.asarray(list(x) if not isinstance(x, np.ndarray) else x, dtype=float)
    return a[np.isfinite(a)]


def _resample(x: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """`reps` bootstrap samples of `x` (one per row); the same draws as `rng.choice(x, (reps, len(x)))`."""
    return x[rng.integers(0, len(x), size=(reps, len(x)))]


def _percentiles(boots: np.ndarray, alpha: float) -> tuple[float, float]:
    return float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2))


def bootstrap_ci(x: Iterable[float], reps: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of the finite values of `x`: (nan, nan) for none, (x, x) for one.
    Seeded, so the same scores always print the same interval."""
    x = _finite(x)
    if len(x) == 0:
        return NAN, NAN
    if len(x) == 1:
        return float(x[0]), float(x[0])
    return _percentiles(_resample(x, reps, np.random.default_rng(seed)).mean(1), alpha)


def mean_ci(x: Iterable[float], reps: int = 10000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float, float]:
    """Mean and its `bootstrap_ci`; the CI is NaN with fewer than 2 values: a figure draws no error bar and a
    finding stays inconclusive rather than showing a zero-width interval from one seed."""
    x = _finite(x)
    if len(x) == 0:
        return NAN, NAN, NAN
    m = float(x.mean())
    if len(x) < 2:
        return m, NAN, NAN
    lo, hi = bootstrap_ci(x, reps=reps, seed=seed, alpha=alpha)
    return m, lo, hi


def iqm(x: Iterable[float], axis: Optional[int] = None) -> Any:
    """Interquartile mean: the mean of the middle 50% (scipy.stats.trim_mean(x, 0.25), as rliable)."""
    a = np.asarray(x, dtype=float)
    if axis is None:
        a, axis = a.ravel(), 0
    a = np.sort(a, axis=axis)
    n = a.shape[axis]
    cut = int(0.25 * n)
    return np.take(a, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def stratified_iqm_ci(tasks: Sequence[Iterable[float]], reps: int = 10000, seed: int = 0, alpha: float = 0.05,
                      stat: Callable = iqm) -> tuple[float, float, float]:
    """`stat` (IQM) over the runs of all tasks, with a stratified bootstrap CI: each replicate resamples
    every task's runs with replacement within that task (rliable's StratifiedBootstrap; tasks may have
    different numbers of runs). CI is NaN when no task has 2 runs."""
    cols = [_finite(t) for t in tasks]
    cols = [c for c in cols if len(c)]
    if not cols:
        return NAN, NAN, NAN
    point = float(stat(np.concatenate(cols)))
    if max(len(c) for c in cols) < 2:
        return point, NAN, NAN
    rng = np.random.default_rng(seed)
    samples = np.concatenate([_resample(c, reps, rng) for c in cols], axis=1)
    lo, hi = _percentiles(stat(samples, axis=1), alpha)
    return point, lo, hi


def task_mean_ci(tasks: Sequence[Iterable[float]], reps: int = 10000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float, float]:
    """The mean over tasks of each task's mean (every task weighs the same, as a paper's "average" column),
    with a stratified bootstrap CI: each replicate resamples every task's values within that task. Given
    per-episode paired differences per task, it is the CI of an average gain. CI NaN when no task has 2 values."""
    cols = [c for c in (_finite(t) for t in tasks) if len(c)]
    if not cols:
        return NAN, NAN, NAN
    point = float(np.mean([c.mean() for c in cols]))
    if max(len(c) for c in cols) < 2:
        return point, NAN, NAN
    rng = np.random.default_rng(seed)
    lo, hi = _percentiles(np.mean([_resample(c, reps, rng).mean(1) for c in cols], axis=0), alpha)
    return point, lo, hi


def paired_diffs(a: pd.Series, b: pd.Series) -> np.ndarray:
    """a[s] - b[s] for the seeds s both have (series indexed by seed), in seed order."""
    common = sorted(set(a.dropna().index) & set(b.dropna().index))
    return a.loc[common].to_numpy(float) - b.loc[common].to_numpy(float)


def paired_diff(a: pd.Series, b: pd.Series, reps: int = 10000, seed: int = 0) -> tuple[float, float, float, int]:
    """Mean of a[s] - b[s] over the seeds s both have (series indexed by seed), with a bootstrap CI: the same
    seed trains on the same data order and evaluates the same episode seeds, so pairing removes that noise."""
    d = paired_diffs(a, b)
    if not len(d):
        return NAN, NAN, NAN, 0
    m, lo, hi = mean_ci(d, reps=reps, seed=seed)
    return m, lo, hi, len(d)


def seeds_to_decide(mean: float, sd: float, margin: float, z: float = 1.96) -> float:
    """About how many seeds a 95% CI of a mean difference needs to clear the decision boundary nearest to
    it (-margin or +margin), if the difference's mean and per-seed standard deviation stayed as measured:
    ceil((z * sd / distance)^2), at least 2. It answers "what scale would decide this finding" from the
    numbers, not a promise: with 2-3 seeds the sd itself is rough. inf when the mean sits on a boundary,
    nan when the sd is unknown (fewer than 2 seeds)."""
    if not (np.isfinite(mean) and np.isfinite(sd)):
        return NAN
    distance = min(abs(mean - margin), abs(mean + margin))
    if distance == 0:
        return float("inf")
    return float(max(2, int(np.ceil((z * sd / distance) ** 2))))


def unpaired_diff_ci(a: Iterable[float], b: Iterable[float], reps: int = 10000, seed: int = 0,
                     alpha: float = 0.05) -> tuple[float, float, float]:
    """mean(a) - mean(b) for two independent samples (nothing to pair them by, e.g. different tasks), with a
    percentile bootstrap CI resampling each within itself; CI NaN unless both have 2 values."""
    a, b = _finite(a), _finite(b)
    if not (len(a) and len(b)):
        return NAN, NAN, NAN
    diff = float(a.mean() - b.mean())
    if min(len(a), len(b)) < 2:
        return diff, NAN, NAN
    rng = np.random.default_rng(seed)
    boots = _resample(a, reps, rng).mean(1) - _resample(b, reps, rng).mean(1)
    lo, hi = _percentiles(boots, alpha)
    return diff, lo, hi
