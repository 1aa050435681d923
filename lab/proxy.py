"""The coordinator's side of a lab machine: `AgentLink` calls the machine's agent (lab/agent.py)
and turns Ray's failures into the harness's; `LabDevice` is a device of that machine behind the
same protocol as every in-process device, so harness.measure.MachineWorker drives it unchanged.

An agent that dies, or a node that leaves the cluster, is `MachineLost` ("lab host lost"): the
cell in hand fails with it, every later call fails at once, and the worker settles the machine's
other cells with the same reason; the rest of the lab carries on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from devices.base import ExecResult, Health, Job, sha256_file
from harness.errors import DeviceError, DeviceTimeout, DeviceUnreachable, MachineLost, RuntimeMissing

ERRORS = {cls.__name__: cls for cls in (DeviceError, DeviceUnreachable, DeviceTimeout, RuntimeMissing, MachineLost)}
CALL_TIMEOUT_S = 120.0  # fingerprint, telemetry, health, an artifact's transfer
GRACE_S = 60.0  # beyond a launch's own timeout (the lab host enforces that one) before the host counts as lost


class AgentLink:
    """One machine's agent, as the coordinator reaches it."""

    def __init__(self, ray: Any, actor: Any, lab_host: str, machine: str):
        self.ray, self.actor, self.lab_host, self.machine = ray, actor, lab_host, machine
        self.lost: str | None = None
        self.hashes: dict[tuple, str] = {}  # (path, size, mtime) -> sha256
        self.there: dict[str, str] = {}  # sha256 -> its path on the lab host
        self.sent_files = self.sent_bytes = self.reused_files = 0

    def call(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT_S, device_call: bool = False) -> Any:
        """`method(*args)` on the agent. A device call's ("error", kind, ...) is raised as that kind."""
        if self.lost:
            raise MachineLost(self.lost)
        ray = self.ray
        try:
            result = ray.get(getattr(self.actor, method).remote(*args), timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            self._lose(f"no answer to {method} in {timeout:.0f} s")
            ray.kill(self.actor, no_restart=True)
            raise MachineLost(self.lost) from None
        except ray.exceptions.RayActorError as exc:  # the agent's process or its node is gone
            self._lose(_why(exc))
            raise MachineLost(self.lost) from None
        except ray.exceptions.RayTaskError as exc:  # a bug in the agent: this call's cell fails
            raise RuntimeError(f"{method} on lab host {self.lab_host} raised {exc.cause!r}") from None
        if device_call:
            if result[0] == "error":
                _, kind, message = result
                raise ERRORS.get(kind, DeviceError)(message)
            return result[1]
        return result

    def _lose(self, why: str) -> None:
        self.lost = f"lab host lost: {self.lab_host} ({self.machine}): {why}"

    def ship(self, path: Path) -> str:
        """The path on the lab host of the file at `path`, sent there only when its content hash is
        not there yet (kept in the lab host's cache for later sweeps too)."""
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)  # a file rewritten in place is hashed again
        if key not in self.hashes:
            self.hashes[key] = sha256_file(path)
        sha = self.hashes[key]
        if sha in self.there:
            return self.there[sha]
        remote = self.call("where", sha, path.name)
        if remote is not None:
            self.reused_files += 1
        else:
            data = path.read_bytes()
            remote = self.call("put", sha, path.name, data, timeout=CALL_TIMEOUT_S + len(data) / 1e6)
            self.sent_files, self.sent_bytes = self.sent_files + 1, self.sent_bytes + len(data)
        self.there[sha] = remote
        return remote


class LabDevice:
    """A device on a lab host, as MachineWorker sees it."""

    def __init__(self, link: AgentLink, name: str, info: Mapping[str, Any]):
        self.link, self.name = link, name
        self.transport, self.delegates = info["transport"], tuple(info["delegates"])
        self.cooldown, self.run_timeout_s = info["cooldown"], info["run_timeout_s"]
        self.lab_host = link.lab_host
        self.files_pushed = self.bytes_pushed = self.files_reused = 0
        self.host_work: Any = None  # set by the worker; the lab host keeps its own (lab/agent.py)

    def fingerprint(self) -> dict[str, Any]:
        return self.link.call("fingerprint", self.name, device_call=True)

    def telemetry(self) -> Mapping[str, Any]:
        return self.link.call("telemetry", self.name, device_call=True)

    def health(self) -> Health:
        return self.link.call("health", self.name, device_call=True)

    def push(self, local: Path) -> str:
        return self.link.ship(Path(local))

    def run(self, argv, timeout_s: float) -> ExecResult:
        raise DeviceError(f"{self.name}: commands are not run through a lab host's agent, only launches")

    def measure(self, job: Job) -> dict[str, Any]:
        model = self.link.ship(Path(job.model))
        inputs = self.link.ship(Path(job.inputs)) if job.inputs is not None else None
        label = f"{Path(job.model).name} {job.delegate} {job.num_threads}t"
        return self.link.call("measure", self.name, job, model, inputs, label, timeout=job.timeout_s + GRACE_S,
                              device_call=True)

    def close(self) -> None:
        if self.link.lost:  # nothing left there to close
            return
        counts = self.link.call("close_device", self.name)
        self.files_pushed, self.bytes_pushed, self.files_reused = (
            counts.get("files_pushed", 0), counts.get("bytes_pushed", 0), counts.get("files_reused", 0))


def _why(exc: BaseException) -> str:
    """Ray's reason in a few words: which failure, and the RPC error under it if any."""
    rpc = re.search(r"RpcError: (.*?)(?: rpc_code|\.|$)", str(exc))
    said = {"ActorUnavailableError": "its agent stopped answering"}.get(type(exc).__name__, "its agent died")
    return f"{said} ({type(exc).__name__}{': ' + rpc.group(1).strip() if rpc else ''})"
