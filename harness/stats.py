"""Pure statistics over latency samples: no I/O, no device. The gate builds on these."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    if not len(samples):
        raise ValueError("percentile of no samples")
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q))


def summary(samples: Sequence[float]) -> dict[str, float]:
    """Latency statistics of one cell, in the samples' unit (microseconds), keyed by metric name."""
    x = np.asarray(samples, dtype=np.float64)
    if not x.size:
        raise ValueError("summary of no samples")
    return {
        "latency_p50_us": float(np.percentile(x, 50)),
        "latency_p90_us": float(np.percentile(x, 90)),
        "latency_mean_us": float(x.mean()),
        "latency_std_us": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "latency_min_us": float(x.min()),
        "latency_max_us": float(x.max()),
        "samples_count": float(x.size),
    }


def sqnr_db(reference: np.ndarray, actual: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of `actual` against `reference`, in dB (inf if identical)."""
    reference = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((reference - np.asarray(actual, dtype=np.float64)) ** 2))
    signal = float(np.sum(reference ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a proportion (successes of n): unlike p +- z*sqrt(p(1-p)/n) it
    stays inside [0, 1] and keeps its coverage near 0 % and 100 %, where accuracies live."""
    if n <= 0:
        raise ValueError("an interval over no examples")
    z = _normal_quantile(0.5 + confidence / 2)
    p, z2 = successes / n, z * z / n
    center = (p + z2 / 2) / (1 + z2)
    half = z / (1 + z2) * math.sqrt(p * (1 - p) / n + z2 / (4 * n))
    return max(0.0, center - half), min(1.0, center + half)


def bootstrap_interval(statistic, per_example: Sequence[np.ndarray], confidence: float = 0.95,
                       resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(*arrays)` over examples: each replicate draws the
    same example rows from every array (seeded, so a second run gives the same interval)."""
    arrays = [np.asarray(a) for a in per_example]
    n = len(arrays[0])
    if n == 0:
        raise ValueError("an interval over no examples")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(*(a[idx] for a in arrays))
                       for idx in (rng.integers(0, n, n) for _ in range(resamples))], dtype=np.float64)
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def _normal_quantile(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


# -- comparing two sets of samples (the gate) ---------------------------------------------------

def median(samples: Sequence[float]) -> float:
    if not len(samples):
        raise ValueError("median of no samples")
    return float(np.median(np.asarray(samples, dtype=np.float64)))


def bootstrap_medians(samples: Sequence[float], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """`resamples` bootstrap replicates of the median of `samples`.

    Resampling n values with replacement and taking their median costs O(n) per replicate, too
    much for a cell of 50,000 timings. The median of a resample is an order statistic of n
    uniform draws pushed through the sample's quantile function, and the k-th smallest of n
    uniforms follows Beta(k, n - k + 1): drawing that directly gives the same distribution as
    resampling, in O(1) per replicate. For even n the next order statistic is the smallest of the
    n - k uniforms above the k-th, i.e. u + (1 - u) * Beta(1, n - k)."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = x.size
    if not n:
        raise ValueError("bootstrap of no samples")
    if n == 1:
        return np.full(resamples, x[0])
    k = (n + 1) // 2
    u = rng.beta(k, n - k + 1, size=resamples)
    lower = x[np.minimum((u * n).astype(np.int64), n - 1)]
    if n % 2:
        return lower
    v = u + (1.0 - u) * rng.beta(1, n - k, size=resamples)
    return 0.5 * (lower + x[np.minimum((v * n).astype(np.int64), n - 1)])


def median_ci(samples: Sequence[float], confidence: float = 0.95, resamples: int = 4000,
              seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the median."""
    medians = bootstrap_medians(samples, resamples, np.random.default_rng(seed))
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(medians, [tail, 100.0 - tail])
    return float(low), float(high)


def ratio_ci(baseline: Sequence[float], candidate: Sequence[float], confidence: float = 0.95,
             resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of median(candidate) / median(baseline), the two
    samples resampled independently."""
    rng = np.random.default_rng(seed)
    base = bootstrap_medians(baseline, resamples, rng)
    cand = bootstrap_medians(candidate, resamples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = cand / base
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(ratios, [tail, 100.0 - tail])
    return float(low), float(high)


def mann_whitney_p(baseline: Sequence[float], candidate: Sequence[float], alternative: str) -> float:
    """One-sided Mann-Whitney U p-value: alternative 'greater' tests whether the candidate's
    timings tend to be larger (slower) than the baseline's, 'less' whether smaller (faster)."""
    from scipy.stats import mannwhitneyu

    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', not {alternative!r}")
    return float(mannwhitneyu(np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64),
                              alternative=alternative).pvalue)


# -- steps in a series of nightly values (history) ----------------------------------------------

def detect_steps(values: Sequence[float], min_change: float = 0.05, sensitivity: float = 2.0,
                 min_run: int = 2) -> list[int]:
    """Indices where a series of positive values (one per run, oldest first) moves to a new level.

    Binary segmentation of log(values) into levels at their medians, under absolute error: a
    split is kept when it lowers the cost by more than `sensitivity` * sigma * sqrt(n) (sigma
    estimated robustly from successive differences), each side holds at least `min_run` values
    (so one odd night is not a level), and the two levels differ by at least `min_change`
    (relative). Like asv's step detection, this names the night a metric moved, and a slow drift
    shows as steps that no single night-to-night comparison would flag."""
    y = np.log(np.asarray(values, dtype=np.float64))
    n = y.size
    if n < 2 * min_run or not np.all(np.isfinite(y)):
        return []
    sigma = float(np.median(np.abs(np.diff(y)))) / (0.6745 * math.sqrt(2.0))
    sigma = max(sigma, 1e-3 * min_change)  # a perfectly flat series still needs a finite penalty
    min_jump = math.log1p(min_change)
    steps: list[int] = []

    def cost(segment: np.ndarray) -> float:
        return float(np.sum(np.abs(segment - np.median(segment))))

    def split(lo: int, hi: int) -> None:
        segment = y[lo:hi]
        if segment.size < 2 * min_run:
            return
        total = cost(segment)
        best, where = 0.0, None
        for k in range(min_run, segment.size - min_run + 1):
            gain = total - cost(segment[:k]) - cost(segment[k:])
            if gain > best:
                best, where = gain, k
        if where is None or best <= sensitivity * sigma * math.sqrt(segment.size):
            return
        # a real but small move is not reported; the halves may still hold a larger one
        if abs(np.median(segment[where:]) - np.median(segment[:where])) >= min_jump:
            steps.append(lo + where)
        split(lo, lo + where)
        split(lo + where, hi)

    split(0, n)
    return sorted(steps)
