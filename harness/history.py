"""A model's metric on a device over past runs: one series per configuration (variant, delegate,
threads), the runs where it moved to a new level (stats.detect_steps), CSV rows and a PNG plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from harness.stats import detect_steps

COLUMNS = ("run_id", "started_at", "git_commit", "device", "fingerprint", "variant", "delegate", "threads",
           "runtime", "value", "samples", "step")


@dataclass
class Step:
    index: int  # the first point of the new level
    run_id: str
    started_at: str
    git_commit: str | None
    change: float  # relative: new level / old level - 1


@dataclass
class Series:
    variant: str
    delegate: str
    threads: int
    points: list[dict[str, Any]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.variant} {self.delegate} {self.threads}t"


def series(rows: Sequence[dict[str, Any]], min_change: float = 0.05) -> list[Series]:
    """Group history rows (Store.history, oldest first) by configuration and find their steps."""
    import numpy as np

    grouped: dict[tuple, Series] = {}
    for row in rows:
        if row["value"] is None:
            continue
        key = (row["variant"], row["delegate"], row["threads"])
        grouped.setdefault(key, Series(*key)).points.append(row)
    for s in grouped.values():
        values = [p["value"] for p in s.points]
        levels = [0, *detect_steps(values, min_change=min_change), len(values)]
        for before, start, end in zip(levels, levels[1:], levels[2:]):
            old, new = float(np.median(values[before:start])), float(np.median(values[start:end]))
            p = s.points[start]
            s.steps.append(Step(start, p["run_id"], p["started_at"], p["git_commit"], new / old - 1.0))
    return list(grouped.values())


def rows(all_series: Sequence[Series]) -> list[tuple]:
    out = []
    for s in all_series:
        steps = {step.index: step for step in s.steps}
        for i, p in enumerate(s.points):
            runtime = " ".join(x for x in (p["runtime_name"], p["runtime_version"]) if x)
            step = f"{steps[i].change:+.1%}" if i in steps else ""
            out.append((p["run_id"], p["started_at"], p["git_commit"] or "", p["device_name"],
                        p["device_fingerprint"] or "", s.variant, s.delegate, s.threads, runtime,
                        f"{p['value']:.6g}", p["samples"] or "", step))
    return out


def plot(all_series: Sequence[Series], model: str, device: str, metric: str, out: Path) -> Path:
    """Write `figure` as a PNG at `out`."""
    import matplotlib.pyplot as plt

    from harness.files import atomic_path

    fig = figure(all_series, model, device, metric)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return out


def figure(all_series: Sequence[Series], model: str, device: str, metric: str):
    """Each configuration's metric per run (in µs or ms for _us metrics), the steps marked, the
    runs where the device's fingerprint changed drawn as dotted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted({(p["started_at"], p["run_id"]) for s in all_series for p in s.points})
    x_of = {run_id: i for i, (_, run_id) in enumerate(runs)}
    scale, unit = 1.0, metric
    if metric.endswith("_us"):
        biggest = max((p["value"] for s in all_series for p in s.points), default=0.0)
        scale, unit = (1e-3, metric[:-3] + " (ms)") if biggest >= 1000 else (1.0, metric[:-3] + " (µs)")
    fig, ax = plt.subplots(figsize=(max(6.0, min(16.0, 0.25 * len(runs) + 4)), 4.5), dpi=100)
    for s in all_series:
        xs = [x_of[p["run_id"]] for p in s.points]
        ys = [p["value"] * scale for p in s.points]
        (line,) = ax.plot(xs, ys, marker="o", markersize=3, linewidth=1, label=s.label)
        for step in s.steps:
            ax.annotate(f"{step.change:+.0%}", (xs[step.index], ys[step.index]), textcoords="offset points",
                        xytext=(0, 8), ha="center", fontsize=8, color=line.get_color())
            ax.plot([xs[step.index]], [ys[step.index]], marker="^", markersize=9, color=line.get_color())
    fingerprints = {}
    for s in all_series:
        for p in s.points:
            fingerprints.setdefault(x_of[p["run_id"]], p["device_fingerprint"])
    previous = None
    for x in sorted(fingerprints):
        if previous is not None and fingerprints[x] != previous:
            ax.axvline(x - 0.5, linestyle=":", color="grey")
        previous = fingerprints[x]
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels([started[5:16].replace("T", " ") for started, _ in runs], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(unit)
    ax.set_title(f"{model} on {device}: {metric} per run\n"
                 "triangles: a step to a new level; dotted lines: the device's fingerprint changed", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
