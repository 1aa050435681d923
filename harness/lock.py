"""One sweep per machine at a time: an exclusive lock per machine on the coordinating host.

Two sweeps measuring one board at once would each time the other's load. A sweep takes the lock
of every device it will measure before it starts, in a fixed order (so two sweeps never wait on
each other crosswise), and holds them to its end. The locks are `flock`s on files in
$HARNESS_LOCK_DIR (default ~/.cache/harness/locks): the kernel drops them when the process ends,
however it ends, so a crashed sweep leaves no stale lock. A lock is named by what the device is
(this host, host:port, an ADB serial: `machine_of`), not by its inventory name, so two inventories
naming the same board differently still exclude each other."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.errors import HarnessError


class DeviceBusy(HarnessError):
    """Another sweep holds a device's lock. Exit code 2: nothing was measured."""

    exit_code = 2


def lock_dir() -> Path:
    return Path(os.environ.get("HARNESS_LOCK_DIR") or Path.home() / ".cache" / "harness" / "locks").expanduser()


LOCAL_MACHINE = "local"
LOOPBACK = ("localhost", "127.0.0.1", "::1", "ip6-localhost")


def machine_of(config: Any) -> str:
    """Which machine an inventory entry measures on: this host (`local`, and any entry reached over
    loopback), an SSH host by address and port (whatever the user), a phone by its ADB serial or
    address. Entries of one machine share one worker and one lock: it never measures two things at
    once, and two inventories naming the same board differently still exclude each other."""
    transport = config.transport
    host = getattr(config, "host", None)
    if transport == "local" or (host is not None and (host in LOOPBACK or host.startswith("127."))):
        return LOCAL_MACHINE
    if transport == "ssh":
        return f"ssh:{host}:{config.port}"
    if transport == "adb":
        return f"adb:{config.serial}" if config.serial else f"adb:{host}:{config.port}"
    return f"{transport}:{config.name}"


def lock_path(config: Any, directory: Path | None = None) -> Path:
    identity = machine_of(config)
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", identity)[:60]
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    return (directory or lock_dir()) / f"{readable}-{digest}.lock"


class DeviceLocks:
    """The locks of a sweep's devices, held from `acquire` until `release` (or the process ends)."""

    def __init__(self, configs: Sequence[Any], wait_s: float = 0.0, log: Callable[[str], None] = lambda m: None,
                 directory: Path | None = None, poll_s: float = 0.5):
        self.wait_s, self.log, self.directory, self.poll_s = wait_s, log, directory, poll_s
        by_machine: dict[str, list[Any]] = {}
        for config in configs:
            by_machine.setdefault(machine_of(config), []).append(config)
        # one lock per machine, taken in a fixed order
        self.configs = sorted((same[0] for same in by_machine.values()), key=lambda c: str(lock_path(c, directory)))
        self.held: list[tuple[int, Path]] = []

    def __enter__(self) -> "DeviceLocks":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self, holder: dict | None = None) -> None:
        deadline = time.monotonic() + self.wait_s
        try:
            for config in self.configs:
                self._take(config, deadline, holder or {})
        except BaseException:
            self.release()
            raise

    def _take(self, config: Any, deadline: float, holder: dict) -> None:
        path = lock_path(config, self.directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                other = _describe(path)
                if time.monotonic() >= deadline:
                    os.close(fd)
                    waited = f" after waiting {self.wait_s:g} s" if self.wait_s else ""
                    raise DeviceBusy(f"device {config.name!r} is being measured by another sweep ({other}){waited}; "
                                     f"wait for it, or pass --lock-wait SECONDS (lock file {path})") from None
                if not said:
                    self.log(f"{config.name}: waiting for another sweep to finish with it ({other})")
                    said = True
                time.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "device": config.name, "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                 **holder}).encode())
        self.held.append((fd, path))

    def release(self) -> None:
        while self.held:
            fd, _ = self.held.pop()
            os.close(fd)  # closing the descriptor drops the flock


def _describe(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    parts = [f"pid {info['pid']}" if "pid" in info else None,
             f"plan {info['plan']}" if info.get("plan") else None,
             f"since {info['since']}" if info.get("since") else None]
    return ", ".join(p for p in parts if p) or "holder unknown"
