"""Pure statistics and accuracy scoring on numbers worked out by hand."""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest

from harness.accuracy import decode, score
from harness.metrics import runner_metrics
from harness.stats import percentile, sqnr_db, summary


def test_summary_percentiles():
    s = summary([10.0, 20.0, 30.0, 40.0, 50.0])
    assert s["latency_p50_us"] == 30.0 and s["latency_p90_us"] == 46.0  # linear between 40 and 50
    assert s["latency_mean_us"] == 30.0 and s["latency_std_us"] == pytest.approx(15.8113883)
    assert (s["latency_min_us"], s["latency_max_us"], s["samples_count"]) == (10.0, 50.0, 5.0)
    assert percentile([5.0], 90) == 5.0
    with pytest.raises(ValueError):
        summary([])


def test_sqnr():
    reference = np.array([3.0, 4.0])  # signal power 25
    assert sqnr_db(reference, reference + np.array([0.3, 0.4])) == pytest.approx(20.0)  # noise 0.25
    assert sqnr_db(reference, reference) == math.inf


def encode(array: np.ndarray, encoding="float32-le-base64", dtype="<f4") -> dict:
    return {"encoding": encoding, "shape": list(array.shape), "count": len(array),
            "data": base64.b64encode(array.astype(dtype).tobytes()).decode()}


def test_score_accuracy_and_fidelity():
    outputs = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]], np.float32)
    labels = np.array([1, 0, 1, 1])
    reference = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.3, 0.6, 0.1]], np.float32)
    m = score(encode(outputs), labels, reference)
    assert m["top1_accuracy"] == 0.5 and m["top5_accuracy"] == 1.0 and m["eval_examples"] == 4
    assert m["top1_agreement"] == 0.75
    assert m["sqnr_db"] == pytest.approx(sqnr_db(reference, outputs))


def test_score_top5_encoding_has_no_sqnr():
    top5 = np.array([[4, 1, 2, 3, 0], [2, 0, 1, 3, 4]])
    m = score(encode(top5, "top5-int32-le-base64", "<i4"), np.array([4, 0]), np.eye(5)[[4, 1]])
    assert m["top1_accuracy"] == 0.5 and m["top5_accuracy"] == 1.0 and m["top1_agreement"] == 0.5
    assert "sqnr_db" not in m
    with pytest.raises(ValueError, match="unknown output encoding"):
        decode({"encoding": "png", "shape": [1], "data": ""})


def test_runner_metrics():
    report = {"samples_us": [1.0, 2.0, 3.0], "init_us": 500.0, "first_inference_us": 9.0, "peak_rss_mb": 40.0,
              "rss_before_mb": None, "warmup": {"avg_us": 2.5},
              "coverage": {"nodes_delegated": 6, "nodes_total": 11, "partitions": 1}}
    m = runner_metrics(report)
    assert m["latency_p50_us"] == 2.0 and m["init_us"] == 500.0 and m["warmup_avg_us"] == 2.5
    assert (m["nodes_delegated"], m["nodes_total"], m["delegate_partitions"]) == (6.0, 11.0, 1.0)
    assert "rss_before_mb" not in m
