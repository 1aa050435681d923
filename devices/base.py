"""The device protocol: what the coordinator may ask of any device, whatever its transport.

Nothing outside `devices/` knows which transport it holds. A transport implements `push` (by
content hash), `run` (argv, timeout) and `close`; devices that can run Python inherit `measure`,
`fingerprint` and `health` from `PythonRunnerDevice`, which drives `runner.py` over those two
primitives, so a remote transport only adds a module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, TypeVar

from devices import coral
from harness.errors import DeviceError, DeviceUnreachable, RuntimeMissing

T = TypeVar("T")

RUNNER_PATH = Path(__file__).with_name("runner.py")
RUNNER_EXIT_NO_RUNTIME = 3
# Fingerprint keys that identify the hardware and system; telemetry and runtime are recorded apart.
IDENTITY_KEYS = ("machine", "system", "kernel", "os", "cpu_model", "cores", "device_model", "governor")


@dataclass(frozen=True)
class MeasurementProtocol:
    """benchmark_model's protocol, frozen and stored with every cell."""

    warmup_runs: int = 1
    warmup_min_secs: float = 0.5
    num_runs: int = 50
    min_secs: float = 1.0
    max_secs: float = 150.0
    # Launches per cell: each a fresh process (the runner, or benchmark_model) with its own warm-up,
    # interleaved with the other cells' launches on the device. Invokes inside one process are not
    # independent samples; launches are the unit of evidence the gate counts.
    repetitions: int = 5

    def argv(self) -> list[str]:
        """The runner's flags (benchmark_model's names); `repetitions` is the sweep's business."""
        return [f"--{k}={v}" for k, v in asdict(self).items() if k != "repetitions"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Cooldown:
    """Inventory `cooldown:` of a device: before each cell, wait until the hottest thermal zone is
    under `max_temp_c`, polling every `poll_s`; after `timeout_s` measure anyway, with a warning."""

    max_temp_c: float
    timeout_s: float = 300.0
    poll_s: float = 5.0


@dataclass(frozen=True)
class ExecResult:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    seconds: float


@dataclass(frozen=True)
class Health:
    reachable: bool
    runtime: str | None = None
    runtime_version: str | None = None
    temperature_c: float | None = None
    detail: str = ""
    fingerprint: Mapping[str, Any] | None = None  # when the device could be fingerprinted
    edgetpu: Mapping[str, Any] | None = None  # a Coral host's runtime and attached TPUs (the runner's probe)


@dataclass(frozen=True)
class Job:
    """One launch: a model, on one delegate and thread count, under one protocol; with `inputs`,
    the evaluation set is run after the timed runs, for accuracy."""

    model: Path
    delegate: str
    num_threads: int
    protocol: MeasurementProtocol
    timeout_s: float
    inputs: Path | None = None
    delegate_options: Mapping[str, str] = field(default_factory=dict)


class Device(Protocol):
    name: str
    transport: str
    delegates: tuple[str, ...]

    cooldown: Cooldown | None
    run_timeout_s: float | None  # the device's own limit per run, if its inventory sets one

    def health(self) -> Health: ...
    def fingerprint(self) -> Mapping[str, Any]: ...
    def telemetry(self) -> Mapping[str, Any]: ...
    def push(self, local: Path) -> str: ...
    def run(self, argv: Sequence[str], timeout_s: float) -> ExecResult: ...
    def measure(self, job: Job) -> dict[str, Any]: ...  # one launch: a fresh process on the device
    def close(self) -> None: ...


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_printed(out: str) -> str | None:
    """The digest a device's `sha256sum FILE` printed: before a copy already there is trusted (one
    edited in place keeps its size); None where the device has no sha256sum, so size alone decides."""
    digest = out.split(maxsplit=1)[0] if out.strip() else ""
    return digest if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest) else None


def fingerprint_id(fingerprint: Mapping[str, Any]) -> str:
    """A short stable id of the identity part of a fingerprint: same board, same id."""
    identity = {k: fingerprint.get(k) for k in IDENTITY_KEYS}
    if fingerprint.get("accelerator"):  # a host with an Edge TPU is another target than the host alone
        identity["accelerator"] = fingerprint["accelerator"]
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


# What tells one board from another of the same image: its serial number (ADB's ro.serialno, a
# Pi's), the SSH server's host key, the OS install's machine id. The fingerprint says what kind of
# device it is; these say which one.
UNIQUE_KEYS = ("serial", "host_key", "machine_id")


def device_identity(fingerprint: Mapping[str, Any], name: str) -> str:
    """The key a device's cells, history and `devices` row are stored under: its fingerprint id
    plus whatever it has of a serial, host key and machine id, so two boards of one image are never
    pooled and a renamed inventory entry of the same board is still matched. A device that shows
    none of them is told apart by its inventory name."""
    from harness.schema import legacy_identity

    unique = "|".join(f"{k}={fingerprint[k]}" for k in UNIQUE_KEYS if fingerprint.get(k))
    if not unique:
        return legacy_identity(fingerprint["fingerprint_id"], name)
    return f"{fingerprint['fingerprint_id']}-{hashlib.sha256(unique.encode()).hexdigest()[:10]}"


