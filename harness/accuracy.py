"""Score what the runner returned for the evaluation set: accuracy against labels, and fidelity
(top-1 agreement, SQNR) against the fp32 outputs computed on the host. Pure: arrays in, numbers out."""

from __future__ import annotations

import base64

import numpy as np

from harness.stats import sqnr_db


def decode(block: dict) -> tuple[str, np.ndarray]:
    """('float', (N, values)) or ('top5', (N, 5)) from the runner's accuracy block."""
    raw = base64.b64decode(block["data"])
    shape = tuple(block["shape"])
    if block["encoding"] == "float32-le-base64":
        return "float", np.frombuffer(raw, dtype="<f4").reshape(shape)
    if block["encoding"] == "top5-int32-le-base64":
        return "top5", np.frombuffer(raw, dtype="<i4").reshape(shape)
    raise ValueError(f"unknown output encoding {block['encoding']!r}")


def score(block: dict, labels: np.ndarray | None, reference: np.ndarray | None) -> dict[str, float]:
    kind, outputs = decode(block)
    top5 = outputs if kind == "top5" else np.argsort(-outputs, axis=1, kind="stable")[:, :5]
    metrics: dict[str, float] = {"eval_examples": float(len(outputs))}
    if labels is not None:
        if len(labels) != len(outputs):
            raise ValueError(f"{len(outputs)} outputs for {len(labels)} labels")
        metrics["top1_accuracy"] = float(np.mean(top5[:, 0] == labels))
        metrics["top5_accuracy"] = float(np.mean((top5 == labels[:, None]).any(axis=1)))
    if reference is not None:
        if reference.shape[0] != len(outputs):
            raise ValueError(f"{len(outputs)} outputs for {reference.shape[0]} reference rows")
        metrics["top1_agreement"] = float(np.mean(top5[:, 0] == np.argmax(reference, axis=1)))
        if kind == "float":
            metrics["sqnr_db"] = sqnr_db(reference, outputs)
    return metrics
