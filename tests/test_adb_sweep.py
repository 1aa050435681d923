"""Android phones in whole sweeps, through the command line, against the in-repo ADB peer: the four
delegates side by side in the report, and the faults of the field (a dropped connection, a key the
phone never accepted, no benchmark_model, a delegate that fails) ending as failed cells with their
reasons while the rest is measured; `--resume` then completes the run."""

from __future__ import annotations

import json

import pytest

from conftest import harness_cli, inventory_yaml, write
from harness.store import Store
from test_ssh_sweep import _assert_resumed, _by_device, _cells

PROTOCOL = ("protocol: {warmup_runs: 1, warmup_min_secs: 0.02, num_runs: 5, min_secs: 0.02, max_secs: 2, "
            "repetitions: 3}\n")


@pytest.fixture
def phone_peer(tmp_path):
    from tests.peers.adbd import start_adb_peer

    with start_adb_peer(tmp_path / "pixel") as peer:
        yield peer


def _phone(peer, tmp_path, name="pixel", **extra) -> dict:
    return {"name": name, "transport": "adb", "host": peer.host, "port": peer.port,
            "adbkey": str(tmp_path / "keys" / "adbkey"), "benchmark_model": str(peer.benchmark_model_host_path),
            "cpu_mask": "f0", "connect_timeout_s": 5, "auth_timeout_s": 5, "retry_backoff_s": 0.2, **extra}


