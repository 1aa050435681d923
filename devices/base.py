"""The device protocol: what the coordinator may ask of any device, whatever its transport.

Nothing outside `devices/` knows which transport it holds. A transport implements `push` (by
content hash), `run` (argv, timeout) and `close`; devices that can run Python inherit `measure`,
`fingerprint` and `health` from `PythonRunnerDevice`, which drives `runner.py` over those two
primitives, so a remote transport only adds a module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from harness.errors import DeviceError, RuntimeMissing

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

    def argv(self) -> list[str]:
        return [f"--{k}={v}" for k, v in asdict(self).items()]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


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


@dataclass(frozen=True)
class Job:
    """One measurement: a model, on one delegate and thread count, under one protocol."""

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

    def health(self) -> Health: ...
    def fingerprint(self) -> Mapping[str, Any]: ...
    def push(self, local: Path) -> str: ...
    def run(self, argv: Sequence[str], timeout_s: float) -> ExecResult: ...
    def measure(self, job: Job) -> dict[str, Any]: ...
    def close(self) -> None: ...


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_id(fingerprint: Mapping[str, Any]) -> str:
    """A short stable id of the identity part of a fingerprint: same board, same id."""
    identity = {k: fingerprint.get(k) for k in IDENTITY_KEYS}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


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


class PythonRunnerDevice:
    """Measurement, fingerprint and health for any device that can run `python runner.py`."""

    name: str
    python: str
    probe_timeout_s: float = 60.0

    def push(self, local: Path) -> str:  # pragma: no cover - provided by the transport
        raise NotImplementedError

    def run(self, argv: Sequence[str], timeout_s: float) -> ExecResult:  # pragma: no cover
        raise NotImplementedError

    def measure(self, job: Job) -> dict[str, Any]:
        runner = self.push(RUNNER_PATH)
        argv = [self.python, runner, "--graph", self.push(job.model), f"--delegate={job.delegate}",
                f"--num_threads={job.num_threads}", *job.protocol.argv()]
        argv += [f"--delegate_option={k}={v}" for k, v in job.delegate_options.items()]
        if job.inputs is not None:
            argv += ["--inputs", self.push(job.inputs)]
        result = self.run(argv, job.timeout_s)
        report = parse_runner_json(result)
        if result.exit_code == RUNNER_EXIT_NO_RUNTIME:
            raise RuntimeMissing(f"{self.name}: {report['error']['message']}", report.get("install_hint"))
        return report

    def probe(self) -> dict[str, Any]:
        result = self.run([self.python, self.push(RUNNER_PATH), "--probe"], self.probe_timeout_s)
        return parse_runner_json(result)

    def fingerprint(self) -> dict[str, Any]:
        report = self.probe()
        info = dict(report["fingerprint"])
        runtime = report.get("runtime") or {}
        info["runtime"] = runtime.get("name")
        info["runtime_version"] = runtime.get("version")
        info["fingerprint_id"] = fingerprint_id(info)
        return info

    def health(self) -> Health:
        try:
            report = self.probe()
        except DeviceError as exc:
            return Health(reachable=False, detail=str(exc))
        runtime = report.get("runtime") or {}
        detail = "" if runtime else f"{report.get('runtime_error')}; install: {report.get('install_hint')}"
        return Health(reachable=True, runtime=runtime.get("name"), runtime_version=runtime.get("version"),
                      temperature_c=report["telemetry"]["before"]["temp_c"], detail=detail)
