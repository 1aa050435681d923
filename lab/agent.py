"""What runs on a lab host: one agent per machine (harness.lock.machine_of) a sweep measures there,
a Ray actor holding that machine's `device:<lab host>/<machine>` resource for its life.

The agent opens the machine's devices with the same transports a coordinator uses in process
(`devices.open_device`), and does only what the device protocol asks: fingerprint, telemetry,
health, measure, close. It keeps the artifacts it is sent by content hash in a cache of the lab
host's own ($HARNESS_LAB_CACHE, default ~/.cache/harness/lab), so a model already there is never
sent again, by this sweep or the next. It stores nothing: reports go back to the coordinator,
which alone writes the store.

One measurement per host at a time holds on a lab host too: the agent of the lab host itself
(`local`) holds the host's work lock while a launch runs, and the other agents there hold it
while they write an artifact or do a device's host-side work (a phone's outputs decoded), so
neither runs beside a launch timed on that host."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import devices
from devices.base import Job
from harness.errors import DeviceError
from harness.lock import LOCAL_MACHINE


def cache_root() -> Path:
    return Path(os.environ.get("HARNESS_LAB_CACHE") or Path.home() / ".cache" / "harness" / "lab").expanduser()


class HostWork:
    """An exclusive lock across every agent of this lab host (a `flock`, dropped if the process dies)."""

    def __init__(self, path: Path):
        self.path, self.fd, self.depth = path, None, 0

    def __enter__(self) -> "HostWork":
        if self.depth == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self.depth -= 1
        if self.depth == 0:
            os.close(self.fd)  # drops the flock
            self.fd = None


class MachineAgent:
    """The Ray actor's body (wrapped with `ray.remote` by lab.dispatch, so this module needs no Ray).
    Device errors come back as data, `("error", kind, message)`, and are raised
    again on the coordinator as the same kind; anything else is a Ray task error there."""

    def __init__(self, lab_host: str, machine: str, configs: list[Any], coordinator: dict[str, Any]):
        self.lab_host, self.machine, self.coordinator = lab_host, machine, coordinator
        self.configs = {c.name: c for c in configs}
        self.devices: dict[str, Any] = {}
        self.root = cache_root()
        self.host_work = HostWork(self.root / "host-work.lock")
        self.current: dict[str, Any] | None = None
        self.log: list[str] = []

    # -- the agent -----------------------------------------------------------------------------

    def ready(self) -> dict[str, Any]:
        return {"host": platform.node(), "pid": os.getpid(), "lab_host": self.lab_host, "machine": self.machine}

    def status(self) -> dict[str, Any]:
        """What it is doing now (called in its own concurrency group, so it answers mid-launch)."""
        return {"lab_host": self.lab_host, "machine": self.machine, "devices": sorted(self.configs),
                "measuring": dict(self.current) if self.current else None, "coordinator": self.coordinator}

    def take_log(self) -> list[str]:
        lines, self.log = self.log, []
        return lines

    # -- artifacts by content hash -------------------------------------------------------------

    def _path(self, sha256: str, name: str) -> Path:
        return self.root / "artifacts" / sha256 / Path(name).name

    def where(self, sha256: str, name: str) -> str | None:
        """The artifact's path here, or None when it must be sent."""
        path = self._path(sha256, name)
        return str(path) if path.is_file() else None

    def put(self, sha256: str, name: str, data: bytes) -> str:
        """Keep `data` as the artifact `sha256`; refused when the bytes are not that hash."""
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"{name}: the bytes received do not hash to {sha256[:12]}")
        path = self._path(sha256, name)
        with self.host_work if self.machine != LOCAL_MACHINE else contextlib.nullcontext():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return str(path)

    # -- the device protocol -------------------------------------------------------------------

    def _call(self, name: str, action) -> Any:
        try:
            return ("ok", action(self._device(name)))
        except DeviceError as exc:
            return ("error", type(exc).__name__, str(exc))  # a RuntimeMissing's message holds its install hint

    def _device(self, name: str) -> Any:
        if name not in self.devices:
            device = devices.open_device(self.configs[name], self.log.append)
            device.host_work = self.host_work
            self.devices[name] = device
        return self.devices[name]

    def open(self, name: str) -> Any:
        return self._call(name, lambda d: {"delegates": tuple(d.delegates), "transport": d.transport,
                                           "cooldown": d.cooldown, "run_timeout_s": d.run_timeout_s})

    def fingerprint(self, name: str) -> Any:
        return self._call(name, lambda d: {**d.fingerprint(), "lab_host": self.lab_host})

    def telemetry(self, name: str) -> Any:
        return self._call(name, lambda d: d.telemetry())

    def health(self, name: str) -> Any:
        return self._call(name, lambda d: d.health())

    def measure(self, name: str, job: Job, model: str, inputs: str | None, label: str) -> Any:
        """One launch of `job` with its files at `model` / `inputs` on this host."""
        job = replace(job, model=Path(model), inputs=Path(inputs) if inputs else None)
        self.current = {"device": name, "cell": label, "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            with self.host_work if self.machine == LOCAL_MACHINE else contextlib.nullcontext():
                return self._call(name, lambda d: d.measure(job))
        finally:
            self.current = None

    def close_device(self, name: str) -> dict[str, int]:
        """Close one device; what it pushed to itself (a phone's files) and reused."""
        device = self.devices.pop(name, None)
        if device is None:
            return {}
        try:
            device.close()
        except Exception as exc:  # noqa: BLE001 - the counts are still worth having
            self.log.append(f"{name}: closing raised {type(exc).__name__}: {exc}")
        return {k: getattr(device, k, 0) for k in ("files_pushed", "bytes_pushed", "files_reused")}
