"""One contract for every transport, run against the local device and against an SSH device on a
real OpenSSH server: push by content hash, run with exit codes and stderr, timeouts that kill what
they started, fingerprint and telemetry. Then what only one transport has."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from conftest import (assert_timeout_kills_the_process_group, orphan_probe, processes_with, ssh_config,
                      when_started)
from devices.base import IDENTITY_KEYS
from harness.errors import DeviceTimeout, DeviceUnreachable


@pytest.fixture(params=["local", "ssh"])
def device(request, tmp_path):
    """A fresh device of each transport; `device.reopen()` makes a new one on the same workdir."""
    workdir = str(tmp_path / "device work")
    if request.param == "local":
        from devices.local import LocalConfig, LocalDevice

        def make():
            return LocalDevice(LocalConfig(name="local", workdir=workdir))
    else:
        from devices.ssh import SSHDevice

        host = request.getfixturevalue("sshd_host")

        def make():
            return SSHDevice(ssh_config(host, workdir=workdir))
    opened = [make()]
    opened[0].reopen = lambda: opened.append(make()) or opened[-1]
    yield opened[0]
    for d in opened:
        d.close()


def test_push_is_idempotent_by_content(device, tmp_path):
    src = tmp_path / "model.tflite"
    src.write_bytes(b"some model bytes")
    first = device.push(src)
    pushed = device.bytes_pushed
    assert pushed == len(b"some model bytes") and device.files_pushed == 1
    assert device.push(src) == first and device.bytes_pushed == pushed
    copy = tmp_path / "elsewhere.tflite"
    copy.write_bytes(src.read_bytes())
    assert device.push(copy) == first and device.bytes_pushed == pushed
    src.write_bytes(b"other bytes")
    second = device.push(src)
    assert second != first and device.bytes_pushed == pushed + len(b"other bytes")
    assert open(first, "rb").read() == b"some model bytes"  # the test hosts share this filesystem
    assert first.endswith(".tflite") and os.path.basename(first)[:-7].isalnum()
    again = device.reopen()  # a new connection finds both files there and sends nothing
    assert again.push(src) == second and again.push(copy) == first
    assert (again.bytes_pushed, again.files_pushed, again.files_reused) == (0, 0, 2)


def test_a_damaged_copy_on_the_device_is_pushed_again(device, tmp_path):
    """A copy cut short, or edited in place (its size kept), is no longer the file its name says:
    the next sweep pushes it again rather than trusting it as already there."""
    src = tmp_path / "model.tflite"
    src.write_bytes(b"some model bytes")
    remote = device.push(src)
    os.truncate(remote, 4)  # the test hosts share this filesystem
    cut = device.reopen()
    assert cut.push(src) == remote and open(remote, "rb").read() == b"some model bytes"
    with open(remote, "r+b") as f:
        f.write(b"S")
    edited = device.reopen()
    assert edited.push(src) == remote and open(remote, "rb").read() == b"some model bytes"
    assert (cut.files_pushed, edited.files_pushed, edited.files_reused) == (1, 1, 0)


def test_run_returns_exit_code_stdout_and_stderr(device):
    result = device.run([sys.executable, "-c", "import sys; print('out'); sys.stderr.write('err'); sys.exit(3)"], 30)
    assert (result.exit_code, result.stdout.strip(), result.stderr) == (3, "out", "err")
    assert result.seconds > 0


def test_arguments_reach_the_program_unchanged(device, tmp_path):
    odd = ["; touch pwned", "$(id)", "`id`", "a b", "it's", 'say "hi"', "line\nbreak", "*", "$HOME", ""]
    result = device.run([sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *odd], 30)
    assert result.exit_code == 0, result.stderr
    import json

    assert json.loads(result.stdout) == odd
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_run_timeout_kills_the_process_group(device, tmp_path):
    assert_timeout_kills_the_process_group(device, tmp_path)


def test_fingerprint_health_and_telemetry(device):
    fp = device.fingerprint()
    assert set(IDENTITY_KEYS) <= set(fp)
    assert fp["machine"] and fp["kernel"] and fp["cores"] >= 1 and fp["runtime"] == "ai_edge_litert"
    assert len(fp["fingerprint_id"]) == 16 and fp["fingerprint_id"] == device.fingerprint()["fingerprint_id"]
    health = device.health()
    assert health.reachable and health.runtime == "ai_edge_litert" and health.runtime_version
    telemetry = device.telemetry()
    assert "temp_c" in telemetry and isinstance(telemetry["freq_khz"], list) and telemetry["time_unix"] > 0


# -- local only --------------------------------------------------------------------------------


def test_missing_program_is_unreachable(local_device):
    with pytest.raises(DeviceUnreachable):
        local_device.run(["/nonexistent/python"], 5)


def test_default_workdir_is_safe_for_any_device_name():
    from devices.local import LocalConfig, LocalDevice

    root = Path("~/.cache/harness/devices").expanduser()
    odd = LocalDevice(LocalConfig(name="lab/pi 4; rm -rf $(id)"))
    assert odd.workdir.parent == root and "/" not in odd.workdir.name and "$" not in odd.workdir.name
    assert odd.workdir != LocalDevice(LocalConfig(name="lab/pi 4; rm -rf $(id) ")).workdir
    assert LocalDevice(LocalConfig(name="local")).workdir == root / "local"


# -- SSH only ----------------------------------------------------------------------------------


def test_one_connection_with_tcp_nodelay(sshd_host, tmp_path):
    from devices.ssh import SSHDevice

    before = sshd_host.log_text().count("Accepted publickey")
    device = SSHDevice(ssh_config(sshd_host, workdir=str(tmp_path / "w")))
    try:
        for _ in range(5):
            assert device.run(["true"], 10).exit_code == 0
        device.push(Path(__file__))
        sock = device._client.get_transport().sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        device.close()
    assert sshd_host.log_text().count("Accepted publickey") - before == 1


def test_tilde_workdir_and_python_resolve_on_the_board(sshd_host, tmp_path):
    from devices.ssh import SSHDevice

    home = Path("~").expanduser()
    device = SSHDevice(ssh_config(sshd_host, workdir="~/.cache/harness-test-tilde"))
    try:
        src = tmp_path / "x.bin"
        src.write_bytes(os.urandom(64))
        remote = device.push(src)
        assert remote.startswith(str(home) + "/.cache/harness-test-tilde/") and Path(remote).read_bytes() == src.read_bytes()
    finally:
        device.close()
        for f in (home / ".cache/harness-test-tilde").iterdir():
            f.unlink()
        (home / ".cache/harness-test-tilde").rmdir()


def test_unknown_host_is_refused_until_trusted(sshd_host, tmp_path):
    from devices.ssh import SSHDevice, trust

    config = ssh_config(sshd_host, known_hosts=str(tmp_path / "known_hosts"))
    device = SSHDevice(config)
    with pytest.raises(DeviceUnreachable, match="unknown host key.*--trust board"):
        device.run(["true"], 10)
    key_type, fingerprint, path, added = trust(config)
    assert added and key_type == "ssh-ed25519" and fingerprint.startswith("SHA256:")
    assert trust(config)[3] is False  # already there: recorded once
    assert device.run(["true"], 10).exit_code == 0
    device.close()


def test_changed_host_key_and_wrong_user_key_are_refused_without_retries(sshd_host, tmp_path):
    import subprocess

    from devices.ssh import SSHDevice

    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-f", str(other)], check=True)
    wrong_user = SSHDevice(ssh_config(sshd_host, identity_file=str(other), retries=3, retry_backoff_s=5))
    started = time.monotonic()
    with pytest.raises(DeviceUnreachable, match="authentication failed"):
        wrong_user.run(["true"], 10)
    assert time.monotonic() - started < 5  # no back-off: a retry cannot fix a key
    forged = tmp_path / "known_hosts"
    forged.write_text(f"[{sshd_host.host}]:{sshd_host.port} {Path(str(other) + '.pub').read_text().split(' ')[0]} "
                      f"{Path(str(other) + '.pub').read_text().split(' ')[1]}\n")
    with pytest.raises(DeviceUnreachable, match="CHANGED"):
        SSHDevice(ssh_config(sshd_host, known_hosts=str(forged))).run(["true"], 10)


def test_missing_runtime_names_the_install_command(sshd_host, tmp_path):
    from devices.ssh import SSHDevice
    from harness.errors import RuntimeMissing

    bare = "/usr/bin/python3"  # Debian's own Python: no numpy, no LiteRT
    if not Path(bare).exists():
        pytest.skip("no /usr/bin/python3")
    device = SSHDevice(ssh_config(sshd_host, python=bare, workdir=str(tmp_path / "w")))
    health = device.health()
    assert health.reachable and health.runtime is None
    assert "ai-edge-litert" in health.detail and f"-p {sshd_host.port}" in health.detail
    with pytest.raises(RuntimeMissing) as caught:
        device.measure(_job(tmp_path))
    assert caught.value.install_hint.startswith("ssh -p ") and "pip install numpy ai-edge-litert" in caught.value.install_hint
    no_python = SSHDevice(ssh_config(sshd_host, python="/nonexistent/python3", workdir=str(tmp_path / "w")))
    with pytest.raises(RuntimeMissing, match="no Python") as caught:
        no_python.fingerprint()
    assert "apt-get install" in caught.value.install_hint
    device.close(), no_python.close()


def test_connection_refused_is_retried_with_back_off(tmp_path):
    from devices.ssh import SSHConfig, SSHDevice

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logged: list[str] = []
    device = SSHDevice(SSHConfig(name="gone", host="127.0.0.1", port=port, retries=2, retry_backoff_s=0.3,
                                 known_hosts=str(tmp_path / "kh")), log=logged.append)
    started = time.monotonic()
    with pytest.raises(DeviceUnreachable, match="gave up after 3 attempts"):
        device.run(["true"], 5)
    assert time.monotonic() - started >= 0.3 + 0.6  # back-off doubled between attempts
    assert [m.split("retrying in ")[1] for m in logged] == ["0.3 s", "0.6 s"]


# A link that dies mid-command: sshd keeps the command running (no tty), so the retry must kill it
# before running the command again. The board's link is cut once the command runs, and restored
# when the device gives up on the old connection (or later).
LINK_FAULT = {"connect_timeout_s": 2, "link_timeout_s": 2, "keepalive_s": 1, "retry_backoff_s": 0.3}


@pytest.mark.parametrize("pid_line", [True, False], ids=["pid-line", "no-pid-line"])
def test_a_retry_never_runs_beside_the_command_cut_off_by_a_lost_link(netns_board, tmp_path, monkeypatch, pid_line):
    from devices.ssh import SSHDevice

    if not pid_line:  # as when the link dies before the shell's pid line arrives: found by its nonce
        monkeypatch.setattr(SSHDevice, "_remote_pid", staticmethod(lambda channel, err: None))
    argv, marker, first = orphan_probe(tmp_path)
    messages: list[str] = []
    still_running: list[str] = []

    def log(message: str) -> None:
        messages.append(message)
        if "retrying in" in message:  # the old connection is given up; its command runs on
            still_running.extend(processes_with(marker))
            netns_board.link_up()

    device = SSHDevice(ssh_config(netns_board, retries=2, **LINK_FAULT), log=log)
    try:
        when_started(first, netns_board.link_down)
        result = device.run(argv, 60)
    finally:
        netns_board.link_up()
        device.close()
    old = first.read_text()
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [], "the retry ran beside the command it replaced"
    assert any(marker in cmdline for cmdline in still_running), "the lost command had ended by itself"
    name = Path(sys.executable).name
    retrying = [m for m in messages if f"connection lost while {name} ran" in m and "retrying in" in m]
    killed = [m for m in messages if m.startswith(f"board: killed the {name} cut off by the lost connection")]
    assert len(retrying) == 1 and killed == [f"board: killed the {name} cut off by the lost connection (pid {old}, "
                                             "with its process group)"], messages
    assert messages.index(retrying[0]) < messages.index(killed[0])
    assert processes_with(marker) == []


def test_a_command_that_cannot_be_killed_yet_keeps_the_next_from_running(netns_board, tmp_path):
    """The link stays down through every retry: no attempt may run beside the old command, so the
    call fails naming both reasons; once the link is back, the next command kills it first."""
    from devices.ssh import SSHDevice

    argv, marker, first = orphan_probe(tmp_path)
    messages: list[str] = []
    device = SSHDevice(ssh_config(netns_board, retries=1, **LINK_FAULT), log=messages.append)
    name = Path(sys.executable).name
    try:
        when_started(first, netns_board.link_down)
        with pytest.raises(DeviceUnreachable) as caught:
            device.run(argv, 60)
        assert f"connection lost while {name} ran" in str(caught.value)
        assert (f"; then cannot kill the {name} cut off by the lost connection, and nothing runs beside it: "
                "cannot connect to") in str(caught.value)
        assert "gave up after 2 attempts" in str(caught.value)
        assert len(processes_with(marker)) == 1 and not Path(f"{first}.later").exists()  # never run again
        netns_board.link_up()
        assert device.run(["true"], 10).exit_code == 0
    finally:
        netns_board.link_up()
        device.close()
    assert processes_with(marker) == []
    assert messages[-1] == (f"board: killed the {name} cut off by the lost connection (pid {first.read_text()}, "
                            "with its process group)"), messages


def test_a_timeout_kill_that_fails_is_done_before_the_next_command(sshd_host, tmp_path, monkeypatch):
    """Past its timeout a command is killed at once; when that fails, the next command kills it first."""
    from devices import ssh

    argv, marker, first = orphan_probe(tmp_path)
    messages: list[str] = []
    device = ssh.SSHDevice(ssh_config(sshd_host), log=messages.append)
    housekeeping = ssh.SSHDevice._housekeeping

    def flapping(self, command: str, timeout_s: float) -> str:
        raise ssh.ConnectionLost("the link flapped")

    monkeypatch.setattr(ssh.SSHDevice, "_housekeeping", flapping)
    try:
        with pytest.raises(DeviceTimeout):
            device.run(argv, 2)
        assert len(processes_with(marker)) == 1
        name = Path(sys.executable).name
        assert messages == [f"board: cannot kill the {name} past its 2 s timeout, and nothing runs beside it: the "
                            "link flapped; it is killed before the next command runs"]
        monkeypatch.setattr(ssh.SSHDevice, "_housekeeping", housekeeping)
        assert device.run(["true"], 10).exit_code == 0
    finally:
        device.close()
    assert processes_with(marker) == [] and messages[-1].startswith(f"board: killed the {name} past its 2 s timeout")


def _job(tmp_path):
    from devices.base import Job, MeasurementProtocol

    model = tmp_path / "m.tflite"
    model.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    return Job(model=model, delegate="cpu", num_threads=1, protocol=MeasurementProtocol(), timeout_s=60)
