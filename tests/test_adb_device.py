"""The ADB transport against the in-repo Android peer (tests/peers/adbd.py, the real ADB wire
protocol): the device contract (push by hash, exit codes, arguments, timeouts, fingerprint,
telemetry), keys, dropped connections, and measuring with the benchmark_model stand-in."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_timeout_kills_the_process_group, orphan_probe, processes_with
from devices.adb import ADBConfig, ADBDevice
from devices.base import Job, MeasurementProtocol
from harness.errors import DeviceUnreachable, RuntimeMissing

FAST = MeasurementProtocol(warmup_runs=1, warmup_min_secs=0.02, num_runs=5, min_secs=0.02, max_secs=2.0,
                           repetitions=2)


@pytest.fixture
def peer(tmp_path):
    from tests.peers.adbd import start_adb_peer

    with start_adb_peer(tmp_path / "phone") as running:
        yield running


def adb_config(peer, tmp_path: Path, **extra) -> ADBConfig:
    settings = dict(name="pixel", host=peer.host, port=peer.port, adbkey=str(tmp_path / "keys" / "adbkey"),
                    benchmark_model=str(peer.benchmark_model_host_path), cpu_mask="f0", connect_timeout_s=5.0,
                    auth_timeout_s=5.0, retry_backoff_s=0.1)
    return ADBConfig(**{**settings, **extra})


@pytest.fixture
def phone(peer, tmp_path):
    opened = []

    def make(**extra):
        opened.append(ADBDevice(adb_config(peer, tmp_path, **extra)))
        return opened[-1]

    yield make
    for device in opened:
        device.close()


def test_push_is_idempotent_by_content(peer, phone, tmp_path):
    device = phone()
    src = tmp_path / "model.tflite"
    src.write_bytes(b"some model bytes")
    first = device.push(src)
    assert first.startswith("/data/local/tmp/harness/") and first.endswith(".tflite")
    assert peer.device_path_to_host(first).read_bytes() == b"some model bytes"
    assert (device.bytes_pushed, device.files_pushed) == (16, 1)
    copy = tmp_path / "copy.tflite"
    copy.write_bytes(src.read_bytes())
    assert device.push(src) == first and device.push(copy) == first and device.bytes_pushed == 16
    again = phone()  # a new connection asks the phone (sync STAT) and sends nothing
    assert again.push(copy) == first and (again.bytes_pushed, again.files_pushed, again.files_reused) == (0, 0, 1)
    truncated = peer.device_path_to_host(first)
    truncated.write_bytes(b"some")  # a push cut short is sent again
    third = phone()
    assert third.push(src) == first and third.bytes_pushed == 16 and truncated.read_bytes() == b"some model bytes"
    truncated.write_bytes(b"Some model bytes")  # edited in place, its size kept: the phone's sha256sum tells
    fourth = phone()
    assert fourth.push(src) == first and fourth.bytes_pushed == 16 and truncated.read_bytes() == b"some model bytes"


def test_binary_is_pushed_executable_and_hashed(peer, phone):
    device = phone()
    path, digest = device.benchmark_binary()
    on_phone = peer.device_path_to_host(path)
    assert os.access(on_phone, os.X_OK) and on_phone.read_bytes() == peer.benchmark_model_host_path.read_bytes()
    assert device.fingerprint()["runtime_version"] == f"sha256:{digest[:12]}"


def test_run_keeps_exit_codes_and_merges_stderr(phone):
    device = phone()
    result = device.run([sys.executable, "-c", "import sys; print('out'); sys.stderr.write('err\\n'); sys.exit(3)"], 30)
    assert result.exit_code == 3 and sorted(result.stdout.split()) == ["err", "out"] and result.stderr == ""
    assert device.run(["true"], 10).exit_code == 0 and device.run(["false"], 10).exit_code == 1
    assert device.run(["printf", "no newline"], 10).stdout == "no newline"


def test_arguments_reach_the_program_unchanged(phone, tmp_path):
    odd = ["; touch pwned", "$(id)", "`id`", "a b", "it's", 'say "hi"', "line\nbreak", "*", "$HOME", "",
           "harness-exit-0:7"]
    result = phone().run([sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *odd], 30)
    assert result.exit_code == 0 and json.loads(result.stdout) == odd
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_run_timeout_kills_the_process_group(phone, tmp_path):
    assert_timeout_kills_the_process_group(phone(), tmp_path)


def test_fingerprint_and_telemetry_of_the_pixel(peer, phone):
    device = phone()
    fp = device.fingerprint()
    profile = peer.profile.properties()
    assert fp["device_model"] == f"{profile['ro.product.manufacturer']} {profile['ro.product.model']}"
    assert fp["build_fingerprint"] == profile["ro.build.fingerprint"] and fp["sdk"] == profile["ro.build.version.sdk"]
    assert fp["cores"] == 8 and fp["machine"] == "aarch64" and fp["system"] == "Android"
    assert fp["governor"] == "sched_pixel" and fp["runtime"] == "benchmark_model"
    assert fp["fingerprint_id"] == phone().fingerprint()["fingerprint_id"]
    peer.set_temperature(47.5)
    peer.thermal_status = 2
    telemetry = device.telemetry()
    assert telemetry["temp_c"] == 47.5 and telemetry["thermal_status_name"] == "moderate"
    assert len(telemetry["freq_khz"]) == 8
    health = device.health()
    assert health.reachable and health.runtime == "benchmark_model" and health.temperature_c == 47.5


def test_missing_key_is_generated_and_accepted_once(peer, phone, tmp_path):
    key = tmp_path / "keys" / "adbkey"
    assert not key.exists()
    phone().run(["true"], 10)
    public = Path(f"{key}.pub").read_text()
    assert key.stat().st_mode & 0o077 == 0 and public.split()[0] in " ".join(peer.accepted_keys)
    phone().run(["true"], 10)  # the second connection signs the token: no new prompt
    assert len(peer.accepted_keys) == 1


def test_devices_sharing_a_missing_key_make_one_whole_key(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from adb_shell.auth.sign_cryptography import CryptographySigner

    from devices.android.transport import ensure_adbkey

    key = tmp_path / "shared" / "adbkey"
    with ThreadPoolExecutor(4) as pool:  # as the devices of one sweep connect at once
        seen = set(pool.map(lambda _: CryptographySigner(str(ensure_adbkey(key))).GetPublicKey(), range(4)))
    public = Path(f"{key}.pub").read_bytes()
    assert seen == {public}  # one key for all, private and public halves matching
    assert sorted(p.name for p in key.parent.iterdir()) == ["adbkey", "adbkey.pub"]
    Path(f"{key}.pub").unlink()  # only the public half missing: rebuilt from the private key, the same
    ensure_adbkey(key)
    assert Path(f"{key}.pub").read_bytes() == public


def test_a_malformed_key_is_named_and_not_retried(phone, tmp_path):
    key = tmp_path / "bad" / "adbkey"
    key.parent.mkdir()
    key.write_text("not a PEM key")
    Path(f"{key}.pub").write_text("AAAA unknown@host")
    device = phone(adbkey=str(key), retries=3, retry_backoff_s=5.0)
    started = time.monotonic()
    with pytest.raises(DeviceUnreachable, match=f"adbkey {key}: "):
        device.run(["true"], 10)
    assert time.monotonic() - started < 5


def test_refused_key_tells_the_user_to_accept_the_prompt(peer, phone):
    peer.accept_new_keys = False
    device = phone(auth_timeout_s=1.0, retries=3, retry_backoff_s=5.0)
    started = time.monotonic()
    with pytest.raises(DeviceUnreachable, match="accept the \"Allow USB debugging\\?\" RSA prompt on the phone"):
        device.run(["true"], 10)
    assert time.monotonic() - started < 5  # no back-off: only the user can fix it


def test_connection_dropped_mid_run_is_retried_then_reported(peer, phone):
    messages = []
    device = ADBDevice(phone().config, messages.append)
    peer.drop_during("sleep 1", 0.3)
    assert device.run(["sh", "-c", "sleep 1; echo done"], 20).stdout.strip() == "done"
    assert any("connection lost" in m and "retrying" in m for m in messages)
    device.close()
    once = phone(retries=0)
    peer.drop_during("sleep 1", 0.3)
    with pytest.raises(DeviceUnreachable, match="connection lost while sh ran"):
        once.run(["sh", "-c", "sleep 1; echo done"], 20)
    assert once.run(["echo", "back"], 10).stdout == "back\n"  # reconnects on the next call


def _killed_pids(messages: list[str], what: str) -> list[str]:
    """The pids named by the log line that reports `what` killed."""
    lines = [m for m in messages if m.startswith(f"pixel: killed {what} (pid ")]
    assert len(lines) == 1, messages
    return lines[0].split("(pid ", 1)[1].split(", with", 1)[0].split(", ")


def test_a_retry_never_runs_beside_the_command_cut_off_by_a_lost_connection(peer, phone, tmp_path):
    """The connection drops mid-command and the phone does not notice (as adbd on a dead Wi-Fi
    link): the command runs on, and the retry kills it (and its shell) before running again."""
    argv, marker, first = orphan_probe(tmp_path)
    messages: list[str] = []
    still_running: list[str] = []

    def log(message: str) -> None:
        messages.append(message)
        if "retrying in" in message:
            still_running.extend(processes_with(marker))

    device = ADBDevice(phone().config, log)
    peer.drop_during(marker, 1.0, keep_running=True)
    try:
        result = device.run(argv, 60)
    finally:
        device.close()
    assert result.exit_code == 0 and json.loads(result.stdout) == [], "the retry ran beside the command it replaced"
    assert any(marker in cmdline for cmdline in still_running), "the lost command had ended by itself"
    assert "(its commands keep running)" in peer.log_text()
    name = Path(sys.executable).name
    assert any(f"connection lost while {name} ran" in m and "retrying in" in m for m in messages), messages
    assert first.read_text() in _killed_pids(messages, f"the {name} cut off by the lost connection")
    assert processes_with(marker) == []
    assert not list(peer.device_path_to_host("/data/local/tmp/harness").glob(".run-*.pid"))  # pid files removed


def test_a_command_left_by_a_call_that_gave_up_is_killed_before_the_next(peer, phone, tmp_path):
    argv, marker, first = orphan_probe(tmp_path)
    messages: list[str] = []
    device = ADBDevice(adb_config(peer, tmp_path, retries=0), messages.append)
    peer.drop_during(marker, 1.0, keep_running=True)
    try:
        with pytest.raises(DeviceUnreachable, match="connection lost while"):
            device.run(argv, 60)
        assert len([c for c in processes_with(marker) if "python" in c.split()[0]]) == 1  # it runs on
        assert device.run(["echo", "next"], 10).stdout == "next\n"
    finally:
        device.close()
    name = Path(sys.executable).name
    assert first.read_text() in _killed_pids(messages, f"the {name} cut off by the lost connection")
    assert processes_with(marker) == [] and not Path(f"{first}.later").exists()


def test_refused_connection_names_the_address(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    device = ADBDevice(ADBConfig(name="gone", host="127.0.0.1", port=port, adbkey=str(tmp_path / "k"),
                                 retries=1, retry_backoff_s=0.05, connect_timeout_s=2))
    with pytest.raises(DeviceUnreachable, match=f"cannot connect to 127.0.0.1:{port}.*gave up after 2 attempts"):
        device.run(["true"], 5)


def test_one_connection_with_tcp_nodelay(peer, phone):
    device = phone()
    for _ in range(3):
        device.run(["true"], 10)
    sock = device.adb._device._io_manager._transport.sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert peer.log_text().count("CNXN version") == 1  # one handshake for every command


# -- measuring ---------------------------------------------------------------------------------


@pytest.mark.parametrize("delegate", ["cpu", "xnnpack", "gpu", "nnapi"])
def test_measure_each_delegate(peer, phone, tiny_tflite, delegate):
    device = phone()
    report = device.measure(Job(tiny_tflite, delegate, 1, FAST, 60.0))  # one launch: one run of the tool
    assert report["error"] is None and len(report["samples_us"]) == 1 and report["samples_us"][0] > 0
    runs = report["benchmark_model"]
    assert [r["avg_us"] for r in runs] == report["samples_us"] and runs[0]["count"] >= 5
    assert report["runtime"]["name"] == "benchmark_model" and report["runtime"]["version"].startswith("sha256:")
    assert report["runner_sha256"] == device.benchmark_binary()[1]
    assert report["telemetry"]["before"]["temp_c"] is not None and report["peak_rss_mb"] > 0
    if delegate == "cpu":
        assert "coverage" not in report and report["argv"][-1] == "--use_xnnpack=false"
    else:
        assert 0 < report["coverage"]["nodes_delegated"] <= report["coverage"]["nodes_total"]
    command = [c for c in peer.commands if "--graph=" in c][-1]
    assert "taskset f0 " in command and "--report_peak_memory_footprint=true" in command


def test_nnapi_accelerator_and_a_failing_delegate(peer, phone, tiny_tflite):
    device = phone()
    job = Job(tiny_tflite, "nnapi", 1, FAST, 60.0, delegate_options={"nnapi_accelerator_name": "google-edgetpu"})
    assert device.measure(job)["error"] is None
    assert "--nnapi_accelerator_name=google-edgetpu" in [c for c in peer.commands if "--graph=" in c][-1]
    peer.delegate_failure = {"nnapi": "op_failed"}
    report = device.measure(job)
    message = report["error"]["message"]
    assert report["error"]["stage"] == "benchmark_model" and message.startswith("benchmark_model exited 1: ")
    assert "ANEURALNETWORKS_OP_FAILED" in message and "Failed to apply NNAPI delegate." in message


def test_missing_benchmark_model_is_runtime_missing_with_a_hint(phone, tiny_tflite):
    job = Job(tiny_tflite, "cpu", 1, FAST, 60.0)
    with pytest.raises(RuntimeMissing, match="no benchmark_model at /data/local/tmp/nope.*android_aarch64"):
        phone(benchmark_model="on_device:/data/local/tmp/nope").measure(job)
    with pytest.raises(RuntimeMissing, match="no benchmark_model configured"):
        phone(benchmark_model=None).measure(job)


def test_benchmark_model_already_on_the_phone(peer, phone, tiny_tflite):
    peer.install_benchmark_model("/data/local/tmp/benchmark_model")
    device = phone(benchmark_model="on_device:/data/local/tmp/benchmark_model")
    report = device.measure(Job(tiny_tflite, "xnnpack", 1, FAST, 60.0))
    assert report["error"] is None and device.bytes_pushed == tiny_tflite.stat().st_size  # only the model


def test_accuracy_from_the_phones_python_or_its_benchmark_model(phone, digits_build):
    build = digits_build[0]
    model = build.artifacts["int8"].path
    job = Job(model, "xnnpack", 1, FAST, 120.0, inputs=build.eval_path)
    tool = phone().measure(job)  # no Python on the phone: benchmark_model's input and output files
    assert tool["accuracy_source"] == "device" and tool["accuracy"]["count"] > 0
    on_phone = phone(python=sys.executable).measure(job)
    assert on_phone["accuracy_source"] == "device" and on_phone["accuracy"]["count"] == tool["accuracy"]["count"]
    gpu = phone(python=sys.executable).measure(Job(model, "gpu", 1, FAST, 120.0, inputs=build.eval_path))
    assert gpu["accuracy_source"] == "host"  # the runner has no GPU delegate here: scored on the host, said so
    assert any("accuracy scored on the host: the phone's Python runner could not" in w for w in gpu["warnings"])
