"""Accuracy on the phone, per delegate, without Python: benchmark_model's input files and output
file (devices/android/outputs.py) — the command line and the file formats, then against the ADB
peer whose stand-in really runs LiteRT: outputs from the phone, a corrupted NNAPI driver showing
in its cells only, and the host's reference kernels only when the phone cannot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import harness_cli, inventory_yaml, write
from devices.android import outputs
from devices.android.outputs import (TensorSpec, accuracy_block, batchable, chunks, input_bytes, outputs_argv,
                                     parse_output_file)
from devices.base import Job, MeasurementProtocol, score_on_host
from harness.accuracy import decode, score
from test_ssh_sweep import _cells

FAST = MeasurementProtocol(warmup_runs=1, warmup_min_secs=0.02, num_runs=5, min_secs=0.02, max_secs=2.0,
                           repetitions=2)
FLOAT_IN = TensorSpec("serving_default_input:0", (1, 8, 8, 1), (-1, 8, 8, 1), "float32")
INT8_IN = TensorSpec("x", (1, 4), (-1, 4), "int8", 0.5, -3)
INT8_OUT = TensorSpec("logits", (1, 3), (-1, 3), "int8", 0.25, 10)
FLOAT_OUT = TensorSpec("aux", (1, 2), (-1, 2), "float32")


# -- the command line and the files ---------------------------------------------------------------


@pytest.mark.parametrize("delegate, flags", [("cpu", ["--use_xnnpack=false"]),
                                             ("nnapi", ["--use_nnapi=true", "--nnapi_accelerator_name=npu"])])
def test_outputs_argv(delegate, flags):
    job = Job(__file__, delegate, 2, FAST, 60.0, delegate_options={"nnapi_accelerator_name": "npu"})
    argv = outputs_argv("/w/bm", "/w/m.tflite", job, "0xF0", FLOAT_IN, 37, "/w/in.bin", "/w/.out.bin")
    # a name with ':' is given as '_': older parsers split NAME:FILE on every ':'
    assert argv == ["taskset", "f0", "/w/bm", "--graph=/w/m.tflite", "--num_threads=2", "--warmup_runs=0",
                    "--warmup_min_secs=0", "--num_runs=1", "--min_secs=0", "--input_layer=serving_default_input_0",
                    "--input_layer_shape=37,8,8,1",
                    "--input_layer_value_files=serving_default_input_0:/w/in.bin", "--output_filepath=/w/.out.bin",
                    *flags]
    assert outputs_argv("bm", "g", job, None, INT8_IN, 1, "i", "o")[0] == "bm"


def test_input_bytes_are_quantized_little_endian():
    x = np.array([[0.0, 1.0, -2.0, 100.0]], dtype=np.float32)
    assert np.frombuffer(input_bytes(x, INT8_IN), np.int8).tolist() == [-3, -1, -7, 127]  # x/0.5 - 3, clipped
    floats = np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1)
    assert input_bytes(floats, FLOAT_IN) == floats.astype("<f4").tobytes()


def test_output_file_is_every_output_in_order():
    logits = np.array([[10, 14, 6], [12, 10, 30]], dtype=np.int8)
    aux = np.ones((2, 2), dtype="<f4")
    data = logits.tobytes() + aux.tobytes()
    y = parse_output_file(data, [INT8_OUT, FLOAT_OUT], 2)  # output 0, dequantized: (q - 10) * 0.25
    assert y.dtype == np.float32 and y.tolist() == [[0.0, 1.0, -1.0], [0.5, 0.0, 5.0]]
    with pytest.raises(ValueError, match=r"the output file has 21 bytes; 2 output\(s\) of 2 example\(s\) make 22"):
        parse_output_file(data[:-1], [INT8_OUT, FLOAT_OUT], 2)


def test_runs_batch_only_what_the_model_lets_resize():
    assert batchable([FLOAT_IN], [FLOAT_OUT])
    assert not batchable([TensorSpec("x", (1, 4), (1, 4), "float32")], [FLOAT_OUT])  # fixed batch
    assert not batchable([FLOAT_IN], [TensorSpec("y", (3,), (3,), "float32")])  # an output without the batch
    assert chunks(5, 4, batch=False) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert chunks(5, 4, batch=True) == [(0, 5)]
    assert chunks(5, outputs.CHUNK_BYTES // 2, batch=True) == [(0, 2), (2, 4), (4, 5)]


def test_accuracy_block_is_the_runners():
    y = np.array([[0.5, 2.0], [1.0, -1.0]], dtype=np.float32)
    kind, back = decode(accuracy_block(y))
    assert kind == "float" and back.tolist() == y.tolist() and accuracy_block(y)["count"] == 2
    kind, top = decode(accuracy_block(y, max_values=3))
    assert kind == "top5" and top.tolist() == [[1, 0], [0, 1]]


# -- on the ADB peer ------------------------------------------------------------------------------


@pytest.fixture
def peer(tmp_path):
    from tests.peers.adbd import start_adb_peer

    with start_adb_peer(tmp_path / "phone") as running:
        yield running


def _phone(peer, tmp_path, **extra):
    from devices.adb import ADBConfig, ADBDevice

    return ADBDevice(ADBConfig(**{"name": "pixel", "host": peer.host, "port": peer.port,
                                  "adbkey": str(tmp_path / "keys" / "adbkey"),
                                  "benchmark_model": str(peer.benchmark_model_host_path), "cpu_mask": "f0",
                                  "connect_timeout_s": 5.0, "auth_timeout_s": 5.0, "retry_backoff_s": 0.1,
                                  **extra}))


def _top1(block, labels) -> np.ndarray:
    return np.argmax(decode(block)[1], axis=1) == labels


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_each_delegate_gives_its_own_outputs_on_the_phone(peer, digits_build, tmp_path, variant):
    build = digits_build[0]
    model = build.artifacts[variant].path
    host = score_on_host(model, build.eval_path, 120.0)
    device = _phone(peer, tmp_path)
    try:
        reports = {d: device.measure(Job(model, d, 1, FAST, 120.0, inputs=build.eval_path))
                   for d in ("cpu", "xnnpack")}
        peer.delegate_failure = {"nnapi": "corrupt_outputs"}
        reports["nnapi"] = device.measure(Job(model, "nnapi", 1, FAST, 120.0, inputs=build.eval_path))
    finally:
        device.close()
    for delegate, report in reports.items():
        assert report["error"] is None and report["accuracy_source"] == "device", (delegate, report["warnings"])
        assert report["accuracy"]["count"] == host["count"] and report["samples_us"][0] > 0
    for delegate in ("cpu", "xnnpack"):  # the phone's kernels agree with the host's reference kernels
        assert np.mean(_top1(reports[delegate]["accuracy"], build.labels)) == pytest.approx(
            np.mean(_top1(host, build.labels)), abs=0.01)
    assert np.mean(_top1(reports["nnapi"]["accuracy"], build.labels)) < 0.3  # the broken driver shows
    runs = [c for c in peer.commands if "--output_filepath=" in c]
    assert len(runs) == 3 and all(" taskset f0 " in c and "--input_layer_value_files=" in c for c in runs)
    assert all("--use_nnapi=true" in c for c in runs[2:])  # the delegate of the cell, not the host's
    assert not list(peer.device_path_to_host("/data/local/tmp/harness").glob(".outputs-*"))  # removed


def test_the_host_scores_only_when_the_phone_cannot(peer, digits_build, tmp_path, monkeypatch):
    build = digits_build[0]
    job = Job(build.artifacts["fp32"].path, "xnnpack", 1, FAST, 120.0, inputs=build.eval_path)
    monkeypatch.setattr(outputs, "MAX_RUNS", 2)
    monkeypatch.setattr(outputs, "CHUNK_BYTES", 1024)
    device = _phone(peer, tmp_path)
    try:
        report = device.measure(job)
    finally:
        device.close()
    assert report["accuracy_source"] == "host" and report["accuracy"]["count"] > 0
    assert any("accuracy scored on the host: the phone's benchmark_model could not: its " in w
               and "runs of benchmark_model (at most 2 per cell" in w for w in report["warnings"])
    assert not [c for c in peer.commands if "--output_filepath=" in c]  # refused before running anything


def test_a_wrong_value_file_is_the_tools_fatal_error(peer, digits_build, tmp_path):
    from devices.android.outputs import PhoneOutputs, Unavailable

    build = digits_build[0]
    model = build.artifacts["fp32"].path
    device = _phone(peer, tmp_path)
    short = tmp_path / "short.bin"
    short.write_bytes(b"\0" * 12)
    try:
        phone_outputs = PhoneOutputs(device.adb, device.tool, None)
        (tensor,), _ = outputs.model_specs(model)
        with pytest.raises(Unavailable, match=r"benchmark_model exited 134: .*The size of .* is 12 bytes. "
                                              r"It should be \d+ bytes."):
            phone_outputs._chunk(Job(model, "cpu", 1, FAST, 60.0), tensor, 1, short)
    finally:
        device.close()


# -- a sweep ----------------------------------------------------------------------------------------


def test_sweep_shows_a_corrupt_nnapi_driver_in_its_cells_only(peer, digits_build, session_cache, tmp_path):
    build = digits_build[0]
    peer.delegate_failure = {"nnapi": "corrupt_outputs"}
    phone = {"name": "pixel", "transport": "adb", "host": peer.host, "port": peer.port,
             "adbkey": str(tmp_path / "keys" / "adbkey"), "benchmark_model": str(peer.benchmark_model_host_path),
             "cpu_mask": "f0", "connect_timeout_s": 5, "auth_timeout_s": 5, "retry_backoff_s": 0.2}
    inventory = write(tmp_path / "inventory.yaml", inventory_yaml([phone]))
    plan = write(tmp_path / "plan.yaml", "name: android-accuracy\nmodels:\n  - model: digits_cnn\n"
                 "    variants: [fp32, int8]\ntargets:\n  - device: pixel\n    delegates: [cpu, xnnpack, nnapi]\n"
                 "protocol: {warmup_runs: 1, warmup_min_secs: 0.02, num_runs: 5, min_secs: 0.02, max_secs: 2, "
                 "repetitions: 2}\n")
    db = tmp_path / "results.sqlite"
    sweep = harness_cli("sweep", "--plan", str(plan), "--inventory", str(inventory), "--db", str(db),
                        "--cache-dir", str(session_cache), cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr
    run_id = sweep.stdout.strip().splitlines()[-1]
    cells = _cells(db, run_id)
    assert len(cells) == 6
    for key, cell in cells.items():
        assert cell["status"] == "ok" and cell["accuracy_source"] == "device", (key, cell["reason"])
        host = score(score_on_host(build.artifacts[key[2]].path, build.eval_path, 120.0), build.labels, None)
        top1 = cell["metrics"]["top1_accuracy"]
        if key[3] == "nnapi":
            assert top1 < host["top1_accuracy"] - 0.5, key  # clearly lower: the driver's outputs, not the host's
        else:
            assert top1 == pytest.approx(host["top1_accuracy"], abs=0.01), key
    runs = [c for c in peer.commands if "--output_filepath=" in c]
    assert len(runs) == 6  # once per cell, in its first launch
    report = harness_cli("report", "--run", run_id, "--db", str(db), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "†" not in report.stdout and "scored on the host" not in report.stdout  # measured on the phone
    assert "Accuracy measured on the device: from the outputs each device computed with the cell's own delegate" \
        in " ".join(report.stdout.split())
    exported = harness_cli("report", "--run", run_id, "--db", str(db), "--format", "json", cwd=tmp_path)
    rows = json.loads(exported.stdout)
    assert {r["accuracy_source"] for r in _json_cells(rows)} == {"device"}


def _json_cells(document) -> list[dict]:
    """Every cell of `harness report --format json`, wherever the format nests them."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "accuracy_source" in node:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return found
