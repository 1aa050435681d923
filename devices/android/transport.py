"""The ADB transport: one adb-shell connection to a phone, what runs over it, and its retries.

- Connection: ADB over TCP (`host`/`port`, as `adb tcpip` or wireless debugging leave a phone) or
  USB (`serial`, through libusb). The host's key is `adbkey` (default ~/.android/adbkey, the file
  Google's `adb` uses; generated like `adb` does when missing). A phone that has not accepted it
  shows the "Allow USB debugging?" prompt; the error says so.
- Files go to `workdir/<sha256><suffix>` (default /data/local/tmp/harness) over the sync
  service only when the phone lacks that hash and size; `pull` brings one back.
- Commands are argv lists joined with `shlex.join`, run by the phone's shell (shell protocol v1:
  stdout and stderr arrive merged). The exit status comes from a marker the harness appends and
  strips; the shell's pid goes to a file first, so a command past its timeout is killed with its
  whole process group (adbd makes every shell a session leader).
- Connection errors (refused, reset, a link lost mid-run) are retried with back-off after a
  reconnect; authentication refusals and command failures are not. adbd notices a dead Wi-Fi
  link late, so the command cut off is killed first (its pid file's group, and whatever carries
  its nonce: devices/orphans.py); a retry never measures beside it.
"""

from __future__ import annotations

import io
import os
import shlex
import socket
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from devices import orphans
from devices.base import ConnectionLost, ExecResult, Reconnecting, sha256_file, sha256_printed
from harness.errors import DeviceTimeout, DeviceUnreachable

EXIT_MARK = "harness-exit-"


def _adb_shell():
    from adb_shell import adb_device, exceptions  # imported when an ADB device is used

    return adb_device, exceptions


def _tcp_transport_class():
    from adb_shell.exceptions import TcpTimeoutException
    from adb_shell.transport.base_transport import BaseTransport

    class KeepAliveTcpTransport(BaseTransport):
        """adb-shell's TCP transport, with what a benchmark run needs: the end of the stream is an
        error (adb-shell's own transport spins on it until a timeout), TCP_NODELAY, keep-alives and
        TCP_USER_TIMEOUT so a cut link is noticed in `link_timeout_s`."""

        def __init__(self, host: str, port: int, keepalive_s: float, link_timeout_s: float):
            self.host, self.port = host, port
            self.keepalive_s, self.link_timeout_s = keepalive_s, link_timeout_s
            self.sock: socket.socket | None = None

        def connect(self, transport_timeout_s):
            sock = socket.create_connection((self.host, self.port), timeout=transport_timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if hasattr(socket, "TCP_KEEPIDLE"):
                idle = max(1, int(self.keepalive_s))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, idle)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, max(1, int(self.link_timeout_s / idle)))
            if hasattr(socket, "TCP_USER_TIMEOUT"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.link_timeout_s * 1000))
            sock.settimeout(None)
            self.sock = sock

        def close(self):
            if self.sock is not None:
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self.sock.close()
                self.sock = None

        def bulk_read(self, numbytes, transport_timeout_s):
            if self.sock is None:
                raise ConnectionResetError("not connected")
            self.sock.settimeout(transport_timeout_s)
            try:
                data = self.sock.recv(numbytes)
            except socket.timeout:
                raise TcpTimeoutException(f"no data from {self.host}:{self.port} for {transport_timeout_s} s") from None
            if not data:
                raise ConnectionResetError(f"{self.host}:{self.port} closed the connection")
            return data

        def bulk_write(self, data, transport_timeout_s):
            if self.sock is None:
                raise ConnectionResetError("not connected")
            self.sock.settimeout(transport_timeout_s)
            try:
                self.sock.sendall(data)
            except socket.timeout:
                raise TcpTimeoutException(f"cannot send to {self.host}:{self.port} for {transport_timeout_s} s") from None
            return len(data)

    return KeepAliveTcpTransport


_KEY_LOCK = threading.Lock()  # the devices of a sweep connect in parallel and share one adbkey


