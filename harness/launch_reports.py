"""A cell's record from its launches' reports (harness/measure.py collects them): runtime and
telemetry, the first launch's description of the model, every launch's timings, the latency
metrics over all of them, and accuracy from the launch that ran the evaluation set."""

from __future__ import annotations

from typing import Any

from harness.accuracy import MetricError, score, user_metrics
from harness.build import ModelBuild
from harness.metrics import runner_metrics
from harness.store import CellRecord

# what a launch's report carries that describes the cell, not the launch (taken from its first launch)
CELL_DETAILS = ("coverage", "inputs", "outputs", "python", "numpy", "model", "argv", "edgetpu")


def record_reports(record: CellRecord, reports: list[dict[str, Any]], build: ModelBuild) -> None:
    """The cell's record from its launches' reports: runtime, telemetry before the first and after
    the last, the first launch's description of the model, every launch's timings, and accuracy
    from the launch that ran the evaluation set. A launch that reported an error fails the cell; a
    cell that already has its reason (a device fault) keeps it and stays failed."""
    first, last = reports[0], reports[-1]
    runtime = first.get("runtime") or {}
    record.runtime_name, record.runtime_version = runtime.get("name"), runtime.get("version")
    record.runner_sha256 = first.get("runner_sha256")
    for when, report in (("before", first), ("after", last)):
        t = (report.get("telemetry") or {}).get(when) or {}
        setattr(record, f"temp_{when}_c", t.get("temp_c"))
        freqs = t.get("freq_khz") or []
        setattr(record, f"freq_{when}_khz", sum(freqs) / len(freqs) if freqs else None)
    for report in reports:
        record.warnings += [w for w in report.get("warnings") or [] if w not in record.warnings]
    details = {k: first.get(k) for k in CELL_DETAILS if first.get(k) is not None}
    details["telemetry"] = {"before": (first.get("telemetry") or {}).get("before"),
                            "after": (last.get("telemetry") or {}).get("after")}
    details["launches"] = [{k: r.get(k) for k in ("init_us", "first_inference_us", "timed_seconds", "warmup")}
                           for r in reports]
    if any(r.get("benchmark_model") is not None for r in reports):  # each run's parsed benchmark_model output
        details["benchmark_model"] = [run for r in reports for run in r.get("benchmark_model") or []]
    record.details = {**(record.details or {}), **details}
    if record.reason is not None:  # failed by a fault after some good launches: stays failed
        return
    failed = next((i for i, r in enumerate(reports) if r.get("error")), None)
    if failed is not None:  # a launch after good ones failed: say which
        error = reports[failed]["error"]
        record.reason = f"{error['stage']} failed: {error['message']}" + (f" (launch {failed + 1})" if failed else "")
        record.details["error"] = error
        return
    record.status = "ok"
    record.launches = [r["_launch"] for r in reports]
    record.metrics.update(launch_metrics(reports))
    accuracy = next((r["accuracy"] for r in reports if r.get("accuracy") is not None), None)
    source = next((r.get("accuracy_source") for r in reports if r.get("accuracy") is not None), None)
    if accuracy is None:
        return
    if "error" in accuracy:
        record.warnings.append(f"accuracy not measured: {accuracy['error']}")
        return
    try:
        record.metrics.update(score(accuracy, build.labels, build.reference, build.top_k))
        record.accuracy_source = source or "device"
    except ValueError as exc:
        record.warnings.append(f"accuracy not scored: {exc}")
        return
    if build.metric is not None and build.labels is not None:
        try:  # the user's code: whatever it does wrong is a warning on the cell, never its failure
            record.metrics.update(user_metrics(build.metric, build.labels, accuracy))
        except MetricError as exc:
            record.warnings.append(str(exc))


def launch_metrics(reports: list[dict[str, Any]]) -> dict[str, float]:
    """Latency over every launch's timings; init and first inference as the median launch's;
    peak memory the largest; coverage from the first launch; the spread of the launch medians."""
    import numpy as np

    pooled = {**reports[0], "samples_us": [x for r in reports for x in r["samples_us"]]}
    for name in ("init_us", "first_inference_us", "rss_before_mb", "rss_after_init_mb"):
        values = [r[name] for r in reports if r.get(name) is not None]
        pooled[name] = float(np.median(values)) if values else None
    peaks = [r["peak_rss_mb"] for r in reports if r.get("peak_rss_mb") is not None]
    pooled["peak_rss_mb"] = max(peaks) if peaks else None
    metrics = runner_metrics(pooled)
    centers = [float(np.median(r["samples_us"])) for r in reports if r["samples_us"]]
    metrics["launches"] = float(len(reports))
    if len(centers) > 1 and min(centers) > 0:
        metrics["launch_cv"] = float(np.std(np.log(centers), ddof=1))
    return metrics


def outcome(record: CellRecord, labeled: bool) -> str:
    if record.status != "ok":
        return f"{record.status.upper()}: {record.reason}"
    m = record.metrics
    text = f"p50 {m['latency_p50_us'] / 1000:.3f} ms ({int(m['samples_count'])} runs in {int(m['launches'])} launches)"
    if labeled and "top1_accuracy" in m:
        text += f", top-1 {100 * m['top1_accuracy']:.2f} %"
    elif "top1_agreement" in m:
        text += f", agreement {100 * m['top1_agreement']:.0f} %"
    return text
