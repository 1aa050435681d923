"""How often does `harness gate` flag a slowdown, and how often does it cry wolf?

By simulation, with timings shaped like a device's: lognormal around a median (CV 2, 5 or 10 %),
plus occasional outliers as from interrupts and preemption (a run 1.5-3x slower, with probability
`--outliers`). For each noise level, samples per side (10...100), threshold (0.02, 0.05) and true
slowdown (none, 2, 5, 10 %), it runs the gate's own `judge` on fresh baseline and candidate
samples `--reps` times and prints the fraction called a regression: with no slowdown that is the
false-alarm rate, otherwise the power. A threshold of T flags a true slowdown of exactly T only
about half the time by construction (the observed ratio lands on either side of 1 + T), so a
gate meant to catch 5 % regressions needs a threshold below 5 %.

A second table adds run-to-run noise (each run off by a factor, as a VM with neighbours or a
phone in another thermal state is) and shows what the spread of earlier runs (`--history-runs`)
does to false alarms and power.

The last line is the headline for such a gate (threshold 0.02, alpha 0.01) facing a 5 % slowdown
at CV 5 % with 50 samples a side: `power=... false_alarm=...` (goal: power >= 0.95, false alarms
<= 0.01).

    .venv/bin/python benchmarks/gate_power.py [--reps 400] [--headline-reps 4000]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.gate import Settings, judge  # noqa: E402

CVS = (0.02, 0.05, 0.10)
SIZES = (10, 20, 50, 100)
THRESHOLDS = (0.02, 0.05)
SLOWDOWNS = (0.0, 0.02, 0.05, 0.10)
MEDIAN_US = 1000.0


def timings(rng: np.random.Generator, n: int, median: float, cv: float, outliers: float) -> np.ndarray:
    sigma = math.sqrt(math.log1p(cv * cv))  # lognormal with this coefficient of variation
    x = median * np.exp(rng.normal(0.0, sigma, n))
    hit = rng.random(n) < outliers
    x[hit] *= rng.uniform(1.5, 3.0, int(hit.sum()))
    return x


def flag_rate(rng: np.random.Generator, settings: Settings, n: int, cv: float, slowdown: float, outliers: float,
              reps: int) -> float:
    flagged = 0
    for _ in range(reps):
        base = timings(rng, n, MEDIAN_US, cv, outliers)
        cand = timings(rng, n, MEDIAN_US * (1.0 + slowdown), cv, outliers)
        flagged += judge(base, cand, settings)[0] == "regression"
    return flagged / reps


def run_noise_rates(rng: np.random.Generator, settings: Settings, slowdown: float, run_cv: float, outliers: float,
                    reps: int, history_runs: int) -> tuple[float, float]:
    """(rate without history, rate with `history_runs` earlier runs) of `regression` verdicts when
    every run is also off by a factor drawn once per run (run-to-run noise, CV `run_cv`), 50
    samples a side at CV 5 %."""
    from harness.gate import run_noise

    sigma_run = math.sqrt(math.log1p(run_cv * run_cv))
    plain = informed = 0
    for _ in range(reps):
        shift = np.exp(rng.normal(0.0, sigma_run, history_runs + 2))  # earlier runs, baseline, candidate
        base = timings(rng, 50, MEDIAN_US * shift[-2], 0.05, outliers)
        cand = timings(rng, 50, MEDIAN_US * (1.0 + slowdown) * shift[-1], 0.05, outliers)
        earlier = [float(np.median(timings(rng, 50, MEDIAN_US * f, 0.05, outliers))) for f in shift[:-2]]
        plain += judge(base, cand, settings)[0] == "regression"
        informed += judge(base, cand, settings, run_noise(earlier))[0] == "regression"
    return plain / reps, informed / reps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=400, help="simulated gates per table cell (default 400)")
    parser.add_argument("--headline-reps", type=int, default=4000, help="simulated gates for the headline")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--outliers", type=float, default=0.02, help="probability of an outlying run (default 0.02)")
    parser.add_argument("--seed", type=int, default=20261202)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.monotonic()
    print(f"gate power by simulation: lognormal timings, {args.outliers:.0%} outliers at 1.5-3x, alpha {args.alpha:g}, "
          f"{args.reps} gates per cell; the fraction of gates that said `regression`")
    header = ("CV", "samples", "threshold", "false alarm (0 %)", "power at 2 %", "power at 5 %", "power at 10 %")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cv in CVS:
        for n in SIZES:
            for threshold in THRESHOLDS:
                settings = Settings(threshold=threshold, alpha=args.alpha, resamples=500)
                rates = [flag_rate(rng, settings, n, cv, s, args.outliers, args.reps) for s in SLOWDOWNS]
                print(f"| {cv:.0%} | {n} | {threshold:g} | " + " | ".join(f"{r:.3f}" for r in rates) + " |",
                      flush=True)
    print()
    print(f"with run-to-run noise (every run off by one factor; CV 5 % within a run, 50 samples a side, threshold "
          f"0.02): `regression` rate without / with the spread of 10 earlier runs (--history-runs), {args.reps} gates")
    print("| run-to-run CV | false alarm (0 %) | power at 5 % | power at 10 % | power at 30 % |")
    print("|---|---|---|---|---|")
    for run_cv in (0.0, 0.03, 0.10):
        settings = Settings(threshold=0.02, alpha=args.alpha, resamples=500)
        rates = [run_noise_rates(rng, settings, s, run_cv, args.outliers, args.reps, 10) for s in (0.0, 0.05, 0.10, 0.30)]
        print(f"| {run_cv:.0%} | " + " | ".join(f"{a:.3f} / {b:.3f}" for a, b in rates) + " |", flush=True)
    settings = Settings(threshold=0.02, alpha=args.alpha, resamples=500)
    power = flag_rate(rng, settings, 50, 0.05, 0.05, args.outliers, args.headline_reps)
    false_alarm = flag_rate(rng, settings, 50, 0.05, 0.0, args.outliers, args.headline_reps)
    print(f"(table and headline in {time.monotonic() - started:.0f} s; headline over {args.headline_reps} gates each: "
          "threshold 0.02, alpha 0.01, 5 % slowdown, CV 5 %, 50 samples a side)")
    print(f"power={power:.3f} false_alarm={false_alarm:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
