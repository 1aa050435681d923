"""A simulated device (`transport: sim`): each launch sleeps `launch_s` and returns a report of the
runner's shape with `num_runs` timings around `latency_us`. No model is run and no accuracy is
reported. It exists to measure the coordinator itself (benchmarks/scale.py: a hundred devices,
in process or across a lab on Ray) and to rehearse a lab's inventory before its devices are
attached; its cells say `simulated` as their runtime, so they are never read as a measurement."""

from __future__ import annotations

import hashlib
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from devices.base import Cooldown, ExecResult, Health, Job, fingerprint_id

RUNTIME = {"name": "simulated", "version": "1"}


@dataclass(frozen=True)
class SimConfig:
    """Inventory keys of a `transport: sim` device."""

    name: str
    transport: str = "sim"
    delegates: tuple[str, ...] = ("cpu", "xnnpack")
    launch_s: float = 1.0  # wall time of one launch
    latency_us: float = 1000.0  # the timings a launch reports, +-1 % seeded jitter
    cooldown: Cooldown | None = None
    run_timeout_s: float | None = None
    description: str | None = None


class SimDevice:
    transport = "sim"

    def __init__(self, config: SimConfig, log=None):
        self.config, self.name, self.delegates = config, config.name, tuple(config.delegates)
        self.cooldown, self.run_timeout_s = config.cooldown, config.run_timeout_s
        self.bytes_pushed = self.files_pushed = self.files_reused = 0
        self.launches = 0
        self._pushed: set[str] = set()

    def _identity(self) -> dict[str, Any]:
        info = {"machine": "simulated", "system": "sim", "kernel": "simulated", "os": "simulated", "cpu_model": "simulated",
                "cores": 1, "device_model": "simulated device", "governor": None,
                "serial": hashlib.sha256(self.name.encode()).hexdigest()[:12], "host": platform.node(),
                "runtime": RUNTIME["name"], "runtime_version": RUNTIME["version"]}
        info["fingerprint_id"] = fingerprint_id(info)
        return info

    def fingerprint(self) -> dict[str, Any]:
        return self._identity()

    def health(self) -> Health:
        return Health(reachable=True, runtime=RUNTIME["name"], runtime_version=RUNTIME["version"],
                      fingerprint=self._identity(), detail="simulated")

    def telemetry(self) -> Mapping[str, Any]:
        return {"temp_c": None, "freq_khz": []}

    def push(self, local: Path) -> str:
        key = str(local)
        if key in self._pushed:
            self.files_reused += 1
        else:
            self._pushed.add(key)
            self.files_pushed += 1
            self.bytes_pushed += Path(local).stat().st_size
        return key

    def run(self, argv: Sequence[str], timeout_s: float) -> ExecResult:
        return ExecResult(tuple(argv), 0, "", "", 0.0)

    def measure(self, job: Job) -> dict[str, Any]:
        self.push(job.model)
        self.launches += 1
        time.sleep(self.config.launch_s)
        rng = random.Random(f"{self.name}/{job.model}/{job.delegate}/{job.num_threads}/{self.launches}")
        samples = [self.config.latency_us * (1 + rng.uniform(-0.01, 0.01)) for _ in range(job.protocol.num_runs)]
        telemetry = self.telemetry()
        return {"tool": "harness-runner", "runtime": dict(RUNTIME), "samples_us": samples,
                "timed_seconds": sum(samples) / 1e6, "init_us": 0.0, "first_inference_us": samples[0],
                "warmup": {"runs": 0, "seconds": 0.0}, "warnings": [],
                "telemetry": {"before": dict(telemetry), "after": dict(telemetry)},
                "model": {"path": str(job.model), "bytes": Path(job.model).stat().st_size}}

    def close(self) -> None:
        pass
