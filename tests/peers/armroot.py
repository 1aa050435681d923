"""An arm64 Debian root, run under qemu-user, to run the on-device runner on a real aarch64 userland.

debootstrap builds it in one stage: binfmt_misc's F flag makes the kernel run every arm64 binary
(maintainer scripts included, and later sshd's `/bin/sh -c` in a ChrootDirectory) through the host's
qemu-aarch64-static, so the root needs no copy of qemu. numpy and ai-edge-litert come as their
aarch64 wheels, fetched and installed by the host's pip: nothing is pip-installed under emulation.
`ai_edge_litert.interpreter` imports numpy and its own extension modules only; the other
requirements in its metadata (flatbuffers, protobuf, ml_dtypes, tqdm, typing-extensions,
backports.strenum) serve other modules, so they are left out.

LiteRT also needs /proc and /sys inside the root, and a /proc/cpuinfo in the arm64 format: see
mount_pseudo_fs.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
INCLUDE = ("python3",)  # minbase already has libstdc++6, libgcc-s1 and zlib1g, all the wheels' .so need
PLATFORMS = ("manylinux_2_27_aarch64", "manylinux2014_aarch64", "manylinux_2_17_aarch64")
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
STAMP, CPUINFO = "etc/armroot/stamp.json", "etc/armroot/cpuinfo"


def _recipe() -> dict:
    """What a root is built from; a root whose stamp records another recipe is rebuilt."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[name.strip().lower()] = version.strip()
    return {"suite": SUITE, "variant": "minbase", "include": list(INCLUDE), "layout": 1,
            "wheels": ["numpy==" + pins["numpy"], "ai-edge-litert==2.3.0"]}


def _binfmt_problem() -> str | None:
    """None when aarch64 binaries run here, natively or through qemu-aarch64 with the F flag."""
    text = BINFMT.read_text() if BINFMT.is_file() else ""
    if platform.machine() == "aarch64" or re.search(r"^enabled\n(.*\n)*flags: *\S*F", text):
        return None
    if text and not text.startswith("disabled"):
        return "qemu-aarch64 is registered without the F flag (qemu would have to be inside the root)"
    return "qemu-aarch64 is not enabled in binfmt_misc (needs qemu-user-static and binfmt-support)"


