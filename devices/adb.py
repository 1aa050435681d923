"""Android devices over ADB (`adb-shell`): TFLite's `benchmark_model` measures, the harness parses.

- Connection: ADB over TCP (`host`/`port`, as `adb tcpip` or wireless debugging leave a phone) or
  USB (`serial`, through libusb). The host's key is `adbkey` (default ~/.android/adbkey, the file
  Google's `adb` uses; generated like `adb` does when missing). A phone that has not accepted it
  shows the "Allow USB debugging?" prompt; the error says so.
- Files go to `workdir/<sha256><suffix>` (default /data/local/tmp/harness) over the sync
  service only when the phone lacks that hash and size. The `benchmark_model` binary is pushed
  the same way from the host, or named `on_device:/path` when it is already there.
- Commands are argv lists joined with `shlex.join`, run by the phone's shell (shell protocol v1:
  stdout and stderr arrive merged). The exit status comes from a marker the harness appends and
  strips; the shell's pid goes to a file first, so a command past its timeout is killed with its
  whole process group (adbd makes every shell a session leader).
- One launch = one run of `taskset <cpu_mask> benchmark_model --graph=…` with the plan's protocol
  and the cell's delegate; its average is the launch's one sample, its parsed output is kept. A
  cell is `repetitions` launches, interleaved with other cells' by the sweep. The tool's own error
  lines are the reason of a failed cell.
- Accuracy: the Python runner on the phone where the inventory names a `python`; otherwise the
  outputs come from this host's reference kernels and the cell says `accuracy_source: host`.
- Connection errors (refused, reset, a link lost mid-run) are retried with back-off after a
  reconnect; authentication refusals and command failures are not. adbd notices a dead Wi-Fi
  link late, so the command cut off is killed first (its pid file's group, and whatever carries
  its nonce: devices/orphans.py); a retry never measures beside it.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from devices import orphans
from devices.base import (ConnectionLost, Cooldown, ExecResult, Health, Job, PythonRunnerDevice, Reconnecting,
                          fingerprint_id, score_on_host)
from harness.errors import ConfigError, DeviceError, DeviceTimeout, DeviceUnreachable, RuntimeMissing

DELEGATES = ("cpu", "xnnpack", "gpu", "nnapi")
ON_DEVICE = "on_device:"
EXIT_NOT_FOUND = 127  # the shell could not find the command
EXIT_MARK = "harness-exit-"
BENCHMARK_MODEL_HINT = (
    "download TFLite's prebuilt benchmark tool for the phone's ABI (android_aarch64_benchmark_model, "
    "linked from https://ai.google.dev/edge/litert/models/measurement) or build "
    "//tensorflow/lite/tools/benchmark:benchmark_model with --config=android_arm64, then set "
    "`benchmark_model: PATH` (pushed by the harness) or `benchmark_model: on_device:/data/local/tmp/benchmark_model`")
# Android's thermal status (PowerManager.THERMAL_STATUS_*), as `dumpsys thermalservice` prints it.
THERMAL_STATUS = ("none", "light", "moderate", "severe", "critical", "emergency", "shutdown")
PLAUSIBLE_C = (-30.0, 150.0)  # thermal zones outside this are not temperatures (disabled, raw ADC…)


@dataclass(frozen=True)
class ADBConfig:
    """Inventory keys of a `transport: adb` device."""

    name: str
    transport: str = "adb"
    serial: str | None = None  # USB serial number (as `adb devices` lists it)
    host: str | None = None  # ADB over TCP
    port: int = 5555
    adbkey: str = "~/.android/adbkey"
    benchmark_model: str | None = None  # host path of the Android binary, or on_device:/path
    cpu_mask: str | None = None  # hex mask for taskset, e.g. f0 for the big cores
    python: str | None = None  # a Python on the phone, for accuracy with the runner
    workdir: str = "/data/local/tmp/harness"
    delegates: tuple[str, ...] = DELEGATES
    cooldown: Cooldown | None = None
    connect_timeout_s: float = 10.0
    auth_timeout_s: float = 30.0  # how long the phone's "Allow USB debugging?" prompt is waited for
    run_timeout_s: float | None = None  # default: the plan's timeouts.run_timeout_s
    link_timeout_s: float = 20.0
    keepalive_s: float = 5.0
    retries: int = 2
    retry_backoff_s: float = 1.0
    description: str | None = None

    def check(self, source: str, where: str) -> None:
        """What the generic parser cannot see: one address, a hex mask, the binary's file."""
        if (self.serial is None) == (self.host is None):
            raise ConfigError(source, where, "give exactly one of `serial` (USB) or `host` (ADB over TCP)")
        for delegate in self.delegates:
            if delegate not in DELEGATES:
                raise ConfigError(source, f"{where}.delegates", f"{delegate!r} is not a benchmark_model delegate "
                                  f"on Android (known: {', '.join(DELEGATES)})")
        if self.cpu_mask is not None and (not re.fullmatch(r"(0x)?[0-9a-fA-F]+", self.cpu_mask)
                                          or int(self.cpu_mask, 16) == 0):
            raise ConfigError(source, f"{where}.cpu_mask", f"expected a non-zero hex CPU mask such as f0, "
                              f"got {self.cpu_mask!r}")
        if self.benchmark_model and not self.benchmark_model.startswith(ON_DEVICE):
            path = Path(self.benchmark_model).expanduser()
            if not path.is_file():
                raise ConfigError(source, f"{where}.benchmark_model", f"no such file: {path} (for a binary "
                                  f"already on the phone write {ON_DEVICE}/data/local/tmp/benchmark_model)")
        if not self.workdir.startswith("/"):
            raise ConfigError(source, f"{where}.workdir", f"expected an absolute path on the device, got {self.workdir!r}")



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