def ensure_adbkey(path: Path) -> Path:
    """The private key at `path`, with its `.pub`; both generated (RSA 2048, as `adb` does) when
    the key is missing, the public half rebuilt when only it is missing. Never half-written: a
    new key is made under a temporary name and linked into place only if no other process made
    one meanwhile (its key wins); the public half is written aside and renamed."""
    from adb_shell.auth.keygen import keygen, write_public_keyfile

    path = path.expanduser()
    public = Path(f"{path}.pub")
    with _KEY_LOCK:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fresh = path.with_name(f".{path.name}.{os.getpid()}.new")
            keygen(str(fresh))
            os.chmod(fresh, 0o600)
            try:
                os.link(fresh, path)
                os.replace(f"{fresh}.pub", public)
            except FileExistsError:
                pass
            finally:
                for leftover in (fresh, Path(f"{fresh}.pub")):
                    leftover.unlink(missing_ok=True)
        if not public.exists():
            aside = public.with_name(f".{public.name}.{os.getpid()}.new")
            write_public_keyfile(str(path), str(aside))
            os.replace(aside, public)
    return path


class ADBTransport(Reconnecting):
    """push / pull / run / close on one phone, over one connection opened when first needed."""

    def __init__(self, config: Any, log: Callable[[str], None] | None = None):
        super().__init__(config, log)
        self._device = None
        self._present: set[str] = set()
        self._workdir_made = False
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._orphan: orphans.Orphan | None = None  # a command not seen to end: killed before the next
        self.bytes_pushed = self.files_pushed = self.files_reused = 0

    @property
    def address(self) -> str:
        return self.config.serial or f"{self.config.host}:{self.config.port}"

    def sha256(self, path: Path) -> str:
        """sha256 of a local file, remembered per (path, size, mtime) for this transport's life."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = sha256_file(path)
        return self._hashes[key]

    # -- connection -----------------------------------------------------------------------------

    def _open(self):
        adb_device, exceptions = _adb_shell()
        from adb_shell.auth.sign_cryptography import CryptographySigner

        try:
            key = ensure_adbkey(Path(self.config.adbkey))
            signer = CryptographySigner(str(key))
        except (OSError, ValueError) as exc:  # unwritable directory, unreadable or malformed key
            raise DeviceUnreachable(f"{self.name}: adbkey {self.config.adbkey}: {exc}") from None
        if self.config.serial is not None:
            try:
                device = adb_device.AdbDeviceUsb(serial=self.config.serial,
                                                 default_transport_timeout_s=self.config.connect_timeout_s)
            except (ImportError, OSError, exceptions.UsbDeviceNotFoundError) as exc:
                raise DeviceUnreachable(f"{self.name}: USB device {self.config.serial}: {exc} (USB needs libusb-1.0 "
                                        "and permission on the device node; or use ADB over TCP: `adb tcpip 5555`, "
                                        "then `host:` in the inventory)") from None
        else:
            transport = _tcp_transport_class()(self.config.host, self.config.port, self.config.keepalive_s,
                                               self.config.link_timeout_s)
            device = adb_device.AdbDevice(transport, default_transport_timeout_s=self.config.connect_timeout_s,
                                          banner="harness")
        prompted = []
        try:
            device.connect(rsa_keys=[signer], transport_timeout_s=self.config.connect_timeout_s,
                           auth_timeout_s=self.config.auth_timeout_s, read_timeout_s=self.config.connect_timeout_s,
                           auth_callback=lambda _device: prompted.append(True))
        except (exceptions.TcpTimeoutException, exceptions.AdbTimeoutError) as exc:
            device.close()
            if prompted:
                raise DeviceUnreachable(
                    f"{self.name}: {self.address} did not accept the key {key}.pub: accept the \"Allow USB "
                    f"debugging?\" RSA prompt on the phone (tick \"Always allow from this computer\"), then run "
                    f"again (waited {self.config.auth_timeout_s:g} s)") from None
            raise ConnectionLost(f"{self.address} did not answer the ADB handshake: {exc}") from exc
        except exceptions.DeviceAuthError as exc:
            device.close()
            raise DeviceUnreachable(f"{self.name}: {self.address} refused authentication: {exc}") from None
        except (OSError, exceptions.InvalidResponseError, exceptions.InvalidCommandError,
                exceptions.InvalidChecksumError) as exc:
            device.close()
            raise ConnectionLost(f"cannot connect to {self.address}: {exc}") from exc
        return device

    def _connection(self):
        if self._device is None or not self._device.available:
            self._drop()
            self._device = self._open()
        return self._device

    def _drop(self) -> None:
        if self._device is not None:
            try:
                self._device.close()
            except OSError as exc:
                self.log(f"{self.name}: closing a dead connection: {exc}")
        self._device = None

    def _lost(self, exc: BaseException) -> bool:
        """Whether an exception from adb-shell means the connection is gone (or confused)."""
        _, exceptions = _adb_shell()
        return isinstance(exc, (OSError, exceptions.InvalidResponseError, exceptions.InvalidCommandError,
                                exceptions.InvalidChecksumError, exceptions.AdbConnectionError))

    def close(self) -> None:
        self._drop()

    # -- files ----------------------------------------------------------------------------------

    def push(self, local: Path, executable: bool = False) -> str:
        local = Path(local)
        digest = self.sha256(local)
        return self._with_retries(f"push {local.name}", lambda: self._push(local, digest, executable))

    def _push(self, local: Path, digest: str, executable: bool) -> str:
        _, exceptions = _adb_shell()
        remote = f"{self.config.workdir.rstrip('/')}/{digest}{''.join(local.suffixes[-1:])}"
        if remote in self._present:
            return remote
        size = local.stat().st_size
        timeout = self.config.link_timeout_s + self.config.connect_timeout_s
        try:
            device = self._connection()
            mode, remote_size, _ = device.stat(remote, transport_timeout_s=timeout, read_timeout_s=timeout)
            if mode and remote_size == size and sha256_printed(self._shell(
                    device, shlex.join(["sha256sum", "--", remote]), timeout)) in (digest, None):
                self._present.add(remote)
                self.files_reused += 1
                return remote
            if not self._workdir_made:
                self._shell(device, shlex.join(["mkdir", "-p", self.config.workdir]), timeout)
                self._workdir_made = True
            device.push(str(local), remote, st_mode=0o100755 if executable else 0o100644,
                        transport_timeout_s=timeout, read_timeout_s=timeout)
            mode, remote_size, _ = device.stat(remote, transport_timeout_s=timeout, read_timeout_s=timeout)
        except exceptions.PushFailedError as exc:
            raise DeviceUnreachable(f"{self.name}: push {local.name} to {remote}: {_text(exc)}") from None
        except (exceptions.AdbTimeoutError, exceptions.TcpTimeoutException) as exc:
            raise ConnectionLost(f"push {local.name}: {exc}") from exc
        except Exception as exc:
            if self._lost(exc):
                raise ConnectionLost(f"push {local.name}: {exc}") from exc
            raise
        if remote_size != size:
            raise DeviceUnreachable(f"{self.name}: push {local.name}: {remote} has {remote_size} bytes, "
                                    f"expected {size}")
        self.bytes_pushed += size
        self.files_pushed += 1
        self._present.add(remote)
        return remote

    def pull(self, remote: str, timeout_s: float) -> bytes | None:
        """The bytes of a file on the phone (sync RECV), or None when it is not there."""
        return self._with_retries(f"pull {remote}", lambda: self._pull(remote, timeout_s))

    def _pull(self, remote: str, timeout_s: float) -> bytes | None:
        _, exceptions = _adb_shell()
        try:
            device = self._connection()
            mode, _, _ = device.stat(remote, transport_timeout_s=timeout_s, read_timeout_s=timeout_s)
            if not mode:
                return None
            sink = io.BytesIO()
            device.pull(remote, sink, transport_timeout_s=timeout_s, read_timeout_s=timeout_s)
        except exceptions.AdbCommandFailureException as exc:
            raise DeviceUnreachable(f"{self.name}: pull {remote}: {_text(exc)}") from None
        except (exceptions.AdbTimeoutError, exceptions.TcpTimeoutException) as exc:
            raise ConnectionLost(f"pull {remote}: {exc}") from exc
        except Exception as exc:
            if self._lost(exc):
                raise ConnectionLost(f"pull {remote}: {exc}") from exc
            raise
        return sink.getvalue()

    # -- run ------------------------------------------------------------------------------------

    def _shell(self, device, command: str, timeout_s: float) -> str:
        out = device.shell(command, transport_timeout_s=timeout_s, read_timeout_s=timeout_s, timeout_s=timeout_s,
                           decode=False)
        return out.decode(errors="replace")

    def run(self, argv: Sequence[str], timeout_s: float) -> ExecResult:
        argv = tuple(str(a) for a in argv)
        return self._with_retries(f"run {Path(argv[0]).name}", lambda: self._run(argv, timeout_s))

    def _run(self, argv: tuple[str, ...], timeout_s: float) -> ExecResult:
        _, exceptions = _adb_shell()
        nonce = uuid.uuid4().hex[:12]
        pidfile = self._pidfile(nonce)
        mark = f"{EXIT_MARK}{nonce}:"
        # The shell records its pid (the session, hence the group, to kill), marks the environment
        # with this run's nonce (inherited by all the command starts: devices/orphans.py), runs the
        # command with stderr merged, then prints the exit status after a marker of this run only.
        mkdir = "" if self._workdir_made else f"mkdir -p {shlex.quote(self.config.workdir)} && "
        command = (f"{mkdir}echo $$ > {shlex.quote(pidfile)}; {orphans.export(nonce)}; {shlex.join(argv)} 2>&1; "
                   f"harness_rc=$?; echo; echo {mark}$harness_rc; rm -f {shlex.quote(pidfile)}")
        name = Path(argv[-1] if argv[0] == "taskset" and len(argv) > 2 else argv[0]).name
        orphan = orphans.Orphan(name, nonce)
        device = self._connection()
        self._orphan = orphan  # from here on it may run on the phone until it is seen to end
        started = time.monotonic()
        try:
            output = self._shell(device, command, timeout_s)
        except (exceptions.AdbTimeoutError, exceptions.TcpTimeoutException):
            self._drop()
            self._orphan = replace(orphan, why=f"past its {timeout_s:g} s timeout")
            self._reap_now()
            raise DeviceTimeout(f"{self.name}: {name} ran past its {timeout_s:g} s timeout") from None
        except Exception as exc:
            if self._lost(exc):  # adbd notices a dead link late: the orphan is killed before the next try
                raise ConnectionLost(f"connection lost while {name} ran (after "
                                      f"{time.monotonic() - started:.1f} s): {exc}") from exc
            raise
        head, found, tail = output.rpartition(mark)
        if not found or not tail.strip().lstrip("-").isdigit():
            raise ConnectionLost(f"{name} ended without its exit status (the connection closed after "
                                  f"{time.monotonic() - started:.1f} s)")
        self._orphan = None
        self._workdir_made = True  # the command's pid file went there
        stdout = head[:-1] if head.endswith("\n") else head  # the `echo` before the marker
        stdout = stdout.replace("\r\n", "\n")
        return ExecResult(argv, int(tail.strip()), stdout, "", time.monotonic() - started)

    def _pidfile(self, nonce: str) -> str:
        return f"{self.config.workdir.rstrip('/')}/.run-{nonce}.pid"

    def _reap_orphans(self) -> None:
        """Kill the command that a lost connection (or a failed timeout kill) left running, with
        everything it started, before anything else runs on the phone: its pid file names the
        group's leader, its nonce the rest (devices/orphans.py). The pid file goes once it is done."""
        orphan = self._orphan
        if orphan is None:
            return
        _, exceptions = _adb_shell()
        pidfile = shlex.quote(self._pidfile(orphan.nonce))
        command = (f"sh -c {shlex.quote(orphans.SCRIPT)} harness-reap {orphan.nonce} \"$(cat {pidfile} 2>/dev/null)\" "
                   f"&& rm -f {pidfile}")
        try:
            output = self._shell(self._connection(), command, 2 * orphans.WAIT_S + self.config.link_timeout_s)
        except Exception as exc:
            if isinstance(exc, (ConnectionLost, exceptions.AdbTimeoutError, exceptions.TcpTimeoutException)) \
                    or self._lost(exc):
                raise ConnectionLost(orphans.cannot_kill(orphan, exc)) from exc
            raise
        message = orphans.outcome(self.name, orphan, output)
        self._orphan = None
        self.log(message)


def _text(exc: BaseException) -> str:
    value = exc.args[0] if exc.args else exc
    return value.decode(errors="replace") if isinstance(value, (bytes, bytearray)) else str(value)
