"""`harness lab-host start` and `harness lab-host status`.

`start` is a thin wrapper over `ray start`: it names the node's custom resources from the
inventory (a unit per machine attached to this lab host, lab/placement.py) and passes the address
the user gives as the node's address. `status` joins the cluster and lists every lab host, the
machines it offers, whether each is taken, and what its agent is measuring."""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from harness.errors import ConfigError
from lab.cluster import INSTALL, NAMESPACE, check_address, connect
from lab.placement import LAB_HOST, describe, machine_resource, node_resources

STATUS_TIMEOUT_S = 10.0
LABEL = "harness-lab-host"  # the node's label naming its lab host: still there when the node is dead
RAY_REWRITES = "2.60"  # the Ray seen replacing a loopback node address (services.resolve_ip_for_localhost)


def ray_executable() -> str:
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise ConfigError("lab-host start", None, f"no `ray` command here; install the lab extra: {INSTALL}")
    return found


def start_argv(args: Any, inventory: Any) -> list[str]:
    """The `ray start` command for this lab host (checked: name, addresses, its devices)."""
    if not LAB_HOST.fullmatch(args.name):
        raise ConfigError("--name", args.name, "expected a lab host's name (letters, digits, '_', '.', '-')")
    if not args.head and not args.address:
        raise ConfigError("lab-host start", None, "give --address HEAD:PORT to join a cluster, or --head to start one")
    if args.head and args.address:
        raise ConfigError("lab-host start", None, "give either --head (start a cluster) or --address (join one)")
    if not args.head and args.temp_dir:
        raise ConfigError("--temp-dir", args.temp_dir, "is for the head (--head); a joining node uses the head's")
    if args.head and not 1 <= args.port <= 65535:
        raise ConfigError("--port", str(args.port), "not a port number (1 to 65535)")
    check_address(args.node_ip_address, args.allow_public_cluster, "--node-ip-address")
    if _is_loopback(args.node_ip_address):
        others = host_addresses()
        if others:  # Ray would not stay on loopback (docs/lab.md): say so before anything listens
            raise ConfigError("--node-ip-address", args.node_ip_address,
                              f"Ray {RAY_REWRITES} replaces a loopback node address with this host's own "
                              f"({', '.join(others)}) and then listens on every interface; give the address of "
                              "the lab's private network, or start the node in a network namespace of its own "
                              "(docs/lab.md)")
    if args.address:
        check_address(args.address, args.allow_public_cluster, "--address")
    resources = node_resources(inventory, args.name)
    if not describe(resources)[1]:
        attached = sorted(set(inventory.lab_hosts.values()))
        raise ConfigError(inventory.source, None, f"no device is attached to lab host {args.name!r} (lab_host: "
                                                  f"{args.name}); lab hosts it names: {', '.join(attached) or 'none'}")
    argv = [ray_executable(), "start", f"--node-ip-address={args.node_ip_address}",
            f"--resources={json.dumps(resources, sort_keys=True)}", f"--labels={LABEL}={args.name}",
            "--disable-usage-stats"]
    if args.head:
        argv += ["--head", f"--port={args.port}", "--include-dashboard=false"]
        if args.temp_dir:
            argv.append(f"--temp-dir={args.temp_dir}")
    else:
        argv.append(f"--address={args.address}")
    return argv


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def host_addresses() -> list[str]:
    """This host's IPv4 addresses other than loopback (SIOCGIFADDR on each interface; no command)."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))  # SIOCGIFADDR
            except OSError:  # no IPv4 address on it
                continue
            address = ipaddress.ip_address(packed[20:24])
            if not address.is_loopback:
                found.append(str(address))
    return sorted(set(found))


def cmd_start(args: Any, load_inventory: Callable[[Any], Any], log: Callable[[str], None]) -> int:
    inventory = load_inventory(args.inventory)
    argv = start_argv(args, inventory)
    log("$ " + " ".join(argv))
    if args.dry_run:
        print(" ".join(argv))
        return 0
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        print(f"lab host {args.name}: `ray start` failed (exit {result.returncode})", file=sys.stderr)
        return 1
    chosen = _node_ip(result.stdout + result.stderr)
    if chosen and chosen != args.node_ip_address:
        print(f"warning: Ray put this node on {chosen}, not on {args.node_ip_address}: Ray replaces a loopback "
              "address with the host's own unless the node runs in a network namespace of its own, and then "
              "listens there (docs/lab.md)", file=sys.stderr)
    _, machines = describe(node_resources(inventory, args.name))
    print(f"lab host {args.name} is up at {chosen or args.node_ip_address}: {', '.join(machines)}")
    return 0


def _node_ip(output: str) -> str | None:
    found = re.search(r"Local node IP:\s*([0-9A-Fa-f.:]+)", output) or re.search(r"_node_ip_address='([^']+)'", output)
    return found.group(1) if found else None


def cmd_status(args: Any, log: Callable[[str], None]) -> int:
    ray = connect(args.cluster, args.allow_public_cluster, log)
    try:
        rows = status_rows(ray)
    finally:
        ray.shutdown()
    if not rows:
        print("no lab host in this cluster (no node offers a lab-host: resource)")
        return 0
    header = ("lab host", "node", "alive", "machine", "state", "measuring")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


def status_rows(ray: Any) -> list[tuple[str, ...]]:
    """A row per machine of every lab host: where, whether taken, what its agent measures now."""
    available = ray.available_resources()
    busy: dict[str, dict] = {}
    for name in ray.util.list_named_actors():
        if not name.startswith("harness-agent "):
            continue
        try:
            actor = ray.get_actor(name, namespace=NAMESPACE)
            info = ray.get(actor.status.options(concurrency_group="status").remote(), timeout=STATUS_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - an agent ending as we ask is simply not shown
            continue
        busy[f"{info['lab_host']}/{info['machine']}"] = info
    rows = []
    nodes = [n for n in ray.nodes() if n["Alive"]] + [n for n in ray.nodes() if not n["Alive"]]
    for node in sorted(nodes, key=lambda n: (describe(n.get("Resources") or {})[0] or
                                             (n.get("Labels") or {}).get(LABEL, ""), not n["Alive"])):
        host, machines = describe(node.get("Resources") or {})
        host = host or (node.get("Labels") or {}).get(LABEL)
        if host is None:
            continue
        address = f"{node['NodeManagerAddress']}:{node.get('NodeManagerPort', '?')}"
        for machine in machines or ["—"]:  # a dead node's resources are gone
            info = busy.get(f"{host}/{machine}")
            taken = available.get(machine_resource(host, machine), 0) < 1
            state = "busy" if taken else "idle"
            doing = "—"
            if info:
                who = info["coordinator"]
                what = info["measuring"]
                doing = (f"{what['device']}: {what['cell']} since {what['since']}" if what else "between launches")
                doing += f" (for {who['host']} pid {who['pid']})"
            rows.append((host, address, "yes" if node["Alive"] else "no", machine,
                         state if node["Alive"] else "lost", doing))
    return rows
