"""A real Ray cluster for the lab tests: a head and more nodes started with `harness lab-host start`
(so `ray start`), each a lab host with its own device resources, all in a network namespace made
for the test with nothing but loopback in it.

Why a namespace: Ray 2.60 replaces a loopback `--node-ip-address` with the host's own address and
then listens on every interface, so on a plain host its ports would be open beyond loopback. In a
namespace of our own the only address is 127.0.0.1: nothing is reachable from, or sent to,
anywhere else. The cluster requires Ray's token authentication, with a token of the test's own.
Every command of the test (the nodes, the coordinator, `lab-host status`) runs in
it. A lab host is stopped by its own processes (its raylet and what the raylet started), never by
`ray stop`, which would end every Ray node on the machine."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")


@dataclass
class RayLab:
    inventory: Path
    port: int = 6390
    ns: str = field(default_factory=lambda: f"harness-lab-{os.getpid()}")
    temp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hlab")))
    hosts: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        _run("ip", "netns", "add", self.ns)
        _run("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        # Ray's token authentication, with a token of the test's own: as docs/lab.md asks of a lab, and
        # independent of a ~/.ray/auth_token another Ray on this machine may have left
        self.token = self.temp / "ray-token"
        self.token.write_text(secrets.token_hex(32))
        self.token.chmod(0o600)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(self.token), **extra}

    def argv(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, sys.executable, "-m", "harness", *args]

    def harness(self, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
        """`harness ARGS` run in the lab's namespace."""
        return subprocess.run(self.argv(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env=self.env(**env), stdin=subprocess.DEVNULL)

    def popen(self, *args: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env(**env), stdin=subprocess.DEVNULL)

    def start_host(self, name: str, head: bool = False) -> subprocess.CompletedProcess:
        """Lab host `name`'s node, with an artifact cache of its own (as a separate machine has)."""
        cache = self.temp / f"cache-{name}"
        where = ["--head", "--port", str(self.port), "--temp-dir", str(self.temp / "ray")] if head else \
            ["--address", self.address]
        result = self.harness("lab-host", "start", "--name", name, "--node-ip-address", "127.0.0.1",
                              "--inventory", str(self.inventory), *where, timeout=180, HARNESS_LAB_CACHE=str(cache))
        self.hosts[name] = {"cache": cache}
        return result

    def raylet(self, name: str) -> int | None:
        """The pid of lab host `name`'s raylet (its command line lists the node's resources)."""
        for pid in self.pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"/raylet") and any(f"lab-host:{name},".encode() in a for a in cmdline):
                return pid
        return None

    def stop_host(self, name: str) -> list[int]:
        """Kill lab host `name` as a power cut would: its raylet and every process under it."""
        raylet = self.raylet(name)
        assert raylet is not None, f"no raylet for lab host {name}"
        doomed = [raylet] + _descendants(raylet)
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return doomed

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def close(self) -> None:
        for _ in range(3):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found

