"""The on-device runner, run for real (LiteRT, subprocess) on real converted models: its output
schema, the measurement protocol, quantized inputs, delegate coverage and its failure reports."""

from __future__ import annotations

import json
import subprocess
import sys
import venv

import numpy as np
import pytest

from devices.base import RUNNER_PATH, Job, MeasurementProtocol
from harness.accuracy import decode
from harness.errors import RuntimeMissing

FAST = MeasurementProtocol(warmup_runs=1, warmup_min_secs=0.05, num_runs=10, min_secs=0.05, max_secs=5)


def run_runner(*args: str, python: str = sys.executable):
    result = subprocess.run([python, str(RUNNER_PATH), *args], capture_output=True, text=True, timeout=120)
    return result.returncode, json.loads(result.stdout.strip().splitlines()[-1]), result


def test_output_schema(digits_build, local_device):
    build = digits_build[0]
    report = local_device.measure(Job(build.artifacts["fp32"].path, "xnnpack", 2, FAST, 60, build.eval_path))
    assert report["schema_version"] == 1 and report["error"] is None
    assert report["runtime"]["name"] == "ai_edge_litert" and report["runtime"]["version"]
    assert report["delegate"] == "xnnpack" and report["num_threads"] == 2
    assert report["protocol"] == {"warmup_runs": 1, "warmup_min_secs": 0.05, "num_runs": 10,
                                  "min_secs": 0.05, "max_secs": 5.0}
    assert len(report["samples_us"]) >= 10 and all(s > 0 for s in report["samples_us"])
    assert report["init_us"] > 0 and report["first_inference_us"] > 0
    assert report["warmup"]["runs"] >= 1 and report["warmup"]["seconds"] >= 0.05
    assert report["peak_rss_mb"] >= report["rss_after_init_mb"] > 0
    coverage = report["coverage"]
    assert coverage["partitions"] >= 1 and 0 < coverage["nodes_delegated"] <= coverage["nodes_total"]
    assert coverage["nodes_delegated"] + sum(coverage["undelegated_ops"].values()) == coverage["nodes_total"]
    assert report["inputs"][0]["shape"] == [1, 28, 28] and report["inputs"][0]["dtype"] == "float32"
    kind, outputs = decode(report["accuracy"])
    assert kind == "float" and outputs.shape == (len(build.labels), 10)
    assert np.allclose(outputs.sum(axis=1), 1.0, atol=1e-4)  # softmax rows
    assert np.mean(outputs.argmax(axis=1) == build.labels) > 0.9
    for when in ("before", "after"):
        assert set(report["telemetry"][when]) >= {"temp_c", "zones", "freq_khz"}


def test_cpu_delegate_runs_builtin_kernels_without_xnnpack(digits_build, local_device):
    report = local_device.measure(Job(digits_build[0].artifacts["fp32"].path, "cpu", 1, FAST, 60))
    assert report["coverage"]["nodes_delegated"] == 0 and report["coverage"]["partitions"] == 0
    assert report["accuracy"] is None  # no --inputs, no outputs


def test_protocol_min_secs_adds_runs_and_max_secs_stops_them(digits_build, local_device):
    model = digits_build[0].artifacts["fp32"].path
    more = local_device.measure(Job(model, "cpu", 1, MeasurementProtocol(0, 0, 5, 0.3, 10), 60))
    assert len(more["samples_us"]) > 5 and more["timed_seconds"] >= 0.3
    capped = local_device.measure(Job(model, "cpu", 1, MeasurementProtocol(0, 0, 10**9, 0, 0.2), 60))
    assert 1 <= len(capped["samples_us"]) < 10**9 and 0.2 <= capped["timed_seconds"] < 1.0
    assert capped["warmup"]["runs"] == 0


def test_int8_inputs_are_quantized_with_scale_and_zero_point(digits_build, local_device):
    build = digits_build[0]
    report = local_device.measure(Job(build.artifacts["int8"].path, "cpu", 1, FAST, 60, build.eval_path))
    spec = report["inputs"][0]
    assert spec["dtype"] == "int8" and spec["scale"] > 0
    assert report["outputs"][0]["dtype"] == "int8"
    kind, outputs = decode(report["accuracy"])
    assert kind == "float" and outputs.min() >= 0.0 and outputs.max() <= 1.0  # dequantized softmax
    assert np.mean(outputs.argmax(axis=1) == build.labels) > 0.9


def test_not_a_model_is_a_load_failure(tmp_path):
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"\x00" * 64)
    code, report, _ = run_runner("--graph", str(bogus))
    assert code == 1 and report["error"]["stage"] == "load" and report["error"]["kind"] == "model_error"


def test_missing_edgetpu_runtime_is_reported_not_crashed(digits_build):
    code, report, _ = run_runner("--graph", str(digits_build[0].artifacts["int8"].path), "--delegate", "edgetpu")
    assert code == 3 and report["error"]["kind"] == "edgetpu_runtime_missing"
    assert "libedgetpu" in report["error"]["message"] and "pycoral is not installed" in report["error"]["message"]


def test_requested_runtime_absent(digits_build):
    code, report, _ = run_runner("--graph", str(digits_build[0].artifacts["fp32"].path), "--runtime", "tflite_runtime")
    assert code == 3 and report["error"]["kind"] == "runtime_missing" and "pip install" in report["install_hint"]


def test_device_without_runtime_raises_runtime_missing(digits_build, tmp_path):
    from devices.local import LocalConfig, LocalDevice

    venv.create(tmp_path / "bare", with_pip=False)  # a Python with no numpy and no TFLite runtime
    device = LocalDevice(LocalConfig(name="bare", python=str(tmp_path / "bare/bin/python"),
                                     workdir=str(tmp_path / "device")))
    with pytest.raises(RuntimeMissing, match="install with: python3 -m pip install"):
        device.measure(Job(digits_build[0].artifacts["fp32"].path, "cpu", 1, FAST, 60))
    health = device.health()
    assert health.reachable and health.runtime is None and "pip install" in health.detail


def test_probe_reports_fingerprint_and_runtime():
    code, report, _ = run_runner("--probe")
    assert code == 0 and report["runtime"]["name"] == "ai_edge_litert"
    fp = report["fingerprint"]
    assert fp["machine"] and fp["kernel"] and fp["cores"] >= 1 and fp["python"]


def test_bad_arguments_exit_2():
    result = subprocess.run([sys.executable, str(RUNNER_PATH), "--num_runs", "5"], capture_output=True, text=True)
    assert result.returncode == 2 and "--graph is required" in result.stderr