# -- pure parsers of what the phone prints ---------------------------------------------------------

_GETPROP_LINE = re.compile(r"^\[(?P<key>[^\]]+)\]: \[(?P<value>.*)\]\s*$")
_HAL_TEMPERATURE = re.compile(r"Temperature\{mValue=(?P<value>[-+0-9.eE]+|NaN), mType=(?P<type>-?\d+), "
                              r"mName=(?P<name>[^,]*), mStatus=(?P<status>-?\d+)\}")
_THERMAL_STATUS = re.compile(r"^\s*Thermal Status:\s*(\d+)", re.MULTILINE)


def parse_getprop(text: str) -> dict[str, str]:
    """`getprop` with no argument prints every property as `[key]: [value]`."""
    props = {}
    for line in text.splitlines():
        match = _GETPROP_LINE.match(line.strip("\r"))
        if match:
            props[match["key"]] = match["value"]
    return props


def parse_thermalservice(text: str) -> dict[str, Any]:
    """`dumpsys thermalservice` (Android 10+): the thermal status (0 none … 6 shutdown) and the
    temperatures the thermal HAL reports now (degrees C; the cached ones when HAL's are absent)."""
    status = _THERMAL_STATUS.search(text)
    current = text.split("Current temperatures from HAL:", 1)
    section = current[1] if len(current) == 2 else text
    temperatures = {}
    for match in _HAL_TEMPERATURE.finditer(section):
        if match["value"] != "NaN":
            temperatures[match["name"]] = {"value_c": float(match["value"]), "type": int(match["type"]),
                                           "status": int(match["status"])}
    code = int(status.group(1)) if status else None
    return {"status": code, "status_name": THERMAL_STATUS[code] if code is not None and code < len(THERMAL_STATUS)
            else None, "hal_temperatures": temperatures}


def parse_thermal_zones(text: str) -> dict[str, float]:
    """Lines `ZONE|TYPE|MILLIDEGREES` (what the telemetry command prints for each
    /sys/class/thermal zone) -> {"thermal_zoneN:TYPE": degrees C}, implausible readings dropped."""
    zones = {}
    for line in text.splitlines():
        parts = line.strip("\r").split("|")
        if len(parts) != 3 or not parts[2].lstrip("-").isdigit():
            continue
        celsius = int(parts[2]) / 1000.0
        if PLAUSIBLE_C[0] <= celsius <= PLAUSIBLE_C[1]:
            zones[f"{parts[0].rsplit('/', 1)[-1]}:{parts[1] or '?'}"] = celsius
    return zones


def _sections(text: str, marker: str) -> dict[str, str]:
    """Split the output of a compound command whose parts each start with `marker NAME`."""
    parts: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        line = line.rstrip("\r")
        if line.startswith(marker):
            current = line[len(marker):].strip()
            parts[current] = []
        else:
            parts.setdefault(current, []).append(line)
    return {k: "\n".join(v) for k, v in parts.items()}


def cpu_count(possible: str) -> int | None:
    """`/sys/devices/system/cpu/possible` ("0-7", "0-3,6") -> the number of CPUs."""
    total = 0
    for part in possible.strip().split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return None
        total += int(hi) - int(lo) + 1 if hi else 1
    return total or None


