"""Shared fixtures. The digits CNN is trained and converted once per session, into a session cache
that the conversion, runner and end-to-end tests share (the second use of it is a cache hit)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.artifacts import Cache
from harness.build import build_models
from harness.config import load_inventory, load_plan

ROOT = Path(__file__).resolve().parent.parent
FAST_PROTOCOL = ("protocol: {warmup_runs: 1, warmup_min_secs: 0.05, num_runs: 10, min_secs: 0.05, max_secs: 2, "
                 "repetitions: 3}\n")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def harness_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 900):
    """Run the real `harness` command line; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session", autouse=True)
def private_device_locks(tmp_path_factory):
    """The tests' sweeps take device locks of their own, not those of sweeps running on this host."""
    os.environ["HARNESS_LOCK_DIR"] = str(tmp_path_factory.mktemp("device-locks"))


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifact-cache")


@pytest.fixture(scope="session")
def digits_build(session_cache, tmp_path_factory):
    """digits_cnn trained and converted into all nine variants (about half a minute, once)."""
    plan_path = write(tmp_path_factory.mktemp("plans") / "digits.yaml", "models:\n  - model: digits_cnn\n")
    plan = load_plan(plan_path, load_inventory(None))
    messages: list[str] = []
    builds, summary = build_models(plan, Cache(session_cache), messages.append)
    return builds["digits_cnn"], summary, messages


@pytest.fixture
def local_device(tmp_path):
    from devices.local import LocalConfig, LocalDevice

    return LocalDevice(LocalConfig(name="local", workdir=str(tmp_path / "device")))


# -- SSH test hosts: real OpenSSH servers (tests/peers/sshd.py) -----------------------------------


@pytest.fixture(scope="session")
def sshd_host(tmp_path_factory):
    """OpenSSH's sshd on a free port of 127.0.0.1, with generated host and user keys."""
    from tests.peers.sshd import sshd_binary, start_sshd

    if sshd_binary() is None:
        pytest.skip("no sshd: `make test` installs Debian's openssh-server when run as root")
    host = start_sshd(tmp_path_factory.mktemp("sshd"), name="loopback")
    yield host
    host.stop()


@pytest.fixture
def netns_board(tmp_path):
    """An sshd of the test's own in a network namespace behind a veth pair, whose link can be cut
    (tests/peers/sshd.py): a board on a network of its own, gone when the test ends."""
    from tests.peers.sshd import netns_supported, start_sshd

    reason = netns_supported()
    if reason:
        pytest.skip(reason)
    host = start_sshd(tmp_path / "sshd-ns", name="board", netns=True)
    yield host
    host.stop()


@pytest.fixture(scope="session")
def tiny_tflite(digits_build, tmp_path_factory) -> Path:
    """The digits CNN in fp32 (39 KB), as a given .tflite file."""
    path = tmp_path_factory.mktemp("tiny") / "digits_fp32.tflite"
    path.write_bytes(digits_build[0].artifacts["fp32"].path.read_bytes())
    return path


def ssh_config(host, name: str = "board", **extra):
    """An SSH device config for a test host, with the harness's Python as the board's Python."""
    from harness.config import build
    from devices.ssh import SSHConfig

    settings = {"python": sys.executable, "connect_timeout_s": 5, "retry_backoff_s": 0.2, **extra}
    entry = host.inventory_entry(name, **settings)
    return build(SSHConfig, entry, "<test>", name)


def processes_with(marker: str) -> list[str]:
    """Command lines of the live processes (of any PID namespace) that contain `marker`."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # not a process, or gone meanwhile
            continue
        if marker in cmdline:
            found.append(cmdline)
    return found


ORPHAN_PROBE = """\
import json, os, sys, time
marker, first = sys.argv[1], sys.argv[2]
if not os.path.exists(first):
    open(first + ".tmp", "w").write(str(os.getpid()))
    os.rename(first + ".tmp", first)
    time.sleep(120)
open(first + ".later", "a").write(f"{os.getpid()}\\n")
others = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode(errors="replace")
    except OSError:
        continue
    if marker in cmdline and int(pid) not in (os.getpid(), os.getppid()):
        others.append(f"{pid}: {cmdline}")
print(json.dumps(others))
"""


def orphan_probe(tmp_path: Path) -> tuple[list[str], str, Path]:
    """A command for "a retry never runs beside the command it replaces": its first run writes its
    pid (as its own /proc numbers it) to a file and sleeps; a later run (noted in FILE.later) prints,
    as JSON, the other live processes whose command line holds the marker, its parent's aside (an
    ADB shell's): at the moment the later run runs, the first must be gone. (argv, marker, file)."""
    marker = f"harness-orphan-{os.urandom(4).hex()}"
    first = tmp_path / f"{marker}.first"
    return [sys.executable, "-c", ORPHAN_PROBE, marker, str(first)], marker, first


def when_started(first: Path, fault, timeout_s: float = 30.0) -> threading.Thread:
    """A thread that calls `fault()` once the orphan probe's first run has started."""
    import time

    def wait_then_fault() -> None:
        deadline = time.monotonic() + timeout_s
        while not first.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if first.exists():
            fault()

    thread = threading.Thread(target=wait_then_fault, daemon=True)
    thread.start()
    return thread


def assert_timeout_kills_the_process_group(device, tmp_path: Path) -> None:
    """A command past its timeout raises DeviceTimeout, and it and the process it started are
    gone; the device is usable afterwards. Shared by every transport's tests. Processes are found
    by a marker in their command line, not by pid: an SSH test host runs in its own PID namespace."""
    import time

    from harness.errors import DeviceTimeout

    marker = f"harness-timeout-{os.urandom(4).hex()}"
    started_file = tmp_path / "child.started"
    script = (f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', "
              f"{marker!r}]); open({str(started_file)!r}, 'w').write('1'); time.sleep(60)")
    started = time.monotonic()
    with pytest.raises(DeviceTimeout, match="ran past its 2 s timeout"):
        device.run([sys.executable, "-c", script, marker], 2)
    assert time.monotonic() - started < 20
    assert started_file.exists(), "the command never started its child"
    for _ in range(50):  # the grandchild is gone too (killed with the session's process group)
        if not processes_with(marker):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"outlived the timeout: {processes_with(marker)}")
    assert device.run(["true"], 10).exit_code == 0  # the device is usable after a timeout


def inventory_yaml(entries: list[dict]) -> str:
    import yaml

    return yaml.safe_dump({"devices": entries}, sort_keys=False)
