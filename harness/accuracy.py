"""Score what a device returned for the evaluation set: the task's metric against the labels, with
a 95 % interval, and always the fidelity to the fp32 outputs computed on the host (top-1
agreement, SQNR). Pure: arrays in, numbers out.

- Classification (integer labels): top-1 and top-k accuracy, each with Wilson's interval: on 360
  examples a 0.3-point gap sits well inside it and must not be read as a difference.
- Regression (float targets): MAE and RMSE, each with a seeded bootstrap interval over examples.
- A user metric (`metric: package.module:function` in the plan's `data:`) is called with the
  labels and the outputs (N, values) and returns a number or a mapping of names to numbers; they
  are stored as `user_<name>`."""

from __future__ import annotations

import base64
import math
from typing import Any, Callable

import numpy as np

from harness.config_checks import clip
from harness.stats import bootstrap_interval, sqnr_db, wilson_interval

UserMetric = Callable[[np.ndarray, np.ndarray], Any]
MAX_USER_METRICS = 16  # names a user metric may return: a mapping of thousands is not a metric
MAX_METRIC_NAME = 40  # characters of one name: a column heading, not a sentence


def decode(block: dict) -> tuple[str, np.ndarray]:
    """('float', (N, values)) or ('top5', (N, 5)) from the runner's accuracy block."""
    raw = base64.b64decode(block["data"])
    shape = tuple(block["shape"])
    if block["encoding"] == "float32-le-base64":
        return "float", np.frombuffer(raw, dtype="<f4").reshape(shape)
    if block["encoding"] == "top5-int32-le-base64":
        return "top5", np.frombuffer(raw, dtype="<i4").reshape(shape)
    raise ValueError(f"unknown output encoding {block['encoding']!r}")


def is_regression(labels: np.ndarray | None) -> bool:
    return labels is not None and labels.dtype.kind == "f"


def score(block: dict, labels: np.ndarray | None, reference: np.ndarray | None, top_k: int = 5) -> dict[str, float]:
    kind, outputs = decode(block)
    metrics: dict[str, float] = {"eval_examples": float(len(outputs))}
    if labels is not None and len(labels) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs for {len(labels)} labels")
    if reference is not None and reference.shape[0] != len(outputs):
        raise ValueError(f"{len(outputs)} outputs for {reference.shape[0]} reference rows")
    if is_regression(labels):
        if kind != "float":
            raise ValueError("a regression model's outputs came back as top-5 indices, not values")
        metrics.update(regression(outputs, labels))
    else:
        ranked = outputs if kind == "top5" else np.argsort(-outputs, axis=1, kind="stable")[:, :max(top_k, 1)]
        if labels is not None:
            metrics.update(classification(ranked, labels, top_k))
        if reference is not None and reference.shape[1] > 1:
            agree = int(np.sum(ranked[:, 0] == np.argmax(reference, axis=1)))
            metrics["top1_agreement"] = agree / len(outputs)
            metrics["top1_agreement_low"], metrics["top1_agreement_high"] = wilson_interval(agree, len(outputs))
    if reference is not None and kind == "float":
        metrics["sqnr_db"] = sqnr_db(reference, outputs)
    return metrics


def classification(ranked: np.ndarray, labels: np.ndarray, top_k: int) -> dict[str, float]:
    """Top-1 and top-k accuracy with Wilson intervals; `ranked` is (N, >= 1) class indices, best first."""
    n = len(labels)
    out: dict[str, float] = {}
    hits = {1: int(np.sum(ranked[:, 0] == labels))}
    if top_k > 1 and ranked.shape[1] >= top_k:
        hits[top_k] = int(np.sum((ranked[:, :top_k] == labels[:, None]).any(axis=1)))
    for k, hit in hits.items():
        name = f"top{k}_accuracy"
        out[name] = hit / n
        out[f"{name}_low"], out[f"{name}_high"] = wilson_interval(hit, n)
    return out


def regression(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """MAE and RMSE over every target value, with bootstrap intervals over examples."""
    y = targets.reshape(len(targets), -1).astype(np.float64)
    pred = outputs.reshape(len(outputs), -1).astype(np.float64)
    if pred.shape[1] != y.shape[1]:
        raise ValueError(f"{pred.shape[1]} output values per example for {y.shape[1]} target values")

    def mae(p, t):
        return float(np.mean(np.abs(p - t)))

    def rmse(p, t):
        return float(np.sqrt(np.mean((p - t) ** 2)))

    out = {}
    for name, fn in (("mae", mae), ("rmse", rmse)):
        out[name] = fn(pred, y)
        out[f"{name}_low"], out[f"{name}_high"] = bootstrap_interval(fn, (pred, y))
    return out


class MetricError(ValueError):
    """What the user's metric did wrong, said as the cell's warning: it raised, or returned
    something that is not a number or a mapping of names to numbers."""


def user_metrics(metric: UserMetric, labels: np.ndarray, block: dict) -> dict[str, float]:
    """The user's function on (labels, outputs (N, values)): a number, or a mapping of names to
    numbers. Whatever else it does (raises, returns text) is a MetricError for the caller to report."""
    outputs = np.array(decode(block)[1], copy=True)
    name = getattr(metric, "__name__", "metric")
    try:
        value = metric(labels, outputs)
    except Exception as exc:  # the user's code may raise anything
        raise MetricError(f"the metric {name} raised {type(exc).__name__}: {exc}") from exc
    values = value if isinstance(value, dict) else {name: value}
    if len(values) > MAX_USER_METRICS:
        raise MetricError(f"the metric {name} returned {len(values)} values (at most {MAX_USER_METRICS})")
    out = {}
    for key, v in values.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_METRIC_NAME or not key.isprintable():
            raise MetricError(f"the metric {name} returned the name {clip(repr(key))}: names are printable text "
                             f"of 1 to {MAX_METRIC_NAME} characters")
        try:
            number = float(v)
        except (TypeError, ValueError):
            raise MetricError(f"the metric {name} returned {type(v).__name__} for {key!r}, not a number") from None
        if not math.isfinite(number):
            raise MetricError(f"the metric {name} returned {number} for {key!r}")
        out[f"user_{key}"] = number
    return out
