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