def benchmark_argv(binary: str, graph: str, job: Job, cpu_mask: str | None) -> list[str]:
    """The benchmark_model command line of one repetition of a cell."""
    p = job.protocol
    mask = cpu_mask.lower().removeprefix("0x") if cpu_mask else None  # toybox's taskset takes bare hex
    argv = (["taskset", mask] if mask else []) + [
        binary, f"--graph={graph}", f"--num_threads={job.num_threads}", f"--warmup_runs={p.warmup_runs}",
        f"--warmup_min_secs={p.warmup_min_secs:g}", f"--num_runs={p.num_runs}", f"--min_secs={p.min_secs:g}",
        f"--max_secs={p.max_secs:g}", "--report_peak_memory_footprint=true"]
    if job.delegate == "cpu":
        argv.append("--use_xnnpack=false")  # built-in kernels: the default XNNPACK delegate off
    elif job.delegate == "xnnpack":
        argv.append("--use_xnnpack=true")
    elif job.delegate == "gpu":
        argv.append("--use_gpu=true")
    elif job.delegate == "nnapi":
        argv.append("--use_nnapi=true")
        accelerator = job.delegate_options.get("nnapi_accelerator_name")
        if accelerator:
            argv.append(f"--nnapi_accelerator_name={accelerator}")
    else:
        raise DeviceError(f"benchmark_model has no {job.delegate!r} delegate (it has: {', '.join(DELEGATES)})")
    return argv


# Delegate names as benchmark_model's "Replacing … with delegate (NAME)" line prints them.
DELEGATE_NAMES = {"xnnpack": ("TfLiteXNNPackDelegate",), "gpu": ("TfLiteGpuDelegate", "TfLiteGpuDelegateV2"),
                  "nnapi": ("TfLiteNnapiDelegate",)}


def report_from_runs(runs: list[dict[str, Any]], delegate: str) -> dict[str, Any]:
    """The runner-schema report of a cell from its repetitions' parsed outputs: each repetition's
    average is one sample; init, first inference and warm-up are medians over the repetitions."""

    def median(key: str) -> float | None:
        values = [r[key] for r in runs if r.get(key) is not None]
        return statistics.median(values) if values else None

    samples = [r["avg_us"] if r.get("avg_us") is not None else r["inference_avg_us"] for r in runs]
    report: dict[str, Any] = {
        "samples_us": samples, "init_us": median("init_us"), "first_inference_us": median("first_inference_us"),
        "warmup": {"avg_us": median("warmup_avg_us")}, "warnings": [], "error": None,
        "benchmark_model": runs}
    peaks = [r["peak_memory_mb"] for r in runs if r.get("peak_memory_mb") is not None]
    if peaks:
        report["peak_rss_mb"] = max(peaks)
    lines = runs[0].get("delegates") or []
    if delegate in DELEGATE_NAMES:
        applied = [d for d in lines if d["name"] in DELEGATE_NAMES[delegate]]
        if applied:
            report["coverage"] = {"nodes_delegated": sum(d["nodes_delegated"] for d in applied),
                                  "nodes_total": sum(d["nodes_total"] for d in applied),
                                  "partitions": sum(d["partitions"] or 0 for d in applied)}
        else:
            report["coverage"] = None
            report["warnings"].append(f"{delegate} was requested but benchmark_model reported no node replaced "
                                      f"by it (the model ran on the CPU)")
    return report


def tool_failure(result: ExecResult, parsed: Mapping[str, Any]) -> str:
    """Why a benchmark_model run failed, in the tool's own words."""
    errors = list(parsed.get("errors") or [])
    if not errors:
        tail = [line.strip() for line in result.stdout.splitlines() if line.strip()][-5:]
        errors = tail or ["(no output)"]
    return f"benchmark_model exited {result.exit_code}: " + " | ".join(errors)


