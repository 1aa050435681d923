"""Coral Edge TPUs: the compile step (harness/edgetpu.py) with the stand-in compiler, eligibility,
the runner's Edge TPU path (the missing runtime for real; pycoral's API through its stand-in), and
whole sweeps through the command line with a Coral host in the inventory.

No Edge TPU, edgetpu_compiler, libedgetpu or pycoral exists here: tests/peers/edgetpu_compiler.py
and tests/peers/pycoral_standin behave as Coral documents them (see their docstrings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAST_PROTOCOL, ROOT, harness_cli, inventory_yaml, write
from devices.base import RUNNER_PATH, Job, MeasurementProtocol
from harness.config import load_inventory, load_plan
from harness.edgetpu import NEEDS_FULL_INTEGER, Compiler, CompilerSettings, inspect_tflite
from harness.errors import ConfigError, RuntimeMissing
from harness.store import Store

PYCORAL = ROOT / "tests" / "peers" / "pycoral_standin"
PROTOCOL = MeasurementProtocol(warmup_runs=1, warmup_min_secs=0.0, num_runs=5, min_secs=0.0, max_secs=2.0)


@pytest.fixture
def compiler_bin(tmp_path):
    """A directory holding the stand-in `edgetpu_compiler`, which records every invocation."""
    from tests.peers.edgetpu_compiler import install_compiler

    record = tmp_path / "compiler-calls.jsonl"
    install_compiler(tmp_path / "bin", {"EDGETPU_STANDIN_RECORD": str(record)})
    return tmp_path / "bin", record


def _calls(record: Path) -> list[list[str]]:
    return [json.loads(line)["argv"] for line in record.read_text().splitlines()] if record.exists() else []


def _compiler(tmp_path, bin_dir: Path, **settings) -> Compiler:
    messages: list[str] = []
    compiler = Compiler(CompilerSettings(path=str(bin_dir / "edgetpu_compiler"), **settings), tmp_path / "cache",
                        messages.append)
    compiler.messages = messages
    return compiler


# -- configuration -----------------------------------------------------------------------------


def test_plan_settings_become_the_documented_flags(tmp_path):
    plan = write(tmp_path / "plan.yaml", "models:\n  - model: digits_cnn\nedgetpu_compiler:\n  path: /opt/c\n"
                 "  min_runtime_version: 13\n  search_delegate: true\n  delegate_search_step: 4\n"
                 "  timeout_sec: 300\n  enable_multiple_subgraphs: true\n  timeout_s: 60\n")
    settings = load_plan(plan, load_inventory(None)).edgetpu_compiler
    assert settings.flags() == ["-a", "-d", "-k", "4", "-m", "13", "-t", "300"]
    assert settings.path == "/opt/c" and settings.timeout_s == 60
    plan.write_text("models:\n  - model: digits_cnn\nedgetpu_compiler: /usr/local/bin/edgetpu_compiler\n")
    assert load_plan(plan, load_inventory(None)).edgetpu_compiler.path == "/usr/local/bin/edgetpu_compiler"
    assert load_plan(write(tmp_path / "p2.yaml", "models:\n  - model: digits_cnn\n"),
                     load_inventory(None)).edgetpu_compiler.flags() == []


@pytest.mark.parametrize("section, key, message", [
    ("  delegate_search_step: 2\n", "edgetpu_compiler.delegate_search_step", "needs search_delegate: true"),
    ("  num_segments: 0\n", "edgetpu_compiler.num_segments", "must be >= 1"),
    ("  timeout_s: 0\n", "edgetpu_compiler.timeout_s", "must be > 0"),
    ("  min_runtime: 13\n", "edgetpu_compiler.min_runtime", "unknown key"),
    ("  search_delegate: yes please\n", "edgetpu_compiler.search_delegate", "expected bool"),
])
def test_bad_compiler_settings_name_the_key(tmp_path, section, key, message):
    plan = write(tmp_path / "plan.yaml", "models:\n  - model: digits_cnn\nedgetpu_compiler:\n" + section)
    with pytest.raises(ConfigError) as caught:
        load_plan(plan, load_inventory(None))
    assert caught.value.key == key and message in caught.value.message and str(plan) in str(caught.value)


def test_a_coral_host_offers_the_edgetpu_delegate(tmp_path):
    inventory = load_inventory(write(tmp_path / "inv.yaml", inventory_yaml([
        {"name": "coral", "transport": "local", "accelerator": "edgetpu", "edgetpu_device": "usb:0"},
        {"name": "devboard", "transport": "ssh", "host": "10.0.0.9", "accelerator": "edgetpu",
         "edgetpu_device": "pci:0", "delegates": ["cpu", "edgetpu"]},
        {"name": "plain", "transport": "local"}])))
    assert inventory.get("coral").delegates == ("cpu", "xnnpack", "edgetpu")
    assert inventory.get("devboard").delegates == ("cpu", "edgetpu")
    assert inventory.get("plain").delegates == ("cpu", "xnnpack")


@pytest.mark.parametrize("extra, key, message", [
    ({"accelerator": "hexagon"}, "devices[0].accelerator", "unknown accelerator 'hexagon'"),
    ({"accelerator": "edgetpu", "edgetpu_device": "usb0"}, "devices[0].edgetpu_device", "not an Edge TPU device"),
    ({"edgetpu_device": "usb"}, "devices[0].edgetpu_device", "needs `accelerator: edgetpu`"),
    ({"delegates": ["cpu", "edgetpu"]}, "devices[0].delegates", "needs `accelerator: edgetpu`"),
])
def test_bad_accelerator_keys_name_the_key(tmp_path, extra, key, message):
    path = write(tmp_path / "inv.yaml", inventory_yaml([{"name": "coral", "transport": "local", **extra}]))
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    assert caught.value.key == key and message in caught.value.message


def test_adb_phones_have_no_accelerator_key(tmp_path):
    path = write(tmp_path / "inv.yaml", inventory_yaml([{"name": "p", "transport": "adb", "host": "10.0.0.2",
                                                         "accelerator": "edgetpu"}]))
    with pytest.raises(ConfigError, match="devices\\[0\\].accelerator: unknown key"):
        load_inventory(path)


# -- eligibility and the compile step ----------------------------------------------------------


def test_only_full_integer_models_are_eligible(digits_build):
    build = digits_build[0]
    eligible = {v: inspect_tflite(a.path) for v, a in build.artifacts.items() if a.status == "ok"}
    assert {v for v, (full, _) in eligible.items() if full} == {"int8", "qat_int8"}
    assert not any(compiled for _, compiled in eligible.values())
    assert {v for v, a in build.artifacts.items() if a.full_integer} == {"int8", "qat_int8"}


def test_compile_once_then_from_the_cache(digits_build, compiler_bin, tmp_path):
    bin_dir, record = compiler_bin
    int8 = digits_build[0].artifacts["int8"]
    compiler = _compiler(tmp_path, bin_dir, min_runtime_version=13, search_delegate=True, delegate_search_step=2)
    first = compiler.compile("digits_cnn", "int8", int8.path, int8.sha256)
    assert first.status == "ok" and not first.cached, first.reason
    assert first.compiler_version == "16.0.384591198"
    assert first.path.read_bytes()[4:8] == b"TFL3" and first.log_path.read_text().strip()
    info = first.info
    assert info["success"] is True and info["input_model"] == "digits_cnn_int8.tflite"
    assert info["output_model"] == "out/digits_cnn_int8_edgetpu.tflite"  # as given with -o
    assert info["ops_on_edgetpu"] + info["ops_on_cpu"] == info["total_ops"] == sum(
        o["count"] for o in info["operators"])
    metrics = first.metrics()
    assert metrics["edgetpu_ops"] == info["ops_on_edgetpu"] and metrics["edgetpu_model_bytes"] == first.bytes
    assert _calls(record) == [["--version"], ["-s", "-o", "out", "-d", "-k", "2", "-m", "13",
                                              "digits_cnn_int8.tflite"]]
    again = _compiler(tmp_path, bin_dir, min_runtime_version=13, search_delegate=True, delegate_search_step=2)
    second = again.compile("digits_cnn", "int8", int8.path, int8.sha256)
    assert second.cached and second.sha256 == first.sha256 and second.info == info
    assert again.counts == {"compiled": 0, "cached": 1, "failed": 0}
    assert len(_calls(record)) == 3  # only `--version` again
    other = _compiler(tmp_path, bin_dir, min_runtime_version=14)  # other flags: another key
    assert not other.compile("digits_cnn", "int8", int8.path, int8.sha256).cached


def test_a_cut_compiled_model_is_compiled_again(digits_build, compiler_bin, tmp_path):
    bin_dir, record = compiler_bin
    int8 = digits_build[0].artifacts["int8"]
    first = _compiler(tmp_path, bin_dir).compile("digits_cnn", "int8", int8.path, int8.sha256)
    whole = first.path.read_bytes()
    os.truncate(first.path, 1000)
    again = _compiler(tmp_path, bin_dir)
    second = again.compile("digits_cnn", "int8", int8.path, int8.sha256)
    assert not second.cached and second.path.read_bytes() == whole and second.sha256 == first.sha256
    assert [m for m in again.messages if "damaged" in m] == [
        f"warning: cache entry {first.path} is damaged (size mismatch: 1000 bytes, {len(whole)} recorded): rebuilding it"]
    assert sum(argv != ["--version"] for argv in _calls(record)) == 2


def test_a_float_model_fails_to_compile_and_the_failure_is_cached(digits_build, compiler_bin, tmp_path):
    bin_dir, record = compiler_bin
    fp32 = digits_build[0].artifacts["fp32"]
    failed = _compiler(tmp_path, bin_dir).compile("digits_cnn", "fp32", fp32.path, fp32.sha256)
    assert failed.status == "failed" and failed.path is None
    assert "edgetpu_compiler exited" in failed.reason and "not quantized" in failed.reason.lower()
    assert failed.info["success"] is False
    again = _compiler(tmp_path, bin_dir).compile("digits_cnn", "fp32", fp32.path, fp32.sha256)
    assert again.cached and again.reason == failed.reason
    assert sum(argv != ["--version"] for argv in _calls(record)) == 1


def test_a_compiler_past_our_timeout_is_killed_and_not_cached(digits_build, tmp_path):
    from tests.peers.edgetpu_compiler import install_compiler

    record = tmp_path / "calls.jsonl"
    install_compiler(tmp_path / "bin", {"EDGETPU_STANDIN_RECORD": str(record), "EDGETPU_STANDIN_SLEEP": "60"})
    int8 = digits_build[0].artifacts["int8"]
    result = _compiler(tmp_path, tmp_path / "bin", timeout_s=1.5).compile("digits_cnn", "int8", int8.path,
                                                                          int8.sha256)
    assert result.status == "failed" and "ran past the plan's edgetpu_compiler.timeout_s=1.5" in result.reason
    assert not list((tmp_path / "cache" / "edgetpu").glob("*.json"))


def test_an_internal_compiler_error_is_the_reason(digits_build, tmp_path):
    from tests.peers.edgetpu_compiler import install_compiler

    install_compiler(tmp_path / "bin", {"EDGETPU_STANDIN_FAIL": "internal"})
    int8 = digits_build[0].artifacts["int8"]
    result = _compiler(tmp_path, tmp_path / "bin").compile("digits_cnn", "int8", int8.path, int8.sha256)
    assert result.status == "failed" and "Internal compiler error" in result.reason


def test_segments_for_a_pipeline_are_compiled_and_reported_not_run(digits_build, compiler_bin, tmp_path):
    bin_dir, record = compiler_bin
    int8 = digits_build[0].artifacts["int8"]
    result = _compiler(tmp_path, bin_dir, num_segments=2).compile("digits_cnn", "int8", int8.path, int8.sha256)
    assert result.status == "segmented" and result.path is None
    assert "compiled into 2 segments" in result.reason
    assert 0 < result.info["total_ops"] < 11  # the log's first block: segment 0 holds part of the 11 ops
    assert _calls(record)[-1][-3:] == ["-n", "2", "digits_cnn_int8.tflite"]


def test_no_compiler_is_one_clear_reason(tmp_path):
    compiler = Compiler(CompilerSettings(path=str(tmp_path / "nowhere")), tmp_path / "cache", lambda m: None)
    result = compiler.compile("m", "int8", tmp_path / "m.tflite", "0" * 64)
    assert result.status == "failed" and "edgetpu_compiler.path" in result.reason and "not an executable" in result.reason


# -- the runner's Edge TPU path ----------------------------------------------------------------


def test_the_missing_edge_tpu_runtime_is_reported_for_real(digits_build, local_device):
    """libedgetpu does not load on this machine and pycoral is absent: exit 3 with Coral's hint."""
    model = digits_build[0].artifacts["int8"].path
    proc = subprocess.run([sys.executable, str(RUNNER_PATH), "--graph", str(model), "--delegate=edgetpu",
                           "--delegate_option=device=usb:0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    report = json.loads(proc.stdout)
    assert report["error"]["kind"] == "edgetpu_runtime_missing"
    assert "libedgetpu.so.1 does not load" in report["error"]["message"]
    assert "libedgetpu1-std" in report["install_hint"]
    with pytest.raises(RuntimeMissing) as caught:
        local_device.measure(Job(model, "edgetpu", 1, PROTOCOL, 120.0, delegate_options={"device": "usb:0"}))
    assert "no Edge TPU runtime" in str(caught.value) and "coral-edgetpu-stable" in str(caught.value)


def test_a_dev_board_over_ssh_reports_its_missing_runtime(digits_build, sshd_host):
    """The Coral Dev Board is an SSH host with a pci TPU: probe and measurement go over the link."""
    from conftest import ssh_config
    from devices.ssh import SSHDevice

    device = SSHDevice(ssh_config(sshd_host, "devboard", accelerator="edgetpu", edgetpu_device="pci:0"))
    try:
        health = device.health()
        assert health.reachable and health.edgetpu["library"] == "libedgetpu.so.1"
        assert not health.edgetpu["library_loads"] and health.edgetpu["tpus"] == []
        assert "Edge TPU: libedgetpu.so.1 does not load" in health.detail and "libedgetpu1-std" in health.detail
        with pytest.raises(RuntimeMissing, match="devboard: no Edge TPU runtime"):
            device.measure(Job(digits_build[0].artifacts["int8"].path, "edgetpu", 1, PROTOCOL, 120.0,
                               delegate_options={"device": "pci:0"}))
    finally:
        device.close()


def _with_pycoral(tmp_path: Path, tpus: str = "usb") -> Path:
    """A Python for the runner that imports the pycoral stand-in (as a Coral host with python3-pycoral)."""
    script = tmp_path / "python-with-pycoral"
    script.write_text(f"#!/bin/sh\nPYTHONPATH={PYCORAL} PYCORAL_STANDIN_TPUS={tpus} exec {sys.executable} \"$@\"\n")
    script.chmod(0o755)
    return script


def test_pycoral_opens_the_named_tpu_and_first_inference_is_kept_apart(digits_build, tmp_path):
    from devices.local import LocalConfig, LocalDevice

    model = digits_build[0].artifacts["int8"].path
    device = LocalDevice(LocalConfig(name="coral", workdir=str(tmp_path / "dev"), python=str(_with_pycoral(tmp_path)),
                                     accelerator="edgetpu", edgetpu_device="usb:0"))
    report = device.measure(Job(model, "edgetpu", 1, PROTOCOL, 120.0, delegate_options={"device": "usb:0"}))
    assert report["error"] is None and report["edgetpu"] == {"api": "pycoral", "device": "usb:0"}
    assert report["first_inference_us"] > 0 and len(report["samples_us"]) >= 5
    health = device.health()
    assert health.edgetpu["pycoral"] and [t["type"] for t in health.edgetpu["tpus"]] == ["usb"]
    assert health.fingerprint["accelerator"] == "edgetpu" and health.fingerprint["edgetpu_tpus"].startswith("usb:")
    pci_only = LocalDevice(LocalConfig(name="devboard", workdir=str(tmp_path / "dev"),
                                       python=str(_with_pycoral(tmp_path, "pci")), accelerator="edgetpu"))
    report = pci_only.measure(Job(model, "edgetpu", 1, PROTOCOL, 120.0, delegate_options={"device": "usb:0"}))
    assert report["error"]["kind"] == "delegate_unavailable" and "usb:0" in report["error"]["message"]


# -- whole sweeps through the command line -----------------------------------------------------


def _coral_inventory(tmp_path: Path, python: Path | None = None) -> Path:
    coral = {"name": "coral", "transport": "local", "accelerator": "edgetpu", "edgetpu_device": "usb:0",
             "delegates": ["xnnpack"], "workdir": str(tmp_path / "coral")}
    if python:
        coral["python"] = str(python)
    return write(tmp_path / "inventory.yaml", inventory_yaml([
        {"name": "local", "transport": "local", "delegates": ["xnnpack"], "workdir": str(tmp_path / "local")}, coral]))


def _sweep(tmp_path: Path, session_cache: Path, inventory: Path, path_prefix: Path | None = None):
    plan = write(tmp_path / "plan.yaml", "name: coral\nmodels:\n  - model: digits_cnn\n"
                 "    variants: [fp32, int8, qat_int8]\n" + FAST_PROTOCOL)
    env = {"PATH": f"{path_prefix}{os.pathsep}{os.environ['PATH']}"} if path_prefix else {}
    result = harness_cli("sweep", "--plan", str(plan), "--inventory", str(inventory), "--db",
                         str(tmp_path / "results.sqlite"), "--cache-dir", str(session_cache), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip().splitlines()[-1]
    store = Store.open_existing(tmp_path / "results.sqlite")
    try:
        cells = {(c["device_name"], c["variant"], c["delegate"]): c for c in store.cells(run_id)}
    finally:
        store.close()
    return result, cells


def test_without_a_compiler_coral_cells_fail_or_skip_and_the_rest_is_measured(digits_build, session_cache, tmp_path):
    """What must hold on this machine: no compiler, no runtime."""
    assert subprocess.run(["sh", "-c", "command -v edgetpu_compiler"], capture_output=True).returncode != 0
    result, cells = _sweep(tmp_path, session_cache, _coral_inventory(tmp_path))
    assert len(cells) == 3 * 3  # local xnnpack, coral xnnpack, coral edgetpu
    for (device, variant, delegate), cell in cells.items():
        if delegate != "edgetpu":
            assert cell["status"] == "ok", (device, variant, cell["reason"])
        elif variant == "fp32":
            assert cell["status"] == "skipped" and cell["reason"] == NEEDS_FULL_INTEGER
        else:
            assert cell["status"] == "failed"
            assert cell["reason"].startswith("Edge TPU compilation failed: edgetpu_compiler is not installed")
            assert "https://coral.ai/docs/edgetpu/compiler/" in cell["reason"]
    assert "Edge TPU: 0 compiled models from cache, 0 compiled, 2 failed" in result.stderr
    assert "skipped [" in result.stdout and NEEDS_FULL_INTEGER in result.stdout
    devices = harness_cli("devices", "--inventory", str(tmp_path / "inventory.yaml"))
    coral = next(line for line in devices.stdout.splitlines() if line.startswith("coral "))
    local = next(line for line in devices.stdout.splitlines() if line.startswith("local "))
    assert "no Edge TPU attached; no runtime (1)" in coral and " — " in local
    assert "(1) coral: Edge TPU: libedgetpu.so.1 does not load" in devices.stdout


def test_parse_command_reads_a_compiler_log():
    fixture = ROOT / "tests" / "fixtures" / "edgetpu_compiler" / "01-v16-yolov5s-224-two-subgraphs-offchip-success.txt"
    result = harness_cli("parse", "edgetpu_compiler", str(fixture))
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert (parsed["ops_on_edgetpu"], parsed["ops_on_cpu"], parsed["off_chip_memory_bytes"]) == (289, 5, 1782579)
    missing = harness_cli("parse", "edgetpu_compiler", "/nonexistent.log")
    assert missing.returncode == 2 and "/nonexistent.log: cannot read" in missing.stderr


def test_compiled_models_fail_on_the_missing_runtime_then_compile_nothing_again(digits_build, session_cache,
                                                                                 compiler_bin, tmp_path):
    bin_dir, record = compiler_bin
    inventory = _coral_inventory(tmp_path)
    result, cells = _sweep(tmp_path, session_cache, inventory, bin_dir)
    tpu = {v: cells[("coral", v, "edgetpu")] for v in ("int8", "qat_int8")}
    for variant, cell in tpu.items():
        assert cell["status"] == "failed", cell["reason"]
        assert "no Edge TPU runtime: libedgetpu.so.1 does not load" in cell["reason"]
        assert "libedgetpu1-std" in cell["reason"]
        m = cell["metrics"]
        assert m["edgetpu_ops"] >= 1 and m["edgetpu_ops"] + m["cpu_ops"] >= 5 and m["edgetpu_subgraphs"] >= 1
        details = json.loads(cell["details_json"])["edgetpu_compiler"]
        assert details["compiler_version"] == "16.0.384591198" and details["operators"]
        assert cell["artifact_sha256"] == details["sha256"]
    assert cells[("coral", "fp32", "edgetpu")]["status"] == "skipped"
    assert all(c["status"] == "ok" for k, c in cells.items() if k[2] != "edgetpu")
    assert "Edge TPU: 0 compiled models from cache, 2 compiled, 0 failed" in result.stderr
    assert sum(argv != ["--version"] for argv in _calls(record)) == 2
    edge = result.stdout.split("### digits_cnn on the Edge TPU of coral")[1].split("\n## ")[0]
    rows = {line.split(" | ")[0].strip("| "): line for line in edge.splitlines() if line.startswith("| ")}
    assert set(rows) == {"variant", "int8", "qat_int8"}  # fp32 cannot go to the TPU
    ops = tpu["int8"]["metrics"]
    assert f"{ops['edgetpu_ops']:.0f} / {ops['edgetpu_ops'] + ops['cpu_ops']:.0f}" in rows["int8"]
    assert "failed [1]" in rows["int8"] and "no Edge TPU runtime" in edge

    again, cells = _sweep(tmp_path, session_cache, inventory, bin_dir)
    assert "Edge TPU: 2 compiled models from cache, 0 compiled, 0 failed" in again.stderr
    assert sum(argv != ["--version"] for argv in _calls(record)) == 2


def test_a_coral_host_with_pycoral_measures_the_edge_tpu_cells(digits_build, session_cache, compiler_bin, tmp_path):
    bin_dir, _ = compiler_bin
    result, cells = _sweep(tmp_path, session_cache, _coral_inventory(tmp_path, _with_pycoral(tmp_path)), bin_dir)
    for variant in ("int8", "qat_int8"):
        cell = cells[("coral", variant, "edgetpu")]
        assert cell["status"] == "ok", cell["reason"]
        assert json.loads(cell["details_json"])["edgetpu"] == {"api": "pycoral", "device": "usb:0"}
        assert cell["metrics"]["first_inference_us"] > 0 and cell["metrics"]["samples_count"] >= 10
        assert cell["metrics"]["top1_accuracy"] > 0.5
    edge = result.stdout.split("### digits_cnn on the Edge TPU of coral")[1].split("\n## ")[0]
    assert "CPU = coral's CPU (xnnpack, 1t; fp32 there: top-1 " in edge
    cpu, tpu = [line.split(" | ") for line in edge.splitlines() if line.startswith("| int8 |")]
    assert cpu[1] == "CPU" and tpu[1] == "Edge TPU" and "%" in cpu[2] and "%" in tpu[2]
    assert tpu[6].endswith("×")  # the speed-up over the CPU's int8
    devices = harness_cli("devices", "--inventory", str(_coral_inventory(tmp_path, _with_pycoral(tmp_path))))
    coral = next(line for line in devices.stdout.splitlines() if line.startswith("coral "))
    assert "usb:" in coral and "pycoral 2.0.0" in coral
