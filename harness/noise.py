"""The levels of a device's timing noise, estimated from repeated runs of the same cells. Pure:
numbers in, variance components out; benchmarks/gate_power.py fits them on a store's real sweeps
and simulates the gate with them.

All on the log scale (a sigma of 0.03 is about 3 %):

- invoke: the spread of single invokes inside one launch (1.4826 x MAD of log times, so an
  interrupt's 3x outlier does not dominate), and the lag-1 autocorrelation of successive invokes
  (invokes in one process drift together);
- launch: most launches of a cell in a run land close together (`launch_sigma`, the spread of
  the clean ones); part of that spread is the machine drifting slowly (`drift_share` of the
  variance, fitted from how the clean residuals of launches k apart in the machine's launch order
  correlate: corr(k) = share x rho^k), which launches close in time share and an A/B pair cancels;
  and some launches are slowed as a whole by interference (a neighbour, a descheduled
  thread, a bad placement): `interfered` is the share of launches more than `INTERFERENCE` above
  their cell's 10th percentile in that run, `interference_offsets` how far above their cell's clean
  launches they landed, and `persistence` the chance that the launch after an interfered one (in
  the machine's launch order) is interfered too: interference comes in spells;
- cell x run and device x run: how far a cell's clean mean, and the whole device, move from run to
  run (method of moments, beyond what the launches explain).

Each sigma is the median over cells of the per-cell value (quartiles kept), so one odd cell does
not set the machine's noise; `describe` says how each was estimated."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

INTERFERENCE = 0.15  # a launch this far above its side's 10th percentile was slowed by interference


def interfered(log_centers: np.ndarray, interference: float = INTERFERENCE) -> np.ndarray:
    """Which launches were slowed by interference: more than `interference` (a fraction) above the
    10th percentile of the launches they are compared with. Interference only ever slows a launch,
    so the fast end of a cell's launches is its clean level; the 10th percentile stays there even
    when most of five launches were slowed (a lower quartile would then be one of them)."""
    x = np.asarray(log_centers, dtype=np.float64)
    if not interference or x.size < 3:
        return np.zeros(x.size, dtype=bool)
    return x > np.percentile(x, 10) + math.log1p(interference)


@dataclass(frozen=True)
class Components:
    """Log-scale sigmas of each level (medians over cells), the interference, and what they were
    estimated from."""

    invoke_sigma: float
    invoke_rho: float
    launch_sigma: float
    interfered: float  # share of launches slowed by interference
    persistence: float  # P(interfered | the launch before it on the machine was)
    drift_share: float  # share of the clean launch variance that drifts slowly with the machine
    drift_rho: float  # that drift's correlation from one launch to the next on the machine
    cell_run_sigma: float
    device_run_sigma: float
    cells: int
    runs: int
    launches: float  # median launches per cell and run
    interference_offsets: tuple[float, ...] = ()  # log slowdowns of the interfered launches seen
    quartiles: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # level -> (q1, q3) over cells
    per_cell: tuple[tuple[float, float], ...] = ()  # each cell's (clean launch sigma, cell x run sigma)
    pair_residuals: tuple[float, ...] = ()  # d = log B - log A of real confirmation pairs free of
    #                                         interference, around their cell's Hodges-Lehmann shift
    pair_kept: float | None = None  # share of a confirmation's pairs free of interference
    pairs: int = 0  # confirmation pairs those were estimated from

    def describe(self) -> list[str]:
        q = self.quartiles

        def spread(name: str) -> str:
            return f" (quartiles over cells {q[name][0]:.4f}-{q[name][1]:.4f})" if name in q else ""

        offsets = np.expm1(np.percentile(self.interference_offsets, [10, 50, 90])) if self.interference_offsets \
            else (0, 0, 0)
        return [
            f"invoke sigma {self.invoke_sigma:.4f}{spread('invoke')}: 1.4826 x MAD of log invoke times within each "
            f"launch, median over launches; lag-1 autocorrelation {self.invoke_rho:.3f}{spread('rho')}",
            f"launch sigma {self.launch_sigma:.4f}{spread('launch')}: sd of the clean log launch medians within a run, "
            f"pooled over the {self.runs} runs of each cell ({self.launches:g} launches per cell and run)",
            f"drift: {self.drift_share:.0%} of that variance moves with the machine, launch-to-launch correlation "
            f"{self.drift_rho:.3f} (corr of clean residuals k launches apart = share x rho^k, fitted on k = 1..8)",
            f"interference: {self.interfered:.1%} of launches were more than {INTERFERENCE:.0%} above their cell's "
            f"10th percentile in the run, slowed by {offsets[1]:.0%} (10-90 %: {offsets[0]:.0%}-{offsets[2]:.0%}); "
            f"after an interfered launch the next one on the machine was too with probability {self.persistence:.2f}",
            f"cell x run sigma {self.cell_run_sigma:.4f}{spread('cell_run')}: sd of a cell's clean run means across "
            "runs, after removing each run's device shift, minus launch variance / launches (moments, floored at 0)",
            f"device x run sigma {self.device_run_sigma:.4f}: sd across runs of the device shift (median over "
            f"{self.cells} cells of the run's offset), minus what cell-level noise puts into that median",
            (f"confirmation pairs: d = log B - log A around each cell's Hodges-Lehmann shift: 1.4826 x MAD "
             f"{1.4826 * float(np.median(np.abs(self.pair_residuals))):.4f}, sd {float(np.std(self.pair_residuals)):.4f} "
             f"(heavy tails), {self.pair_kept:.0%} of pairs free of interference ({self.pairs} real pairs of "
             "`gate --confirm`; the simulation draws from these residuals)"
             if self.pairs else "confirmation pairs: none in the store; simulated from the sweep's levels "
                                "(adjacent launches share the drift)"),
        ]


def invoke_stats(samples_us: np.ndarray) -> tuple[float, float] | None:
    """(robust sigma of log invoke times, lag-1 autocorrelation) of one launch; None if too short."""
    y = np.log(np.asarray(samples_us, dtype=np.float64))
    y = y[np.isfinite(y)]
    if y.size < 20:
        return None
    sigma = 1.4826 * float(np.median(np.abs(y - np.median(y))))
    centered = np.clip(y - np.median(y), -5 * sigma - 1e-12, 5 * sigma + 1e-12)  # interrupts do not set rho
    centered = centered - centered.mean()
    denominator = float(np.dot(centered, centered))
    rho = float(np.dot(centered[:-1], centered[1:]) / denominator) if denominator > 0 else 0.0
    return sigma, rho


def estimate(launches: Mapping[tuple, Sequence[Sequence[tuple[int, float]]]],
             invokes: Sequence[np.ndarray] = ()) -> Components:
    """Variance components from `launches`: cell key -> per run (in the same run order for every
    cell) the cell's launches as (place in the machine's launch order, center in us); cells missing
    a run are left out. `invokes`: raw timings of single launches, for the invoke level."""
    runs = max((len(v) for v in launches.values()), default=0)
    cells = {k: v for k, v in launches.items() if len(v) == runs and all(len(r) >= 3 for r in v)}
    if runs < 2 or len(cells) < 2:
        raise ValueError(f"need >= 2 runs of >= 2 cells with >= 3 launches each (got {runs} runs, {len(cells)} cells)")
    launch_var, means, counts, offsets = {}, {}, [], []
    order: list[dict[int, bool]] = [{} for _ in range(runs)]  # per run: seq -> interfered
    residual: list[dict[int, float]] = [{} for _ in range(runs)]  # per run: seq -> clean log residual
    for key, per_run in cells.items():
        within, dof, run_means = 0.0, 0, []
        for r, run in enumerate(per_run):
            x = np.log(np.asarray([c for _, c in run], dtype=np.float64))
            bad = interfered(x)
            clean = x[~bad]
            within += float(np.sum((clean - clean.mean()) ** 2))
            dof += clean.size - 1
            run_means.append(clean.mean())
            counts.append(x.size)
            offsets += list(x[bad] - clean.mean())
            for (seq, _), b, value in zip(run, bad, x):
                order[r][seq] = bool(b)
                if not b:
                    residual[r][seq] = float(value - clean.mean())
        launch_var[key] = within / max(1, dof)
        means[key] = np.array(run_means)
    keys = list(cells)
    offsets_by_run = np.array([means[k] - means[k].mean() for k in keys])  # cells x runs
    shift = np.median(offsets_by_run, axis=0)  # the device's offset in each run
    n = float(np.median(counts))
    cell_run_var = {}
    for i, key in enumerate(keys):
        between = float(np.sum((offsets_by_run[i] - shift) ** 2)) / (runs - 1)
        cell_run_var[key] = max(0.0, between - launch_var[key] / n)
    typical_cell = float(np.median([launch_var[k] / n + cell_run_var[k] for k in keys]))
    # the median of m cells' offsets carries about (pi / 2) / m of one cell's variance
    device_var = max(0.0, float(np.var(shift, ddof=1)) - math.pi / 2 * typical_cell / len(keys))
    share_drift, rho_drift = _drift(residual)
    flags = [[run[s] for s in sorted(run)] for run in order]
    share = float(np.mean([f for run in flags for f in run]))
    after_bad = [b for run in flags for a, b in zip(run, run[1:]) if a]
    invoke = [s for s in (invoke_stats(x) for x in invokes) if s is not None]
    quartiles = {"launch": _q(np.sqrt(list(launch_var.values()))), "cell_run": _q(np.sqrt(list(cell_run_var.values())))}
    if invoke:
        quartiles["invoke"] = _q([s for s, _ in invoke])
        quartiles["rho"] = _q([r for _, r in invoke])
    return Components(
        invoke_sigma=float(np.median([s for s, _ in invoke])) if invoke else 0.0,
        invoke_rho=float(np.median([r for _, r in invoke])) if invoke else 0.0,
        launch_sigma=float(np.sqrt(np.median(list(launch_var.values())))),
        interfered=share, persistence=float(np.mean(after_bad)) if after_bad else share,
        drift_share=share_drift, drift_rho=rho_drift,
        cell_run_sigma=float(np.sqrt(np.median(list(cell_run_var.values())))),
        device_run_sigma=math.sqrt(device_var), cells=len(keys), runs=runs, launches=n,
        interference_offsets=tuple(float(o) for o in offsets), quartiles=quartiles,
        per_cell=tuple((math.sqrt(launch_var[k]), math.sqrt(cell_run_var[k])) for k in keys))


def _drift(residuals: list[dict[int, float]], lags: int = 8) -> tuple[float, float]:
    """(share, rho) of a slow machine drift from the clean residuals of launches k = 1..lags apart in
    the machine's order: least squares of log corr(k) = log share + k log rho (0, 0 without one)."""
    ks, logs = [], []
    for k in range(1, lags + 1):
        a = [r[s] for r in residuals for s in r if s + k in r]
        b = [r[s + k] for r in residuals for s in r if s + k in r]
        if len(a) > 10:
            c = float(np.corrcoef(a, b)[0, 1])
            if c > 0:
                ks.append(k)
                logs.append(math.log(c))
    if len(ks) < 2:
        return 0.0, 0.0
    slope, intercept = np.polyfit(ks, logs, 1)
    return min(1.0, math.exp(intercept)), min(1.0, math.exp(slope))


def pair_levels(confirmations: Sequence[tuple[Sequence[float], Sequence[float]]],
                interference: float = INTERFERENCE) -> tuple[tuple[float, ...], float, int] | None:
    """(the kept pairs' d around each confirmation's Hodges-Lehmann shift, share of pairs kept,
    pairs) from real confirmations, each given as its baseline and candidate launch centers pair
    by pair. None without a confirmation of 8 pairs or more."""
    from harness.sequential import kept_pairs

    residuals, kept, total = [], 0, 0
    for a, b in confirmations:
        if len(a) < 8:
            continue
        d = kept_pairs(np.asarray(a), np.asarray(b), interference)
        total += len(a)
        kept += d.size
        if d.size >= 3:
            walsh = (d[:, None] + d[None, :])[np.triu_indices(d.size)] / 2.0
            residuals += list(d - np.median(walsh))
    if not total or len(residuals) < 3:
        return None
    return tuple(float(r) for r in residuals), kept / total, total


def _q(values) -> tuple[float, float]:
    q1, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 75])
    return float(q1), float(q3)
