"""Pure statistics and accuracy scoring on numbers worked out by hand."""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest

from harness.accuracy import MetricError, decode, score, user_metrics
from harness.metrics import runner_metrics
from harness.stats import percentile, sqnr_db, summary, wilson_interval


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
    assert m["top1_accuracy"] == 0.5 and m["eval_examples"] == 4
    assert "top5_accuracy" not in m  # three classes: a top-5 would be 100 % by construction
    assert score(encode(outputs), labels, reference, top_k=2)["top2_accuracy"] == 1.0  # every label in its top two
    assert m["top1_agreement"] == 0.75
    assert m["sqnr_db"] == pytest.approx(sqnr_db(reference, outputs))


def test_wilson_interval_against_worked_values():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553..0.3662 (method 3);
    # 0 of 10 -> 0..0.2775; 10 of 10 -> 0.7225..1
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=5e-5)
    # the digits' 360 held-out images at 98 %: about +-1.5 points, so a 0.3-point gap is noise
    low, high = wilson_interval(353, 360)
    assert 0.96 < low < 0.97 and 0.99 < high < 0.995 and high - low > 10 * 0.003
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_classification_intervals_hold_their_coverage():
    """Of 2,000 simulated eval sets of 360 examples at 97.5 % accuracy, about 95 % of the intervals
    hold the true accuracy (Wilson's is close to nominal even this near 100 %)."""
    rng = np.random.default_rng(3)
    hits = rng.binomial(360, 0.975, size=2000)
    covered = np.mean([lo <= 0.975 <= hi for lo, hi in (wilson_interval(int(k), 360) for k in hits)])
    assert 0.93 < covered < 0.97


def test_regression_metrics_and_bootstrap_intervals():
    targets = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    outputs = np.array([[1.5], [2.0], [2.0], [4.0]], np.float32)
    m = score(encode(outputs), targets, outputs)
    assert m["mae"] == pytest.approx(0.375) and m["rmse"] == pytest.approx(math.sqrt(1.25 / 4))
    assert m["mae_low"] <= m["mae"] <= m["mae_high"] and m["rmse_low"] <= m["rmse"] <= m["rmse_high"]
    assert m["sqnr_db"] == math.inf and "top1_accuracy" not in m and "top1_agreement" not in m
    assert score(encode(outputs), targets, outputs) == m  # seeded: the same interval twice
    with pytest.raises(ValueError, match="2 output values per example for 1 target"):
        score(encode(np.zeros((4, 2))), targets, None)


def test_a_user_metric_gives_numbers_or_a_clear_error():
    outputs = encode(np.array([[0.1, 0.9], [0.8, 0.2]], np.float32))
    labels = np.array([1, 1])

    def hits(y, out):
        return {"hits": int(np.sum(out.argmax(axis=1) == y)), "n": len(y)}

    def words(y, out):
        return "good"

    assert user_metrics(hits, labels, outputs) == {"user_hits": 1.0, "user_n": 2.0}
    assert user_metrics(lambda y, out: np.float32(0.5), labels, outputs) == {"user_<lambda>": 0.5}
    with pytest.raises(MetricError, match="the metric words returned str for 'words', not a number"):
        user_metrics(words, labels, outputs)

    def broken(y, out):
        return {"hits": 1} if out.shape == (3,) else {}["missing"]

    with pytest.raises(MetricError, match="^the metric broken raised KeyError: 'missing'$"):
        user_metrics(broken, labels, outputs)
    for bad in ({"x" * 41: 1.0}, {"": 1.0}, {3: 1.0}, {"a\nb": 1.0}):
        with pytest.raises(ValueError, match="names are printable text of 1 to 40 characters"):
            user_metrics(lambda y, out, bad=bad: bad, labels, outputs)
    assert user_metrics(lambda y, out: {"x" * 40: 1}, labels, outputs) == {"user_" + "x" * 40: 1.0}


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
