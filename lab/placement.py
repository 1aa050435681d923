"""Where a device is: the inventory's `lab_host:` and the Ray resources that pin work to it. No
Ray here: the inventory is parsed, and the resources named, without it.

A machine (harness.lock.machine_of: this host, an SSH address, an ADB serial) attached to lab host
`lab-a` is the custom resource `device:lab-a/<machine>` of capacity 1 on that host's Ray node.
The actor that measures it holds that unit for its life, so a second coordinator's actor for the
same machine waits until the first is gone: no machine measures two things at once, whichever
coordinator asks. Each lab host's node also offers `lab-host:<name>`, so the cluster can say which
node is which lab host."""

from __future__ import annotations

import re
from typing import Any

from harness.lock import machine_of

LAB_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
DEVICE_PREFIX = "device:"
HOST_PREFIX = "lab-host:"
HOST_CAPACITY = 1000  # `lab-host:<name>` only names the node; nothing waits on it


def device_resource(lab_host: str, config: Any) -> str:
    return machine_resource(lab_host, machine_of(config))


def machine_resource(lab_host: str, machine: str) -> str:
    return f"{DEVICE_PREFIX}{lab_host}/{machine}"


def host_resource(lab_host: str) -> str:
    return f"{HOST_PREFIX}{lab_host}"


def node_resources(inventory: Any, lab_host: str) -> dict[str, float]:
    """The custom resources of lab host `lab_host`'s Ray node: one unit per machine the inventory
    attaches to it, and its name."""
    found = {device_resource(lab_host, c): 1.0 for c in inventory.devices if inventory.lab_hosts.get(c.name) == lab_host}
    return {**found, host_resource(lab_host): float(HOST_CAPACITY)}


def describe(resources: dict[str, float]) -> tuple[str | None, list[str]]:
    """(the lab host a node's resources name, the machines it offers)."""
    host = next((k[len(HOST_PREFIX):] for k in resources if k.startswith(HOST_PREFIX)), None)
    return host, sorted(k[len(DEVICE_PREFIX):].partition("/")[2] for k in resources if k.startswith(DEVICE_PREFIX))