class ADBDevice(Reconnecting, PythonRunnerDevice):
    transport = "adb"

    def __init__(self, config: ADBConfig, log: Callable[[str], None] | None = None):
        super().__init__(config, log)
        self.python = config.python or ""
        self._device = None
        self._present: set[str] = set()
        self._workdir_made = False
        self._binary: tuple[str, str | None] | None = None  # (path on the phone, sha256)
        self._host_outputs: dict[str, dict] = {}
        self._orphan: orphans.Orphan | None = None  # a command not seen to end: killed before the next

    # -- connection -----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return self.config.serial or f"{self.config.host}:{self.config.port}"

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

    # -- push -----------------------------------------------------------------------------------

    def push(self, local: Path, executable: bool = False) -> str:
        local = Path(local)
        digest = self._sha256(local)
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
            if mode and remote_size == size:
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

    # -- benchmark_model ------------------------------------------------------------------------

    def benchmark_binary(self) -> tuple[str, str | None]:
        """(path on the phone, sha256) of benchmark_model, pushed by hash when it comes from the host;
        RuntimeMissing with the way to get it when there is none."""
        if self._binary is not None:
            return self._binary
        configured = self.config.benchmark_model
        if not configured:
            raise RuntimeMissing(f"{self.name}: no benchmark_model configured", BENCHMARK_MODEL_HINT)
        if configured.startswith(ON_DEVICE):
            path = configured[len(ON_DEVICE):]
            result = self.run(["sha256sum", path], self.probe_timeout_s)
            if result.exit_code != 0:
                raise RuntimeMissing(f"{self.name}: no benchmark_model at {path} on the phone "
                                     f"({result.stdout.strip() or 'exit ' + str(result.exit_code)})",
                                     BENCHMARK_MODEL_HINT)
            digest = result.stdout.split()[0] if result.stdout.split() else None
            self._binary = (path, digest)
        else:
            local = Path(configured).expanduser()
            self._binary = (self.push(local, executable=True), self._sha256(local))
        return self._binary

    def measure(self, job: Job) -> dict[str, Any]:
        """One launch: one run of benchmark_model, whose average is the launch's one sample."""
        from harness.parsers.benchmark_model import parse

        binary, digest = self.benchmark_binary()
        argv = benchmark_argv(binary, self.push(job.model), job, self.config.cpu_mask)
        before = self.telemetry()
        result = self.run(argv, job.timeout_s)
        parsed = parse(result.stdout)
        if result.exit_code == EXIT_NOT_FOUND:
            raise RuntimeMissing(f"{self.name}: cannot run {binary}: {result.stdout.strip()}", BENCHMARK_MODEL_HINT)
        if result.exit_code != 0 or (parsed.get("avg_us") is None and parsed.get("inference_avg_us") is None):
            return {"error": {"stage": "benchmark_model", "message": tool_failure(result, parsed)},
                    "benchmark_model": [parsed], "runtime": self._runtime(digest), "runner_sha256": digest,
                    "telemetry": {"before": before, "after": None}, "warnings": []}
        report = report_from_runs([parsed], job.delegate)
        report["runtime"] = self._runtime(digest)
        report["runner_sha256"] = digest
        report["argv"] = argv
        report["telemetry"] = {"before": before, "after": self.telemetry()}
        status = before.get("thermal_status")
        if status:
            report["warnings"].append(f"Android thermal status was {THERMAL_STATUS[min(status, 6)]} ({status}) "
                                      "before measuring: the phone may have been throttling")
        if job.inputs is not None:
            self._accuracy(job, report)
        return report

    @staticmethod
    def _runtime(digest: str | None) -> dict[str, Any]:
        return {"name": "benchmark_model", "version": f"sha256:{digest[:12]}" if digest else None}

    def _accuracy(self, job: Job, report: dict[str, Any]) -> None:
        """Outputs of the evaluation set: from the phone's Python runner when there is one and it
        can run this delegate; otherwise from this host's reference kernels (accuracy_source host)."""
        if self.config.python:
            argv = ["--graph", self.push(job.model), f"--delegate={job.delegate}",
                    f"--num_threads={job.num_threads}", "--warmup_runs=0", "--warmup_min_secs=0",
                    "--num_runs=1", "--min_secs=0", "--inputs", self.push(job.inputs)]
            try:
                _, runner = self._runner(argv, job.timeout_s)
            except DeviceError as exc:
                runner = {"error": {"message": str(exc)}}
            accuracy = runner.get("accuracy")
            if accuracy and "error" not in accuracy:
                report["accuracy"], report["accuracy_source"] = accuracy, "device"
                return
            why = (runner.get("error") or {}).get("message") or (accuracy or {}).get("error") or "no outputs"
            report["warnings"].append(f"accuracy scored on the host: the phone's Python runner could not: {why}")
        key = self._sha256(job.model)
        if key not in self._host_outputs:
            with self.host_work:  # the reference kernels run on this host: never beside a launch timed here
                self._host_outputs[key] = score_on_host(job.model, job.inputs, job.timeout_s)
        report["accuracy"], report["accuracy_source"] = self._host_outputs[key], "host"

    # -- fingerprint, telemetry, health ---------------------------------------------------------

    TELEMETRY_SCRIPT = (
        "for z in /sys/class/thermal/thermal_zone*; do "
        "echo \"$z|$(cat $z/type 2>/dev/null)|$(cat $z/temp 2>/dev/null)\"; done; "
        "echo '@@ freq'; cat /sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq 2>/dev/null; "
        "echo '@@ thermalservice'; dumpsys thermalservice 2>/dev/null; true")
    FINGERPRINT_SCRIPT = (
        "getprop; echo '@@ uname'; uname -m; uname -r; echo '@@ possible'; "
        "cat /sys/devices/system/cpu/possible 2>/dev/null; echo '@@ governor'; "
        "cat /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor 2>/dev/null; true")

    def telemetry(self) -> dict[str, Any]:
        result = self.run(["sh", "-c", self.TELEMETRY_SCRIPT], self.probe_timeout_s)
        parts = _sections(result.stdout, "@@ ")
        zones = parse_thermal_zones(parts.get("", ""))
        thermal = parse_thermalservice(parts.get("thermalservice", ""))
        if not zones:  # no readable zone: the HAL's CPU and skin temperatures
            zones = {f"hal:{name}": t["value_c"] for name, t in thermal["hal_temperatures"].items()
                     if t["type"] in (0, 3) and PLAUSIBLE_C[0] <= t["value_c"] <= PLAUSIBLE_C[1]}
        freqs = [int(x) for x in parts.get("freq", "").split() if x.isdigit()]
        return {"temp_c": max(zones.values()) if zones else None, "zones": zones, "freq_khz": freqs,
                "thermal_status": thermal["status"], "thermal_status_name": thermal["status_name"],
                "time_unix": time.time()}

    def fingerprint(self) -> dict[str, Any]:
        result = self.run(["sh", "-c", self.FINGERPRINT_SCRIPT], self.probe_timeout_s)
        parts = _sections(result.stdout, "@@ ")
        props = parse_getprop(parts.get("", ""))
        uname = parts.get("uname", "").split()
        governors = list(dict.fromkeys(parts.get("governor", "").split()))
        soc = " ".join(x for x in (props.get("ro.soc.manufacturer"), props.get("ro.soc.model")) if x) \
            or props.get("ro.board.platform") or props.get("ro.hardware")
        release, sdk = props.get("ro.build.version.release"), props.get("ro.build.version.sdk")
        build = props.get("ro.build.fingerprint")
        info: dict[str, Any] = {
            "machine": uname[0] if uname else None, "system": "Android",
            "kernel": uname[1] if len(uname) > 1 else None,
            "os": f"Android {release} (SDK {sdk}; {build})" if release else None,
            "cpu_model": soc, "cores": cpu_count(parts.get("possible", "")),
            "device_model": " ".join(x for x in (props.get("ro.product.manufacturer"), props.get("ro.product.model")) if x)
            or None, "governor": "/".join(governors) or None, "build_fingerprint": build, "sdk": sdk,
            "abi": props.get("ro.product.cpu.abi"), "serial": props.get("ro.serialno") or props.get("ro.boot.serialno"),
            "adb_address": self.address,
            "board_platform": props.get("ro.board.platform"), "python": None}
        try:
            runtime = self._runtime(self.benchmark_binary()[1])
        except RuntimeMissing as exc:
            runtime, info["runtime_error"] = {"name": None, "version": None}, str(exc)
        info["runtime"], info["runtime_version"] = runtime["name"], runtime["version"]
        info["fingerprint_id"] = fingerprint_id(info)
        return info

    def health(self) -> Health:
        try:
            info = self.fingerprint()
            temp = self.telemetry().get("temp_c")
        except DeviceError as exc:
            return Health(reachable=False, detail=str(exc))
        return Health(reachable=True, runtime=info["runtime"], runtime_version=info["runtime_version"],
                      temperature_c=temp, detail=info.get("runtime_error", ""), fingerprint=info)

    def install_hint(self) -> str:
        return (f"adb -s {self.address} push <a Python for Android with numpy and ai-edge-litert> "
                f"{self.config.workdir}/, then set `python:` for {self.name}; without it, accuracy is scored "
                "on the host")


def _text(exc: BaseException) -> str:
    value = exc.args[0] if exc.args else exc
    return value.decode(errors="replace") if isinstance(value, (bytes, bytearray)) else str(value)
