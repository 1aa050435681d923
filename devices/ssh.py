"""SSH devices (Raspberry Pi, Jetson, Coral Dev Board): the runner over one paramiko connection.

Only `push` and `run` cross the link; measuring, fingerprint and health come from
`PythonRunnerDevice`, so a board is driven exactly as the local device is and every time it
reports is taken on the board.

- Host keys are checked against `known_hosts`; an unknown host is refused (`harness devices
  --trust NAME` records its key after showing the fingerprint). Key authentication only.
- One connection per device, reused; TCP_NODELAY (an exec costs ~5 ms instead of ~48 ms), SSH
  keep-alives and TCP_USER_TIMEOUT, so a cut link is noticed in `link_timeout_s`, not minutes.
- Connection errors are retried with back-off (`retries`, `retry_backoff_s`); authentication,
  host-key and command failures are not, because trying again cannot change them. sshd does not
  kill a command without a tty when its client vanishes, so the command cut off is killed over
  the new connection before the retry (devices/orphans.py): a retry never measures beside it.
- Files go to `workdir/<sha256><suffix>` over SFTP only when the board lacks that hash.
- Commands are argv lists joined with `shlex.join`: no name is ever pasted into a shell line.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import socket
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from devices import orphans
from devices.base import (ConnectionLost, Cooldown, ExecResult, PythonRunnerDevice, Reconnecting,
                          sha256_printed)
from harness.errors import DeviceTimeout, DeviceUnreachable, RuntimeMissing

EXIT_NOT_FOUND = 127  # POSIX shell: command not found
PID_MARK = "harness-remote-pid:"


@dataclass(frozen=True)
class SSHConfig:
    """Inventory keys of a `transport: ssh` device."""

    name: str
    host: str
    transport: str = "ssh"
    port: int = 22
    user: str | None = None  # default: the user running the harness
    identity_file: str | None = None  # default: the usual ~/.ssh/id_* keys
    known_hosts: str = "~/.ssh/known_hosts"
    python: str = "python3"
    workdir: str = "~/.cache/harness"
    delegates: tuple[str, ...] = ("cpu", "xnnpack")
    cooldown: Cooldown | None = None
    connect_timeout_s: float = 10.0
    run_timeout_s: float | None = None  # default: the plan's timeouts.run_timeout_s
    link_timeout_s: float = 20.0  # a link that acknowledges nothing for this long is dead
    keepalive_s: float = 5.0
    retries: int = 2
    retry_backoff_s: float = 1.0
    accelerator: str | None = None  # edgetpu: a Coral Edge TPU on this host (devices/coral.py)
    edgetpu_device: str | None = None  # usb, usb:N, pci, pci:N; default: the first one found
    description: str | None = None



def _paramiko():
    import paramiko  # imported when an SSH device is used, so `--help` stays instant

    return paramiko


def host_key_entry(host: str, port: int) -> str:
    """How known_hosts names a host: `host` on port 22, `[host]:port` elsewhere."""
    return host if port == 22 else f"[{host}]:{port}"


def key_fingerprint(key) -> str:
    """OpenSSH's SHA256 fingerprint of a public key (as `ssh-keygen -lf` prints it)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class SSHDevice(Reconnecting, PythonRunnerDevice):
    transport = "ssh"

    def __init__(self, config: SSHConfig, log: Callable[[str], None] | None = None):
        super().__init__(config, log)
        self.user = config.user or _local_user()
        self.known_hosts = Path(config.known_hosts).expanduser()
        self.identity_file = Path(config.identity_file).expanduser() if config.identity_file else None
        self._client = None
        self._sftp = None
        self._home: str | None = None
        self._present: set[str] = set()
        self._mkdirs_done = False
        self._orphan: orphans.Orphan | None = None  # a command not seen to end: killed before the next

    # -- connection -----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.user}@{host_key_entry(self.config.host, self.config.port)}"

    def _open(self):
        """One connection attempt. Permanent refusals raise DeviceUnreachable; the rest ConnectionLost."""
        paramiko = _paramiko()
        if self.identity_file is not None and not self.identity_file.is_file():
            raise DeviceUnreachable(f"{self.name}: identity_file {self.identity_file}: no such file")
        try:
            sock = socket.create_connection((self.config.host, self.config.port), timeout=self.config.connect_timeout_s)
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {self.config.host}:{self.config.port}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux: unacknowledged data for this long drops the link
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.config.link_timeout_s * 1000))
        client = paramiko.SSHClient()
        if self.known_hosts.is_file():
            client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        timeout = self.config.connect_timeout_s
        try:
            client.connect(self.config.host, self.config.port, username=self.user, sock=sock,
                           key_filename=str(self.identity_file) if self.identity_file else None,
                           allow_agent=False, look_for_keys=self.identity_file is None, timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise DeviceUnreachable(
                f"{self.name}: the host key of {self.address} CHANGED ({key_fingerprint(exc.key)} is not the "
                f"{key_fingerprint(exc.expected_key)} in {self.known_hosts}); refusing to connect") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            key = self.identity_file or "the default keys"
            raise DeviceUnreachable(f"{self.name}: authentication failed for {self.address} with {key}: {exc}") from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise DeviceUnreachable(
                    f"{self.name}: unknown host key for {host_key_entry(self.config.host, self.config.port)} "
                    f"(not in {self.known_hosts}); check it, then record it with `harness devices --trust "
                    f"{shlex.quote(self.name)}`") from None
            raise ConnectionLost(f"SSH handshake with {self.address} failed: {exc}") from exc
        except (OSError, EOFError) as exc:
            client.close()
            raise ConnectionLost(f"SSH handshake with {self.address} failed: {exc}") from exc
        transport = client.get_transport()
        transport.set_keepalive(max(1, int(self.config.keepalive_s)))
        return client

    def own_keys(self, info: dict) -> dict:
        """The SSH server's host key: a board's own, where two boards of one image may share
        everything else the runner sees."""
        key = self._with_retries("host key", lambda: self._connection().get_transport().get_remote_server_key())
        return {**info, "host_key": key_fingerprint(key)}

    def _connection(self):
        if self._client is not None and self._client.get_transport() and self._client.get_transport().is_active():
            return self._client
        self._drop()
        self._client = self._open()
        return self._client

    def _drop(self) -> None:
        for handle in (self._sftp, self._client):
            if handle is not None:
                try:
                    handle.close()
                except (OSError, EOFError) as exc:
                    self.log(f"{self.name}: closing a dead connection: {exc}")
        self._sftp = self._client = None

    def close(self) -> None:
        self._drop()

    # -- paths ----------------------------------------------------------------------------------

    def _sftp_client(self):
        if self._sftp is None:
            try:
                self._sftp = self._connection().open_sftp()
                # no SFTP request may wait longer than a dead link takes to be noticed
                self._sftp.get_channel().settimeout(self.config.link_timeout_s + self.config.connect_timeout_s)
            except (OSError, EOFError, _paramiko().SSHException) as exc:
                raise ConnectionLost(f"SFTP session: {exc}") from exc
        return self._sftp

    def _expand(self, path: str) -> str:
        """`~` and relative paths resolved against the remote home (asked once, over SFTP)."""
        if path.startswith("/"):
            return path
        if self._home is None:
            self._home = self._sftp_client().normalize(".")
        rest = path[2:] if path.startswith("~/") else "" if path == "~" else path
        return f"{self._home.rstrip('/')}/{rest}" if rest else self._home

    @property
    def python(self) -> str:  # the runner's interpreter, `~` expanded on the board
        python = self.config.python
        return self._with_retries("resolve python", lambda: self._expand(python)) if python.startswith("~") else python

    # -- push -----------------------------------------------------------------------------------

    def push(self, local: Path) -> str:
        local = Path(local)
        digest = self._sha256(local)
        return self._with_retries(f"push {local.name}", lambda: self._push(local, digest))

    def _push(self, local: Path, digest: str) -> str:
        try:
            sftp = self._sftp_client()
            workdir = self._expand(self.config.workdir)
            remote = f"{workdir}/{digest}{''.join(local.suffixes[-1:])}"
            if remote in self._present:
                return remote
            size = local.stat().st_size
            try:
                if sftp.stat(remote).st_size == size and self._remote_sha256(remote) in (digest, None):
                    self._present.add(remote)
                    self.files_reused += 1
                    return remote
            except FileNotFoundError:
                pass
            if not self._mkdirs_done:
                self._mkdirs(sftp, workdir)
                self._mkdirs_done = True
            partial = f"{remote}.part-{os.getpid()}"
            sftp.put(str(local), partial, confirm=True)
            sftp.posix_rename(partial, remote)
        except FileNotFoundError as exc:
            raise DeviceUnreachable(f"{self.name}: push {local.name}: {exc}") from None
        except PermissionError as exc:
            raise DeviceUnreachable(f"{self.name}: push {local.name} into {self.config.workdir}: {exc}") from None
        except (OSError, EOFError, _paramiko().SSHException) as exc:
            raise ConnectionLost(f"SFTP: {exc}") from exc
        self.bytes_pushed += size
        self.files_pushed += 1
        self._present.add(remote)
        return remote

    def _remote_sha256(self, remote: str) -> str | None:
        """The board's own sha256 of a copy already there (one short command, once per file per
        sweep; a copy edited in place keeps its size); None where the board has no sha256sum."""
        out = self._housekeeping(shlex.join(["sha256sum", "--", remote]), self.config.link_timeout_s)
        return sha256_printed(out)

    @staticmethod
    def _mkdirs(sftp, path: str) -> None:
        parts, current = path.strip("/").split("/"), ""
        for part in parts:
            current += "/" + part
            try:
                sftp.stat(current)
            except FileNotFoundError:
                sftp.mkdir(current)

    # -- run ------------------------------------------------------------------------------------

    def run(self, argv: Sequence[str], timeout_s: float) -> ExecResult:
        argv = tuple(str(a) for a in argv)
        return self._with_retries(f"run {Path(argv[0]).name}", lambda: self._run(argv, timeout_s))

    def _run(self, argv: tuple[str, ...], timeout_s: float) -> ExecResult:
        paramiko = _paramiko()
        name, nonce = Path(argv[0]).name, uuid.uuid4().hex[:12]
        # The shell prints its pid, marks the environment with this command's nonce, then becomes
        # the command (exec keeps the pid): the pid names its process group, the nonce finds it and
        # all it started, to kill it past its timeout or after a lost connection (devices/orphans.py).
        # Every argument is quoted; nothing is pasted.
        command = f"echo {PID_MARK}$$ >&2; {orphans.export(nonce)}; exec {shlex.join(argv)}"
        orphan = orphans.Orphan(name, nonce)
        started = time.monotonic()
        try:
            transport = self._connection().get_transport()
            channel = transport.open_session(timeout=self.config.connect_timeout_s)
            self._orphan = orphan  # from here on it may run on the board until it is seen to end
            channel.exec_command(command)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionLost(f"cannot start a command: {exc}") from exc
        out, err = bytearray(), bytearray()
        try:
            code = self._collect(channel, orphan, started, timeout_s, out, err)
        except ConnectionLost:
            # sshd does not kill a command without a tty when its client goes: it may still run,
            # and is killed (by its pid when that line came, else by its nonce) before the next try
            self._orphan = replace(orphan, leader=self._remote_pid(channel, err))
            raise
        finally:
            channel.close()
        self._orphan = None
        stderr = err.decode(errors="replace")
        lines = stderr.splitlines(keepends=True)
        if lines and lines[0].startswith(PID_MARK):
            stderr = "".join(lines[1:])
        return ExecResult(argv, code, out.decode(errors="replace"), stderr, time.monotonic() - started)

    def _collect(self, channel, orphan: orphans.Orphan, started: float, timeout_s: float, out: bytearray,
                 err: bytearray) -> int:
        """Read a command's stdout and stderr into `out` and `err` until it ends; its exit status.
        ConnectionLost when the connection dies first; DeviceTimeout past `timeout_s` (killed)."""
        transport = channel.get_transport()
        deadline = started + timeout_s

        def check() -> None:
            while channel.recv_stderr_ready():
                err.extend(channel.recv_stderr(1 << 16))
            if not transport.is_active():
                raise ConnectionLost(f"connection lost while {orphan.name} ran "
                                     f"(after {time.monotonic() - started:.1f} s)")
            if time.monotonic() > deadline:
                self._orphan = replace(orphan, leader=self._remote_pid(channel, err),
                                       why=f"past its {timeout_s:g} s timeout")
                self._reap_now()
                raise DeviceTimeout(f"{self.name}: {orphan.name} ran past its {timeout_s:g} s timeout")

        try:
            # Blocking reads wake as soon as data, EOF or the exit status arrives; the short
            # timeouts only bound how late a deadline or a dead transport is noticed.
            channel.settimeout(0.25)
            while True:
                try:
                    chunk = channel.recv(1 << 16)
                except socket.timeout:
                    check()
                    continue
                if not chunk:
                    break  # stdout closed
                out += chunk
            while not channel.status_event.wait(0.25):
                check()
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(1 << 16)
            code = channel.recv_exit_status()
            if code == -1:  # no exit-status: the command died of a signal, or the connection did
                settle = time.monotonic() + 1.0
                while transport.is_active() and time.monotonic() < settle:
                    time.sleep(0.05)
                if not transport.is_active():
                    raise ConnectionLost(f"connection lost while {orphan.name} ran "
                                         f"(after {time.monotonic() - started:.1f} s)")
                err += b"\n(the command ended without an exit status: killed by a signal)\n"
        except (OSError, EOFError) as exc:
            raise ConnectionLost(f"connection lost while {orphan.name} ran: {exc}") from exc
        return code

    @staticmethod
    def _remote_pid(channel, err: bytearray) -> str | None:
        """The command's pid, from its shell's first stderr line if that arrived (paramiko keeps
        what it received buffered after the connection died). sshd makes each session's shell a
        session and process-group leader, and `exec` keeps its pid, so that pid names the group."""
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(1 << 16)
        first = err.split(b"\n", 1)[0].decode(errors="replace")
        pid = first[len(PID_MARK):]
        return pid if first.startswith(PID_MARK) and pid.isdigit() else None

    def _reap_orphans(self) -> None:
        """Kill the command that a lost connection (or a failed timeout kill) left running, with
        everything it started, before anything else runs on the board (devices/orphans.py)."""
        orphan = self._orphan
        if orphan is None:
            return
        command = shlex.join(["sh", "-c", orphans.SCRIPT, "harness-reap", orphan.nonce, orphan.leader or ""])
        try:
            output = self._housekeeping(command, 2 * orphans.WAIT_S + self.config.link_timeout_s)
        except ConnectionLost as exc:
            raise ConnectionLost(orphans.cannot_kill(orphan, exc)) from exc
        message = orphans.outcome(self.name, orphan, output)
        self._orphan = None
        self.log(message)

    def _housekeeping(self, command: str, timeout_s: float) -> str:
        """The stdout of a short command of the harness's own, over the current connection.
        ConnectionLost when the connection fails, or the command does not end in `timeout_s`."""
        paramiko = _paramiko()
        out = bytearray()
        try:
            transport = self._connection().get_transport()
            channel = transport.open_session(timeout=self.config.connect_timeout_s)
            try:
                channel.settimeout(timeout_s)
                channel.exec_command(command)
                while chunk := channel.recv(1 << 16):
                    out += chunk
            finally:
                channel.close()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionLost(str(exc) or type(exc).__name__) from exc
        if orphans.STATUS.encode() not in out and not transport.is_active():
            raise ConnectionLost("the connection closed")
        return out.decode(errors="replace")

    # -- the runtime ----------------------------------------------------------------------------

    def missing_python(self, result: ExecResult) -> RuntimeMissing | None:
        if result.exit_code != EXIT_NOT_FOUND:
            return None
        return RuntimeMissing(f"{self.name}: no Python at {self.config.python!r} ({result.stderr.strip()})",
                              self.ssh_command("sudo apt-get install -y python3 python3-venv"))

    def install_hint(self) -> str:
        venv = f"{self.config.workdir.rstrip('/')}/venv"
        return (self.ssh_command(f"python3 -m venv {venv} && {venv}/bin/pip install numpy ai-edge-litert")
                + f"   then set `python: {venv}/bin/python` for {self.name} in the inventory "
                  "(where LiteRT has no wheel for the board: pip install tflite-runtime)")

    def ssh_command(self, remote: str) -> str:
        """The OpenSSH command line that runs `remote` on this device, to paste in a terminal."""
        argv = ["ssh", "-p", str(self.config.port)]
        if self.identity_file:
            argv += ["-i", str(self.identity_file)]
        if self.config.known_hosts != "~/.ssh/known_hosts":
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        return shlex.join(argv + [f"{self.user}@{self.config.host}", remote])


def trust(config: SSHConfig) -> tuple[str, str, Path, bool]:
    """Fetch the host's key and append it to known_hosts unless there. Returns (key type,
    fingerprint, file, newly recorded). A key that differs from a recorded one is refused."""
    paramiko = _paramiko()
    entry = host_key_entry(config.host, config.port)
    try:
        sock = socket.create_connection((config.host, config.port), timeout=config.connect_timeout_s)
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=config.connect_timeout_s)
            key = transport.get_remote_server_key()
        finally:
            transport.close()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise DeviceUnreachable(f"{config.name}: cannot fetch the host key of {entry}: {exc}") from None
    path = Path(config.known_hosts).expanduser()
    known = paramiko.HostKeys(str(path)) if path.is_file() else paramiko.HostKeys()
    recorded = (known.lookup(entry) or {}).get(key.get_name())
    if recorded is not None:
        if recorded.asbytes() != key.asbytes():
            raise DeviceUnreachable(
                f"{config.name}: {entry} now offers {key_fingerprint(key)}, but {path} records "
                f"{key_fingerprint(recorded)}; if the board was reinstalled, remove the old line first")
        return key.get_name(), key_fingerprint(key), path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"{entry} {key.get_name()} {key.get_base64()}\n")
    return key.get_name(), key_fingerprint(key), path, True


def _local_user() -> str:
    import getpass

    return getpass.getuser()
