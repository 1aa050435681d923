"""The test peer tests/peers/sshd.py, checked with a real SSH client (paramiko): keys and known_hosts
it writes, kill/stop/restart, and the network namespace whose link can be cut."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import processes_with
from tests.peers.sshd import netns_supported, sshd_binary, start_sshd

paramiko = pytest.importorskip("paramiko")
pytestmark = pytest.mark.skipif(sshd_binary() is None or os.geteuid() != 0,
                                reason="needs root and OpenSSH's sshd (Debian: openssh-server)")


def connect(host, key: Path | None = None, known_hosts: Path | None = None, timeout: float = 5):
    """A paramiko client that trusts only the host keys in known_hosts."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or host.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(host.host, host.port, username=host.user, key_filename=str(key or host.identity_file),
                       look_for_keys=False, allow_agent=False, timeout=timeout, banner_timeout=timeout,
                       auth_timeout=timeout)
    except BaseException:
        client.close()
        raise
    return client


def run(client, command: str) -> tuple[int, str]:
    _, stdout, _ = client.exec_command(command, timeout=10)
    out = stdout.read().decode()
    return stdout.channel.recv_exit_status(), out


@pytest.fixture
def host(tmp_path):
    h = start_sshd(tmp_path / "sshd", name="loop")
    yield h
    h.stop()


def test_exec_with_generated_user_key_and_known_hosts(host):
    assert host.host == "127.0.0.1" and host.netns is None and host.user == "root"
    line = host.known_hosts.read_text().split()
    assert line[0] == f"[127.0.0.1]:{host.port}" and line[1:] == host.host_key_pub.read_text().split()[:2]
    with connect(host) as client:
        assert run(client, "echo hello") == (0, "hello\n")
        assert run(client, "exit 3") == (3, "")
    assert "Accepted publickey for root" in host.log_text()
    entry = host.inventory_entry("board", python="/usr/bin/python3")
    assert entry == {"name": "board", "transport": "ssh", "host": "127.0.0.1", "port": host.port, "user": "root",
                     "identity_file": str(host.identity_file), "known_hosts": str(host.known_hosts),
                     "python": "/usr/bin/python3"}


def test_wrong_key_and_wrong_host_key_are_refused(host, tmp_path):
    stranger = start_sshd(tmp_path / "stranger")          # its own user key and host key
    try:
        with pytest.raises(paramiko.AuthenticationException):
            connect(host, key=stranger.identity_file)
        with pytest.raises(paramiko.BadHostKeyException):   # host's name and port, stranger's key
            connect(host, known_hosts=_known_hosts(tmp_path, host, stranger))
    finally:
        stranger.stop()


def _known_hosts(tmp_path: Path, named, keyed) -> Path:
    path = tmp_path / "known_hosts.mixed"
    path.write_text(f"[{named.host}]:{named.port} {' '.join(keyed.host_key_pub.read_text().split()[:2])}\n")
    return path


def test_shared_user_key_and_reused_host_key(host, tmp_path):
    twin = start_sshd(tmp_path / "twin", authorized_key=host.identity_file, host_key=host.host_key_pub)
    try:
        assert twin.port != host.port and twin.identity_file == host.identity_file
        assert twin.host_key_pub.read_text().split()[:2] == host.host_key_pub.read_text().split()[:2]
        with connect(twin, known_hosts=_known_hosts(tmp_path, twin, host)) as client:
            assert run(client, "echo twin") == (0, "twin\n")
    finally:
        twin.stop()


def test_kill_drops_open_connections_and_restart_serves_again(host):
    client = connect(host)
    marker = f"sleep 31.{os.getpid()}"
    client.get_transport().open_session().exec_command(marker)
    deadline = time.monotonic() + 5
    while not processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert processes_with(marker), "the session's command never started"
    host.kill()
    assert processes_with(marker) == []                   # session processes die with the listener
    deadline = time.monotonic() + 5
    while client.get_transport().is_active() and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises((paramiko.SSHException, EOFError, OSError)):
        client.exec_command("echo still there", timeout=3)
    client.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host.host, host.port), timeout=2)
    host.kill()                                           # nothing left to kill: no error
    host.restart()
    with connect(host) as again:
        assert run(again, "echo back") == (0, "back\n")
    host.stop()
    host.stop()                                           # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host.host, host.port), timeout=2)


def test_chroot_serves_sftp_inside_it(tmp_path):
    # sshd wants every component of the chroot root-owned and not group/other-writable: not /tmp
    jail = Path(tempfile.mkdtemp(prefix="harness-chroot-", dir="/run"))
    try:
        jail.chmod(0o755)
        (jail / "inside.txt").write_text("jailed\n")
        h = start_sshd(tmp_path / "sshd", chroot=jail)
        try:
            with connect(h) as client, client.open_sftp() as sftp:
                assert sftp.listdir("/") == ["inside.txt"]
                assert sftp.open("/inside.txt").read() == b"jailed\n"
        finally:
            h.stop()
    finally:
        shutil.rmtree(jail)


def test_netns_link_down_times_out_link_up_restores_stop_removes(tmp_path):
    reason = netns_supported()
    if reason:
        pytest.skip(reason)
    h = start_sshd(tmp_path / "ns", name="board", netns=True)
    try:
        assert h.netns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert h.host.startswith("10.") and h.host.endswith(".2")
        with connect(h) as client:
            assert run(client, "echo over veth") == (0, "over veth\n")
        h.link_down()
        started = time.monotonic()
        with pytest.raises((socket.timeout, TimeoutError)):
            connect(h, timeout=3)
        assert time.monotonic() - started >= 2.5            # a silent link: no refusal, no reset
        h.link_up()
        with connect(h) as client:
            assert run(client, "echo back") == (0, "back\n")
    finally:
        h.stop()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert h.netns not in listed.split()
    assert h._veth not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    with pytest.raises(RuntimeError):
        h.link_down()                                      # the namespace is gone
    loop = start_sshd(tmp_path / "loop")
    try:
        with pytest.raises(RuntimeError, match="no network namespace"):
            loop.link_down()
    finally:
        loop.stop()


def test_failed_start_cleans_up_the_namespace(tmp_path):
    reason = netns_supported()
    if reason:
        pytest.skip(reason)
    bad = tmp_path / "bad_key"
    bad.write_text("not a key\n")
    Path(f"{bad}.pub").write_text("ssh-ed25519 AAAAnotakey bad\n")
    with pytest.raises(RuntimeError, match="sshd exited"):
        start_sshd(tmp_path / "ns", netns=True, host_key=bad)
    ours = f"harness-{os.getpid()}-"
    assert ours not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"hv{os.getpid()}x" not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
