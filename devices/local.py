"""The local device: this host, reached through the same steps a remote device is.

Models go by content hash into a work directory, the runner runs as a subprocess with a timeout,
its JSON comes back on stdout. Only `push` and `run` know that the device is this machine.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from devices.base import Cooldown, ExecResult, PythonRunnerDevice, sha256_file
from harness.errors import DeviceTimeout, DeviceUnreachable


@dataclass(frozen=True)
class LocalConfig:
    """Inventory keys of a `transport: local` device."""

    name: str
    transport: str = "local"
    delegates: tuple[str, ...] = ("cpu", "xnnpack")
    python: str | None = None  # default: the interpreter running the harness
    workdir: str | None = None  # default: ~/.cache/harness/devices/<name>
    cooldown: Cooldown | None = None
    run_timeout_s: float | None = None  # default: the plan's timeouts.run_timeout_s
    accelerator: str | None = None  # edgetpu: a Coral Edge TPU on this host (devices/coral.py)
    edgetpu_device: str | None = None  # usb, usb:N, pci, pci:N; default: the first one found
    description: str | None = None


def _slug(name: str) -> str:
    """A directory name for any device name (spaces, slashes, quotes...): safe characters + a hash."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "device"
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


class LocalDevice(PythonRunnerDevice):
    transport = "local"

    def __init__(self, config: LocalConfig, log=None):
        self.name = config.name
        self.delegates = tuple(config.delegates)
        self.python = config.python or sys.executable
        self.workdir = Path(config.workdir or f"~/.cache/harness/devices/{_slug(config.name)}").expanduser()
        self.cooldown = config.cooldown
        self.run_timeout_s = config.run_timeout_s
        self.accelerator = config.accelerator
        self._present: set[str] = set()

    def push(self, local: Path) -> str:
        local = Path(local)
        digest = self._sha256(local)
        dest = self.workdir / f"{digest}{''.join(local.suffixes[-1:])}"
        if str(dest) not in self._present and dest.exists() and not self._holds(dest, local, digest):
            dest.unlink()  # cut short or changed since it was pushed: its name no longer says what it is
        if dest.exists():
            if str(dest) not in self._present:
                self.files_reused += 1
        else:
            self.workdir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.workdir, prefix=".push-")
            os.close(fd)
            try:
                shutil.copyfile(local, tmp)
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            self.bytes_pushed += dest.stat().st_size
            self.files_pushed += 1
        self._present.add(str(dest))
        return str(dest)

    @staticmethod
    def _holds(dest: Path, local: Path, digest: str) -> bool:
        """Is the pushed copy still the file it is named after? Its size, then (on this host, cheap)
        its hash: checked once per device, before it is trusted as already here."""
        return dest.stat().st_size == local.stat().st_size and sha256_file(dest) == digest

    def run(self, argv: Sequence[str], timeout_s: float) -> ExecResult:
        argv = tuple(str(a) for a in argv)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
        except OSError as exc:
            raise DeviceUnreachable(f"{self.name}: cannot start {argv[0]}: {exc}") from exc
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise DeviceTimeout(f"{self.name}: {Path(argv[0]).name} ran past its {timeout_s:g} s timeout")
        return ExecResult(argv, proc.returncode, stdout, stderr, time.monotonic() - started)

    def close(self) -> None:
        pass