def test_sweep_measures_four_delegates_side_by_side(phone_peer, digits_build, session_cache, tmp_path):
    inventory = write(tmp_path / "inventory.yaml", inventory_yaml([
        _phone(phone_peer, tmp_path, cooldown={"max_temp_c": 45, "timeout_s": 5, "poll_s": 0.2})]))
    plan = write(tmp_path / "plan.yaml", "name: android\nmodels:\n  - model: digits_cnn\n    variants: [fp32, int8]\n"
                 "targets:\n  - device: pixel\n    delegates: [cpu, xnnpack, gpu, nnapi]\n"
                 "    nnapi_accelerator_name: google-edgetpu\n" + PROTOCOL)
    db = tmp_path / "results.sqlite"
    sweep = harness_cli("sweep", "--plan", str(plan), "--inventory", str(inventory), "--db", str(db),
                        "--cache-dir", str(session_cache), cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr
    run_id = sweep.stdout.strip().splitlines()[-1]
    cells = _cells(db, run_id)
    assert sorted((k[2], k[3]) for k in cells) == sorted((v, d) for v in ("fp32", "int8")
                                                         for d in ("cpu", "xnnpack", "gpu", "nnapi"))
    store = Store.open_existing(db)
    try:
        for key, cell in cells.items():
            assert cell["status"] == "ok", (key, cell["reason"])
            assert cell["runtime_name"] == "benchmark_model" and cell["runtime_version"].startswith("sha256:")
            assert cell["accuracy_source"] == "device" and cell["metrics"]["top1_accuracy"] > 0.5
            details = json.loads(cell["details_json"])
            runs = details["benchmark_model"]
            assert len(runs) == 3 and all(r["count"] >= 5 for r in runs)
            assert list(store.samples(cell["id"])) == pytest.approx([r["avg_us"] for r in runs], rel=1e-6)
            assert cell["metrics"]["samples_count"] == 3 and "cooldown_wait_s" in cell["metrics"]
            delegated = cell["metrics"].get("nodes_delegated")
            assert (delegated is None) == (key[3] == "cpu"), key
        nnapi = [c for k, c in cells.items() if k[3] == "nnapi"][0]
        assert json.loads(nnapi["details_json"])["delegate_options"] == {"nnapi_accelerator_name": "google-edgetpu"}
    finally:
        store.close()
    launches = [c for c in phone_peer.commands if "--graph=" in c and "--output_filepath=" not in c]
    evaluations = [c for c in phone_peer.commands if "--output_filepath=" in c]  # once per cell: its outputs
    assert len(launches) == 8 * 3 and len(evaluations) == 8
    assert all(c.startswith("taskset f0 ") or " taskset f0 " in c for c in launches + evaluations)
    assert sum("--nnapi_accelerator_name=google-edgetpu" in c for c in launches + evaluations) == 2 * 3 + 2
    report = sweep.stdout
    assert "## Delegates compared" in report and "| variant | cpu | xnnpack | gpu | nnapi |" in report
    assert "†" not in report and "%" in report.split("## Delegates compared")[0]  # accuracy from the phone
    device_line = [line for line in report.splitlines() if line.startswith("- device pixel [")][0]
    assert "GS201 × 8" in device_line and "Android 14 (SDK 34; google/panther" in device_line
    compared = report.split("## Delegates compared")[1]
    fp32 = [line for line in compared.splitlines() if line.startswith("| fp32 |")][0].split(" | ")
    assert "nodes" not in fp32[1] and all("/11 nodes" in part for part in fp32[2:])  # cpu delegates nothing


def test_faults_fail_their_cells_and_resume_completes(phone_peer, tiny_tflite, session_cache, tmp_path):
    from tests.peers.adbd import start_adb_peer

    locked = start_adb_peer(tmp_path / "locked", accept_new_keys=False)
    try:
        phone_peer.delegate_failure = {"nnapi": "op_failed"}
        phone_peer.drop_during("--use_xnnpack=true", 0.2)
        entries = [_phone(phone_peer, tmp_path, retries=0),
                   _phone(locked, tmp_path, name="locked", auth_timeout_s=1),
                   _phone(phone_peer, tmp_path, name="no-binary",
                          benchmark_model="on_device:/data/local/tmp/benchmark_model")]
        inventory = write(tmp_path / "inventory.yaml", inventory_yaml(entries))
        plan = write(tmp_path / "plan.yaml", f"name: faults\nmodels:\n  - path: {tiny_tflite}\n    name: tiny\n"
                     "targets:\n" + "".join(f"  - device: {e['name']}\n    delegates: [cpu, xnnpack, nnapi]\n"
                                            for e in entries) + "quarantine_after: 5\n" + PROTOCOL)
        db = tmp_path / "results.sqlite"
        common = ("--db", str(db), "--cache-dir", str(session_cache))
        first = harness_cli("sweep", "--plan", str(plan), "--inventory", str(inventory), *common, cwd=tmp_path)
        assert first.returncode == 0, first.stderr  # partial: the sweep went on
        run_id = first.stdout.strip().splitlines()[-1]
        before = _cells(db, run_id)
        devices = _by_device(before)
        assert len(before) == 9
        pixel = {c["delegate"]: c for c in devices["pixel"]}
        assert pixel["cpu"]["status"] == "ok"
        assert pixel["xnnpack"]["status"] == "failed" and "connection lost while" in pixel["xnnpack"]["reason"]
        assert pixel["nnapi"]["status"] == "failed"
        assert pixel["nnapi"]["reason"].startswith("benchmark_model failed: benchmark_model exited 1: ")
        assert "Failed to apply NNAPI delegate." in pixel["nnapi"]["reason"]
        for cell in devices["locked"]:
            assert cell["status"] == "failed" and "accept the \"Allow USB debugging?\" RSA prompt" in cell["reason"]
        for cell in devices["no-binary"]:
            assert cell["status"] == "failed" and "no benchmark_model at /data/local/tmp/benchmark_model" in cell["reason"]
            assert "android_aarch64_benchmark_model" in cell["reason"]  # how to get one

        table = harness_cli("devices", "--inventory", str(inventory), cwd=tmp_path)
        assert table.returncode == 0, table.stderr
        rows = {line.split()[0]: line for line in table.stdout.splitlines()[2:] if line and not line.startswith("(")}
        assert "Google Pixel 7" in rows["pixel"] and "benchmark_model sha256:" in rows["pixel"]
        assert " NO (" in rows["locked"] and "MISSING (" in rows["no-binary"]
        assert "Allow USB debugging" in table.stdout

        phone_peer.delegate_failure = {}
        locked.accept_new_keys = True
        phone_peer.install_benchmark_model("/data/local/tmp/benchmark_model")
        resumed = harness_cli("sweep", "--resume", run_id, "--inventory", str(inventory), *common, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.strip().splitlines()[-1] == run_id
        _assert_resumed(before, _cells(db, run_id), db, run_id)
    finally:
        locked.stop()


def test_parse_command_reads_a_saved_log(tmp_path):
    log = write(tmp_path / "bm.txt", "INFO: Replacing 7 out of 11 node(s) with delegate (TfLiteXNNPackDelegate) node, "
                "yielding 2 partitions for the whole graph.\nINFO: count=50 first=512 curr=400 min=390 max=700 "
                "avg=2.95e+02 std=12 p5=391 median=398 p95=450\n")
    result = harness_cli("parse", "benchmark_model", str(log))
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert parsed["count"] == 50 and parsed["avg_us"] == 295.0 and parsed["init_us"] is None
    assert parsed["delegates"] == [{"name": "TfLiteXNNPackDelegate", "nodes_delegated": 7, "nodes_total": 11,
                                    "partitions": 2}]
    missing = harness_cli("parse", "benchmark_model", str(tmp_path / "absent.txt"))
    assert missing.returncode == 2 and "absent.txt: cannot read" in missing.stderr and missing.stdout == ""
    assert harness_cli("parse", "--help").returncode == 0
