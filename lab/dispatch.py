"""A sweep's lab: one agent per lab machine it measures, started before the run and ended after it.

Taking a machine's `device:<lab host>/<machine>` resource is what a device lock is in process
(harness/lock.py): a machine another coordinator holds is waited for up to `--lock-wait`, then
refused with exit 2 before anything is measured. The agents are owned by this coordinator's Ray
driver: when it ends, however it ends (killed included), Ray ends them and the resources are free
again, so a dead coordinator leaves no device locked.

A lab host that is not in the cluster (no node offers the machine's resource) or whose agent does
not start costs that machine's cells, each failed with the reason; the rest of the sweep goes on."""

from __future__ import annotations

import os
import platform
import time
import uuid
from typing import Any, Callable

from harness.errors import DeviceUnreachable
from harness.lock import DeviceBusy, machine_of
from lab.agent import MachineAgent
from lab.placement import device_resource
from lab.proxy import AgentLink, LabDevice

START_TIMEOUT_S = 120.0  # for a lab host to start an agent process (a Python worker importing the harness)
PER_AGENT_S = 2.0  # and this much more per agent of the sweep
POLL_S = 0.5


class Lab:
    def __init__(self, ray: Any, inventory: Any, names: list[str], lock_wait: float, log: Callable[[str], None]):
        self.ray, self.inventory, self.lock_wait, self.log = ray, inventory, lock_wait, log
        self.machines: dict[str, tuple[str, str, list[Any]]] = {}
        for name in names:
            host = inventory.lab_hosts.get(name)
            if host:
                config = inventory.get(name)
                key = inventory.machine(name)
                self.machines.setdefault(key, (host, machine_of(config), []))[2].append(config)
        self.links: dict[str, AgentLink] = {}
        self.missing: dict[str, str] = {}
        self.coordinator = {"host": platform.node(), "pid": os.getpid()}

    def acquire(self) -> "Lab":
        ray = self.ray
        offered = ray.cluster_resources()
        wanted = {}
        for key, (host, machine, configs) in self.machines.items():
            resource = device_resource(host, configs[0])
            if resource not in offered:
                self.missing[key] = (f"lab host {host} is not in the Ray cluster: no node offers {resource} "
                                     f"(on {host}: harness lab-host start --name {host} --address HEAD:PORT "
                                     "--inventory INVENTORY)")
                self.log(self.missing[key])
            else:
                wanted[key] = resource
        self._wait_free(wanted)
        agent_class = ray.remote(concurrency_groups={"status": 1})(MachineAgent)
        pending = {}
        for key, resource in wanted.items():
            host, machine, configs = self.machines[key]
            actor = agent_class.options(resources={resource: 1}, num_cpus=0, max_restarts=0, max_task_retries=0,
                                        name=f"harness-agent {resource} {uuid.uuid4().hex[:8]}").remote(
                host, machine, configs, self.coordinator)
            pending[actor.ready.remote()] = (key, actor)
        # a lab host starts its agents' processes a few at a time: 100 on 2 cores took 63-77 s (benchmarks/scale.py)
        timeout = START_TIMEOUT_S + PER_AGENT_S * len(pending)
        ready, late = ray.wait(list(pending), num_returns=len(pending), timeout=timeout) if pending else ([], [])
        for ref in ready:
            key, actor = pending[ref]
            host, machine, _ = self.machines[key]
            try:
                info = ray.get(ref)
            except ray.exceptions.RayError as exc:
                self.missing[key] = f"lab host {host}: the agent for {machine} did not start: {exc}".splitlines()[0]
                continue
            self.links[key] = AgentLink(ray, actor, host, machine)
            self.log(f"lab: {key} on lab host {host} (pid {info['pid']} on {info['host']})")
        for ref in late:
            key, actor = pending[ref]
            ray.kill(actor, no_restart=True)
            self.missing[key] = (f"lab host {self.machines[key][0]} did not start an agent for {self.machines[key][1]} "
                                 f"in {timeout:.0f} s (taken by another coordinator since, or the host is "
                                 "overloaded)")
        return self

    def _wait_free(self, wanted: dict[str, str]) -> None:
        """Wait up to `lock_wait` for every wanted machine to be free; DeviceBusy if one stays taken."""
        deadline, said = time.monotonic() + self.lock_wait, set()
        while True:
            available = self.ray.available_resources()
            busy = {key: resource for key, resource in wanted.items() if available.get(resource, 0) < 1}
            if not busy:
                return
            key = next(iter(busy))
            if time.monotonic() >= deadline:
                waited = f" after waiting {self.lock_wait:g} s" if self.lock_wait else ""
                names = ", ".join(c.name for c in self.machines[key][2])
                raise DeviceBusy(f"device {names!r} is being measured by another coordinator (Ray resource "
                                 f"{busy[key]} is taken){waited}; wait for it, or pass --lock-wait SECONDS "
                                 "(`harness lab-host status` shows who holds it)")
            for key in busy.keys() - said:
                self.log(f"{key}: waiting for another coordinator to finish with it")
            said |= busy.keys()
            time.sleep(POLL_S)

    def opener(self, key: str) -> Callable[[Any, Any], LabDevice]:
        """`devices.open_device`'s stand-in for the machine `key`: its devices behind the agent."""
        def open_device(config: Any, log: Any = None) -> LabDevice:
            if key in self.missing:
                raise DeviceUnreachable(self.missing[key])
            link = self.links[key]
            return LabDevice(link, config.name, link.call("open", config.name, device_call=True))
        return open_device

    def close(self) -> None:
        """End every agent (the resources are free at once) and say what crossed to the lab hosts."""
        for key, link in self.links.items():
            if not link.lost:
                try:
                    for line in link.call("take_log", timeout=10):
                        self.log(f"{key}: {line}")
                except Exception:  # noqa: BLE001 - the agent is ended below either way
                    pass
            self.log(f"lab: {key}: sent {link.sent_files} file(s), {link.sent_bytes:,} bytes; "
                     f"{link.reused_files} already on lab host {link.lab_host}")
            try:
                self.ray.kill(link.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - a lost host's agent is already gone
                pass
        self.links.clear()
