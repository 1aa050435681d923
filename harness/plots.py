"""The report's figures, drawn with matplotlib's headless backend and returned as PNG bytes: what
each variant buys (latency against size, accuracy against latency, a panel per target), the
latency distributions from the raw samples, and the trend over past runs."""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np

from harness.report import ModelTable, Target

MARKERS = "osD^vP*Xhp<>"
PANELS_PER_ROW = 3


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _panels(count: int, height: float = 3.4):
    plt = _pyplot()
    cols = min(PANELS_PER_ROW, max(1, count))
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, height * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def _style(variants: Sequence[str]) -> dict[str, dict[str, Any]]:
    colors = [f"C{i % 10}" for i in range(len(variants))]
    return {v: {"marker": MARKERS[i % len(MARKERS)], "color": colors[i]} for i, v in enumerate(variants)}


def _ms(us: float) -> float:
    return us / 1000.0


def _targets_with(table: ModelTable, metric: str) -> list[Target]:
    return [t for t in table.targets
            if any(r.cells.get(t, {}).get("status") == "ok" and r.cells[t].get(metric) is not None for r in table.rows)]


def _scatter(table: ModelTable, targets: list[Target], point, xlabel: str, ylabel: str, title: str) -> bytes:
    """One panel per target, one marker per variant at `point(row, values)` (None: not drawn)."""
    style = _style([r.variant for r in table.rows])
    fig, axes = _panels(len(targets))
    for ax, target in zip(axes, targets):
        ys: list[float] = []
        for row in table.rows:
            v = row.cells.get(target)
            xy = point(row, v) if v and v["status"] == "ok" else None
            if xy is not None:
                ax.scatter(*xy, label=row.variant, s=46, **style[row.variant])
                ys.append(xy[1])
        if ys and min(ys) > 0 and max(ys) > 20 * min(ys):  # one slow variant must not flatten the rest
            ax.set_yscale("log")
        ax.set_title(target.label(), fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    _legend(fig, axes)
    fig.suptitle(f"{table.model}: {title}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 0.95))
    return png(fig)


def size_latency(table: ModelTable) -> bytes | None:
    """p50 latency against model size, one marker per variant, one panel per target."""
    targets = _targets_with(table, "latency_p50_us")
    if not targets:
        return None
    return _scatter(table, targets,
                    lambda row, v: None if row.model_bytes is None else (row.model_bytes / 1024, _ms(v["latency_p50_us"])),
                    "model size (KB)", "p50 latency (ms)", "latency against size (lower left is better)")


def accuracy_latency(table: ModelTable) -> bytes | None:
    """Accuracy (or top-1 agreement with fp32) against p50 latency, one panel per target."""
    metric = "top1_accuracy" if table.labeled else "top1_agreement"
    targets = [t for t in _targets_with(table, metric) if t in _targets_with(table, "latency_p50_us")]
    if not targets:
        return None
    return _scatter(table, targets,
                    lambda row, v: None if v.get(metric) is None else (_ms(v["latency_p50_us"]), 100 * v[metric]),
                    "p50 latency (ms)", "top-1 accuracy (%)" if table.labeled else "top-1 agreement with fp32 (%)",
                    "accuracy against latency (upper left is better)")


def distributions(table: ModelTable, samples: dict[tuple[str, Target], np.ndarray]) -> bytes | None:
    """Box plots of every timed run per variant (whiskers at the 5th and 95th percentiles, outliers
    drawn): the noise behind each p50."""
    targets = [t for t in table.targets if any(len(samples.get((r.variant, t), ())) for r in table.rows)]
    if not targets:
        return None
    fig, axes = _panels(len(targets), height=3.8)
    for ax, target in zip(axes, targets):
        variants = [r.variant for r in table.rows if len(samples.get((r.variant, target), ()))]
        data = [np.asarray(samples[(v, target)], dtype=np.float64) / 1000.0 for v in variants]
        ax.boxplot(data, whis=(5, 95), showfliers=True, flierprops={"markersize": 1.5, "alpha": 0.3})
        ax.set_xticks(range(1, len(variants) + 1))
        ax.set_xticklabels(variants, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{target.label()} ({sum(len(d) for d in data):,} runs)", fontsize=9)
        ax.set_ylabel("latency (ms)", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(axis="y", labelsize=7)
        if data and max(float(np.max(d)) for d in data) > 20 * min(float(np.median(d)) for d in data):
            ax.set_yscale("log")
    fig.suptitle(f"{table.model}: latency of every timed run (box: quartiles; whiskers: 5th-95th percentile)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return png(fig)


def _legend(fig, axes) -> None:
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=8, title="variant",
                   title_fontsize=8)


def trend(rows: Sequence[dict[str, Any]], model: str, device: str) -> bytes | None:
    """p50 latency over past runs (Store.history rows, oldest first): a panel per (delegate,
    threads), a line per variant, a triangle where a series stepped to a new level."""
    from harness.history import series

    runs = sorted({(r["started_at"], r["run_id"]) for r in rows})
    if len(runs) < 2:
        return None
    x_of = {run_id: i for i, (_, run_id) in enumerate(runs)}
    all_series = series(rows)
    targets = list(dict.fromkeys((s.delegate, s.threads) for s in all_series))
    style = _style(list(dict.fromkeys(s.variant for s in all_series)))
    fig, axes = _panels(len(targets))
    for ax, (delegate, threads) in zip(axes, targets):
        for s in (s for s in all_series if (s.delegate, s.threads) == (delegate, threads)):
            xs = [x_of[p["run_id"]] for p in s.points]
            ys = [_ms(p["value"]) for p in s.points]
            ax.plot(xs, ys, linewidth=1, markersize=4, label=s.variant, **style[s.variant])
            for step in s.steps:
                ax.annotate(f"{step.change:+.0%}", (xs[step.index], ys[step.index]), textcoords="offset points",
                            xytext=(0, 7), ha="center", fontsize=7, color=style[s.variant]["color"])
        ax.set_title(f"{device} {delegate} {threads}t", fontsize=9)
        ax.set_xlabel("run (oldest first)", fontsize=8)
        ax.set_ylabel("p50 latency (ms)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    _legend(fig, axes)
    fig.suptitle(f"{model} on {device}: p50 latency over {len(runs)} runs (labels: steps to a new level)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 0.95))
    return png(fig)