def parse_runner_json(result: ExecResult) -> dict[str, Any]:
    """The runner's JSON object: the last stdout line that is one. Missing → DeviceError."""
    for line in reversed(result.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                report = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(report, dict) and "schema_version" in report:
                return report
    tail = (result.stderr.strip().splitlines() or ["(no stderr)"])[-5:]
    raise DeviceError(f"runner exited {result.exit_code} without a JSON report: " + " | ".join(tail))


class ConnectionLost(Exception):
    """A connection-level failure that trying again may cure (refused, reset, timed out, dropped)."""


class Reconnecting:
    """What remote transports share: their common settings, and retries. `_with_retries(step,
    action)` runs `action`; when it raises ConnectionLost, the connection is dropped (`_drop`) and
    `action` tried again after `retry_backoff_s`, doubling, `retries` times; other errors pass at
    once. The final error names the first failure too (a link lost mid-run, then refused).

    A command cut off by a lost connection may still run on the device (sshd keeps a command that
    has no tty, adbd notices a dead Wi-Fi link late), so before each attempt `_reap_orphans` kills
    what the transport remembers of it (devices/orphans.py): a retry never measures beside it."""

    def __init__(self, config: Any, log: Callable[[str], None] | None = None):
        """The settings every remote transport's inventory entry has."""
        self.config = config
        self.name = config.name
        self.delegates = tuple(config.delegates)
        self.accelerator = getattr(config, "accelerator", None)
        self.cooldown = config.cooldown
        self.run_timeout_s = config.run_timeout_s
        self.probe_timeout_s = max(60.0, config.connect_timeout_s)
        self.log = log or (lambda message: None)

    def _drop(self) -> None:  # pragma: no cover - provided by the transport
        raise NotImplementedError

    def _reap_orphans(self) -> None:  # pragma: no cover - provided by the transport
        """Kill, over the current connection, a command of this device's that may still be running
        after its connection was lost (or its timeout kill failed); nothing when there is none.
        ConnectionLost when the device cannot be reached to do it, DeviceError when it may still
        run (then it stays remembered)."""
        raise NotImplementedError

    def _reap_now(self) -> None:
        """Kill a command past its timeout at once. When that fails, the device still remembers
        it, and it is killed before the next command runs there (`_with_retries`)."""
        try:
            self._reap_orphans()
        except ConnectionLost as exc:
            self.log(f"{self.name}: {exc}; it is killed before the next command runs")
        except DeviceError as exc:  # it may still run: the next command fails with this reason
            self.log(str(exc))

    def _with_retries(self, step: str, action: Callable[[], T]) -> T:
        delay, first = self.config.retry_backoff_s, None
        for attempt in range(self.config.retries + 1):
            try:
                # Before every attempt, not only retries: a command left running by an attempt that
                # gave up, or by a failed timeout kill, must not run beside the next call either.
                # When it cannot be killed (the device still unreachable) the attempt fails like a
                # lost connection, with that reason, and `action` does not run: nothing is measured
                # beside a process that may still be running.
                self._reap_orphans()
                return action()
            except ConnectionLost as exc:
                self._drop()
                first = first or str(exc)
                if attempt == self.config.retries:
                    then = f"; then {exc}" if str(exc) != first else ""
                    raise DeviceUnreachable(f"{self.name}: {step}: {first}{then} (gave up after "
                                            f"{attempt + 1} attempt{'s' * (attempt > 0)})") from None
                self.log(f"{self.name}: {step}: {exc}; retrying in {delay:g} s")
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")


def score_on_host(model: Path, inputs: Path, timeout_s: float) -> dict[str, Any]:
    """The evaluation set's outputs computed on this host with TFLite's reference kernels, for a
    device that cannot run the Python runner (a phone without Python): the runner's accuracy block,
    or {"error": ...}."""
    import subprocess
    import sys

    argv = [sys.executable, str(RUNNER_PATH), "--graph", str(model), "--delegate=reference", "--num_threads=1",
            "--warmup_runs=0", "--warmup_min_secs=0", "--num_runs=1", "--min_secs=0", "--inputs", str(inputs)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": f"the host's reference run passed its {timeout_s:g} s timeout"}
    try:
        report = parse_runner_json(ExecResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr, 0.0))
    except DeviceError as exc:
        return {"error": str(exc)}
    if report.get("error"):
        return {"error": f"{report['error']['stage']} failed on the host: {report['error']['message']}"}
    return report.get("accuracy") or {"error": "the host's reference run returned no outputs"}


class PythonRunnerDevice:
    """Measurement, fingerprint and health for any device that can run `python runner.py`.

    A transport provides `push`, `run` and `close`, and may override `missing_python` (what a
    failed start of the interpreter looks like there) and `install_hint` (the exact command that
    installs a runtime on that device)."""

    name: str
    python: str
    accelerator: str | None = None  # edgetpu: a Coral Edge TPU on this host
    cooldown: Cooldown | None = None
    run_timeout_s: float | None = None
    probe_timeout_s: float = 60.0
    bytes_pushed: int = 0
    files_pushed: int = 0
    files_reused: int = 0
    # held while this host does work for the device (the sweep sets a lock shared with the launches
    # timed on this host, so that work never runs beside them)
    host_work: Any = contextlib.nullcontext()

    def _sha256(self, path: Path) -> str:
        """sha256 of a local file, remembered per (path, size, mtime) for this device's life."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        hashes = self.__dict__.setdefault("_hashes", {})
        if key not in hashes:
            hashes[key] = sha256_file(path)
        return hashes[key]

    def missing_python(self, result: ExecResult) -> RuntimeMissing | None:
        return None

    def install_hint(self) -> str | None:
        return None

    def _runner(self, argv: Sequence[str], timeout_s: float) -> tuple[ExecResult, dict[str, Any]]:
        result = self.run([self.python, self.push(RUNNER_PATH), *argv], timeout_s)
        missing = self.missing_python(result)
        if missing is not None:
            raise missing
        return result, parse_runner_json(result)

    def push(self, local: Path) -> str:  # pragma: no cover - provided by the transport
        raise NotImplementedError

    def run(self, argv: Sequence[str], timeout_s: float) -> ExecResult:  # pragma: no cover
        raise NotImplementedError

    def measure(self, job: Job) -> dict[str, Any]:
        argv = ["--graph", self.push(job.model), f"--delegate={job.delegate}", f"--num_threads={job.num_threads}",
                *job.protocol.argv()]
        argv += [f"--delegate_option={k}={v}" for k, v in job.delegate_options.items()]
        if job.inputs is not None:
            argv += ["--inputs", self.push(job.inputs)]
        result, report = self._runner(argv, job.timeout_s)
        report["runner_sha256"] = self._sha256(RUNNER_PATH)
        if result.exit_code == RUNNER_EXIT_NO_RUNTIME:
            error = report["error"]
            hint = (coral.INSTALL_HINT if error.get("kind") == "edgetpu_runtime_missing"
                    else self.install_hint() or report.get("install_hint"))
            raise RuntimeMissing(f"{self.name}: {error['message']}", hint)
        return report

    def probe(self) -> dict[str, Any]:
        return self._runner(["--probe", *(["--edgetpu"] if self.accelerator == "edgetpu" else [])],
                            self.probe_timeout_s)[1]

    def telemetry(self) -> dict[str, Any]:
        """Temperatures and CPU frequencies now (the runner's `--telemetry`, no runtime imported)."""
        return self._runner(["--telemetry"], self.probe_timeout_s)[1]["telemetry"]["before"]

    def fingerprint(self) -> dict[str, Any]:
        return self.own_keys(self._fingerprint(self.probe()))

    def own_keys(self, info: dict[str, Any]) -> dict[str, Any]:
        """What the transport knows of this very device beyond the runner's fingerprint (an SSH
        server's host key); the runner reports its serial and machine id itself."""
        return info

    @staticmethod
    def _fingerprint(report: dict[str, Any]) -> dict[str, Any]:
        info = dict(report["fingerprint"])
        runtime = report.get("runtime") or {}
        info["runtime"] = runtime.get("name")
        info["runtime_version"] = runtime.get("version")
        edgetpu = report.get("edgetpu")
        if edgetpu is not None:  # the runtime and the TPUs' paths are provenance, not identity
            info["accelerator"] = "edgetpu"
            info["edgetpu_runtime"] = edgetpu.get("runtime_version") or (
                f"pycoral {edgetpu['pycoral']}" if edgetpu.get("pycoral") else None)
            info["edgetpu_tpus"] = ", ".join(f"{t['type']}:{t.get('path')}" for t in edgetpu.get("tpus") or [])
        info["fingerprint_id"] = fingerprint_id(info)
        return info

    def health(self) -> Health:
        try:
            report = self.probe()
            info = self.own_keys(self._fingerprint(report))
        except RuntimeMissing as exc:  # reachable, but no interpreter to run the runner
            return Health(reachable=True, detail=str(exc))
        except DeviceError as exc:
            return Health(reachable=False, detail=str(exc))
        runtime = report.get("runtime") or {}
        hint = self.install_hint() or report.get("install_hint")
        detail = "" if runtime else f"{report.get('runtime_error')}; install: {hint}"
        edgetpu = report.get("edgetpu")
        if edgetpu is not None:
            _, problem = coral.describe(edgetpu)
            detail = "; ".join(filter(None, [detail, problem and f"Edge TPU: {problem}"]))
        return Health(reachable=True, runtime=runtime.get("name"), runtime_version=runtime.get("version"),
                      temperature_c=report["telemetry"]["before"]["temp_c"], detail=detail,
                      fingerprint=info, edgetpu=edgetpu)
