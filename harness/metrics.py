"""Metric names (units in the names or beside them) and the runner's report turned into metrics."""

from __future__ import annotations

from typing import Any

from harness.stats import summary

UNITS = {
    "latency_p50_us": "us", "latency_p90_us": "us", "latency_mean_us": "us", "latency_std_us": "us",
    "latency_min_us": "us", "latency_max_us": "us", "samples_count": "count",
    "init_us": "us", "first_inference_us": "us", "warmup_avg_us": "us",
    "peak_rss_mb": "MB", "rss_before_mb": "MB", "rss_after_init_mb": "MB",
    "model_bytes": "bytes", "model_gzip_bytes": "bytes", "sparsity": "ratio",
    "top1_accuracy": "ratio", "top5_accuracy": "ratio", "top1_agreement": "ratio", "sqnr_db": "dB",
    "top1_accuracy_low": "ratio", "top1_accuracy_high": "ratio", "top5_accuracy_low": "ratio",
    "top5_accuracy_high": "ratio", "top1_agreement_low": "ratio", "top1_agreement_high": "ratio",
    "mae": "output unit", "mae_low": "output unit", "mae_high": "output unit", "rmse": "output unit",
    "rmse_low": "output unit", "rmse_high": "output unit",
    "eval_examples": "count", "calibration_examples": "count", "fine_tune_examples": "count",
    "nodes_delegated": "count", "nodes_total": "count", "delegate_partitions": "count",
    "edgetpu_ops": "count", "cpu_ops": "count", "edgetpu_subgraphs": "count", "edgetpu_model_bytes": "bytes",
    "edgetpu_on_chip_bytes": "bytes", "edgetpu_off_chip_bytes": "bytes", "cooldown_wait_s": "s",
}


def runner_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Latency statistics, init, first inference, memory and delegate coverage of a runner report."""
    metrics = summary(report["samples_us"])
    for name in ("init_us", "first_inference_us", "peak_rss_mb", "rss_before_mb", "rss_after_init_mb"):
        if report.get(name) is not None:
            metrics[name] = float(report[name])
    warmup = report.get("warmup") or {}
    if warmup.get("avg_us") is not None:
        metrics["warmup_avg_us"] = float(warmup["avg_us"])
    coverage = report.get("coverage")
    if coverage:
        metrics["nodes_delegated"] = float(coverage["nodes_delegated"])
        metrics["nodes_total"] = float(coverage["nodes_total"])
        metrics["delegate_partitions"] = float(coverage["partitions"])
    return metrics