def arm_support() -> str | None:
    """None when an aarch64 root can be built and used here, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, mount)"
    for tool in ("debootstrap", "chroot", "mount", "umount"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    problem = _binfmt_problem()
    if problem and ("F flag" in problem or not shutil.which("update-binfmts")
                    or not Path("/usr/share/binfmts/qemu-aarch64").is_file()):
        return problem
    return None  # qemu-aarch64 at most needs enabling: ensure_arm_root does it


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, **kwargs)


def _ensure_binfmt(log) -> None:
    if _binfmt_problem() and BINFMT.is_file():  # registered but disabled
        log(f"armroot: enabling {BINFMT}")
        BINFMT.write_text("1")
    elif _binfmt_problem():
        if not Path("/proc/sys/fs/binfmt_misc/register").exists():
            _run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"])
        log("armroot: update-binfmts --enable qemu-aarch64")
        _run(["update-binfmts", "--enable", "qemu-aarch64"])
    if _binfmt_problem():
        raise RuntimeError(_binfmt_problem())


def _mirror() -> str:
    """$ARMROOT_MIRROR, else the Debian archive the host's apt uses (the one known to be reachable)."""
    if os.environ.get("ARMROOT_MIRROR"):
        return os.environ["ARMROOT_MIRROR"]
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        text = path.read_text() if path.is_file() else ""
        for uri in re.findall(r"^(?:URIs:|deb(?:\s+\[[^]]*\])?)\s+(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def _mounts_under(*bases: Path) -> list[str]:
    """Mount points at or below any of the bases, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if any(point == str(b) or point.startswith(f"{b}/") for b in bases):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _unmount(*bases: Path, log=None) -> None:
    """Unmount everything at or below the bases, deepest first; raises if a mount is busy."""
    while points := _mounts_under(*bases):
        if log:
            log(f"armroot: unmounting {points[0]}")
        _run(["umount", points[0]])


def _discard(path: Path, log) -> None:
    """Delete a (partial) root, never following it into a mounted /proc, /sys or bind mount."""
    if not path.exists():
        return
    _unmount(*path.iterdir(), log=log)  # debootstrap's or our /proc and /sys, if left mounted
    log(f"armroot: removing {path}")
    shutil.rmtree(path)


def _debootstrap(work: Path, mirror: str, log) -> None:
    cmd = ["debootstrap", "--arch=arm64", "--variant=minbase", "--include=" + ",".join(INCLUDE),
           SUITE, str(work), mirror]
    log("armroot: " + " ".join(cmd) + "  (about 3 minutes)")
    start, phase, tail = time.monotonic(), None, deque(maxlen=40)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    for line in proc.stdout:  # ~500 lines: show each phase once, and the rest of I:, W:, E:
        tail.append(line.rstrip())
        verb = line.split()[1].replace("Validating", "Retrieving") if line.startswith("I: ") else None
        if verb in ("Retrieving", "Extracting", "Unpacking", "Configuring") and verb == phase:
            continue
        phase = verb
        if line.startswith(("I: ", "W: ", "E: ")):
            log(f"armroot: [{time.monotonic() - start:3.0f} s] debootstrap {line.rstrip()}")
    if proc.wait():
        raise RuntimeError(f"debootstrap failed ({proc.returncode}):\n" + "\n".join(tail))


def _install_wheels(work: Path, pins: list[str], log) -> list[str]:
    """Install the pins' aarch64 wheels for the root's python3 with the host's pip; returns their files."""
    py = Path(os.readlink(work / "usr/bin/python3")).name.removeprefix("python")  # e.g. "3.11"
    target = work / f"usr/local/lib/python{py}/dist-packages"
    tags = ["--only-binary=:all:", *(f"--platform={p}" for p in PLATFORMS), f"--python-version={py}",
            "--implementation=cp", f"--abi=cp{py.replace('.', '')}", "--no-deps"]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    with tempfile.TemporaryDirectory(prefix="armroot-wheels-") as tmp:
        log(f"armroot: pip download (aarch64, cp{py.replace('.', '')}) " + " ".join(pins))
        _run([*pip, "download", "--dest", tmp, *tags, *pins])
        wheels = sorted(Path(tmp).glob("*.whl"))
        log(f"armroot: pip install --target {target} " + " ".join(w.name for w in wheels))
        _run([*pip, "install", "--no-index", "--target", str(target), *tags, *map(str, wheels)])
    if (target / "bin").is_dir():  # console scripts with the host venv's shebang: useless in the root
        shutil.rmtree(target / "bin")
    return [w.name for w in wheels]


def _make_chrootable(root: Path, log) -> None:
    """sshd's ChrootDirectory wants every path component root-owned and not group/other writable."""
    os.chown(root, 0, 0)
    os.chmod(root, 0o755)
    for part in root.parents:
        if part.stat().st_uid != 0 or part.stat().st_mode & 0o022:
            log(f"armroot: warning: {part} is not root-owned or is group/other writable: sshd will refuse")


def ensure_arm_root(root: Path, log=print) -> Path:
    """Build the arm64 root at `root` unless its stamp records the current recipe; return `root`.

    Builds in the sibling `<root>.building` and renames it into place with its stamp, so an
    interrupted build is never taken as done. A from-scratch build takes a few minutes.
    """
    root = Path(root).resolve()
    problem = arm_support()
    if problem:
        raise RuntimeError(f"cannot build an aarch64 root here: {problem}")
    _ensure_binfmt(log)
    recipe, stamp = _recipe(), root / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()).get("recipe") == recipe:
        _make_chrootable(root, log)
        return root
    start, mirror = time.monotonic(), _mirror()
    work = root.with_name(root.name + ".building")
    root.parent.mkdir(parents=True, exist_ok=True)
    _discard(work, log)
    _debootstrap(work, mirror, log)
    wheels = _install_wheels(work, recipe["wheels"], log)
    for deb in (work / "var/cache/apt/archives").glob("*.deb"):  # debootstrap keeps them: 38 MB
        deb.unlink()
    (work / STAMP).parent.mkdir(parents=True, exist_ok=True)
    (work / STAMP).write_text(json.dumps({
        "recipe": recipe, "mirror": mirror, "wheel_files": wheels, "seconds": round(time.monotonic() - start),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1) + "\n")
    _discard(root, log)
    work.rename(root)
    _make_chrootable(root, log)
    log(f"armroot: {root} built in {time.monotonic() - start:.0f} s")
    return root


def _cpuinfo() -> str:
    """/proc/cpuinfo as an arm64 kernel writes it, for Raspberry Pi 4 cores (Cortex-A72), one block
    per CPU in the host's /sys/devices/system/cpu/possible."""
    possible = Path("/sys/devices/system/cpu/possible").read_text().strip()
    cpus = max(int(part.split("-")[-1]) for part in possible.split(",")) + 1
    block = ("processor\t: {}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
             "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
             "CPU revision\t: 3\n\n")
    return "".join(block.format(i) for i in range(cpus)) + "Hardware\t: qemu-aarch64 (emulated Cortex-A72)\n"


def mount_pseudo_fs(root: Path) -> None:
    """Mount proc, an arm64 /proc/cpuinfo over it, and sysfs (read-only) in the root; idempotent.

    What LiteRT's CPU detection (the cpuinfo library, used by XNNPACK) does under qemu-user 7.2:
    no /sys -> "failed to parse the list of possible processors", XNNPACK silently not applied;
    /sys but no /proc -> "failed to parse processor information from /proc/cpuinfo", same;
    both, with qemu passing the host's x86 /proc/cpuinfo through -> SIGSEGV in Interpreter(),
    with or without XNNPACK. Both plus an arm64-format /proc/cpuinfo -> works, XNNPACK applied.
    The static /dev nodes that debootstrap creates (null, zero, random, urandom, tty) suffice.
    """
    root = Path(root).resolve()
    source = root / CPUINFO
    source.parent.mkdir(parents=True, exist_ok=True)
    if not source.is_file() or source.read_text() != _cpuinfo():
        source.write_text(_cpuinfo())
    for target, cmd in ((root / "proc", ["mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc"]),
                        (root / "proc/cpuinfo", ["mount", "--bind", "-o", "ro", str(source)]),
                        (root / "sys", ["mount", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs"])):
        if str(target) not in _mounts_under(target):
            _run([*cmd, str(target)])


def unmount_pseudo_fs(root: Path) -> None:
    """Unmount everything under the root's /proc and /sys; idempotent. Raises if still in use."""
    root = Path(root).resolve()
    _unmount(root / "proc", root / "sys")
