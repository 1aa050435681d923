"""`harness doctor`: what this host has, read without importing TensorFlow, and what to install.

`render_checks` lays the checks out for a terminal: a table within 120 columns; a detail too long
for it (an install command, most often) becomes a numbered hint under the table, one line each so
that a command copies whole."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from devices import coral
from harness.edgetpu import CompilerSettings, compiler_version, find_compiler

EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | missing | note
    detail: str
    summary: str = ""  # what the table says when the detail is too long for it and goes to a hint


def _dist(name: str, hint: str, purpose: str) -> Check:
    try:
        return Check(name, "ok", f"{metadata.version(name)} — {purpose}")
    except metadata.PackageNotFoundError:
        return Check(name, "missing", f"{purpose}; install: {hint}", purpose)


def _tool(name: str, version_args: list[str] | None, hint: str, purpose: str) -> Check:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not path:
        return Check(name, "missing", f"{purpose}; {hint}", purpose)
    if version_args is None:
        return Check(name, "ok", f"{path} — {purpose}")
    try:
        out = subprocess.run([path, *version_args], capture_output=True, text=True, timeout=20)
        version = (out.stdout or out.stderr).strip().splitlines()[:1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        version = [f"cannot run: {exc}"]
    return Check(name, "ok", f"{path} {version[0] if version else ''}".strip())


def _libedgetpu() -> Check:
    library = EDGETPU_LIBRARY.get(platform.system())
    if library is None:
        return Check("libedgetpu", "missing", f"no Edge TPU runtime for {platform.system()}")
    try:
        ctypes.CDLL(library)
    except OSError as exc:
        return Check("libedgetpu", "missing", f"no Edge TPU runtime: {library} does not load ({exc}); "
                     f"install {coral.INSTALL_HINT}", f"no Edge TPU runtime: {library} does not load")
    return Check("libedgetpu", "ok", f"{library} loads")


def _edge_tpus() -> Check:
    """The Edge TPUs attached to this host, found as the runner finds them on any device."""
    from devices import runner

    tpus = runner.edgetpu_probe()["tpus"]
    if not tpus:
        return Check("Edge TPUs", "missing", "none attached (looked for a USB Accelerator, USB ids 1a6e:089a "
                     "and 18d1:9302, and PCIe /dev/apex_*)", "none attached")
    return Check("Edge TPUs", "ok", ", ".join(f"{t['type']}: {t['path']}" for t in tpus))


def _compiler() -> Check:
    path, problem = find_compiler(CompilerSettings())
    if path is None:
        return Check("edgetpu_compiler", "missing", problem, "compiles int8 models for the Edge TPU")
    version, problem = compiler_version(path)
    return Check("edgetpu_compiler", "ok" if version else "missing",
                 f"{path} {version} — compiles int8 models for the Edge TPU" if version else problem,
                 "" if version else f"{path} does not run")


def _pycoral() -> Check:
    if importlib.util.find_spec("pycoral") is None:
        return Check("pycoral", "missing", "Coral's Python API (not on PyPI: PyPI's 'pycoral' is another "
                     "package); install from https://coral.ai/software/#pycoral-api", "Coral's Python API")
    if importlib.util.find_spec("pycoral.utils") is None:
        return Check("pycoral", "missing", "a package named pycoral is installed but it is not Coral's "
                     "(no pycoral.utils.edgetpu)")
    return Check("pycoral", "ok", "pycoral.utils.edgetpu present")


def checks() -> list[Check]:
    adbkey = Path(os.path.expanduser("~/.android/adbkey"))
    return [
        Check("python", "ok", f"{platform.python_version()} ({sys.executable}), {platform.machine()}"),
        _dist("ai-edge-litert", "pip install ai-edge-litert", "the runtime the runner prefers"),
        _dist("tflite-runtime", "pip install tflite-runtime (needs numpy<2; TF 2.14 ops only)",
              "the runner's fallback runtime on devices"),
        _dist("tensorflow", "pip install tensorflow", "converter, and the runner's last fallback"),
        _dist("tf-keras", "pip install tf-keras", "Keras 2, which tfmot needs"),
        _dist("tensorflow-model-optimization", "pip install tensorflow-model-optimization", "pruning and QAT"),
        _tool("litert-benchmark", None, "ships with ai-edge-litert", "LiteRT's own benchmark (CompiledModel)"),
        _compiler(),
        _libedgetpu(),
        _pycoral(),
        _edge_tpus(),
        _dist("adb-shell", "pip install adb-shell", "the ADB transport to Android phones (speaks ADB itself)"),
        _tool("adb", ["version"], "install Android platform-tools (apt install adb)",
              "not needed by the harness; Google's client, to pair phones and run `adb tcpip 5555`"),
        Check("adb key", "ok" if adbkey.exists() else "note",
              str(adbkey) if adbkey.exists() else f"{adbkey} absent; made on first ADB connection"),
        _dist("paramiko", "pip install paramiko", "the SSH transport to Raspberry Pi class boards"),
        _tool("ssh", ["-V"], "apt install openssh-client", "OpenSSH client, for the install commands the harness prints"),
    ]


WIDTH = 120


def render_checks(checks: list[Check], width: int = WIDTH) -> list[str]:
    """The table of checks within `width` columns, then the hints: a detail that does not fit goes
    under the table as `NAME STATUS (hint N): DETAIL` and its row says `see hint N`. An ok row's
    long detail (a deep path) wraps inside its column instead."""
    names = max(len("component"), *(len(c.name) for c in checks))
    statuses = max(len("status"), *(len(c.status) for c in checks))
    room = max(width - names - statuses - 4, 20)  # what the detail column may take
    rows: list[tuple[str, str, str]] = []
    hints: list[str] = []
    for c in checks:
        if len(c.detail) <= room:
            rows.append((c.name, c.status, c.detail))
        elif c.status == "ok":
            parts = textwrap.wrap(c.detail, room, break_on_hyphens=False) or [""]
            rows += [(c.name, c.status, parts[0])] + [("", "", part) for part in parts[1:]]
        else:
            hints.append(f"{c.name} {c.status} (hint {len(hints) + 1}): {c.detail}")
            see = f"see hint {len(hints)}"
            rows.append((c.name, c.status, f"{c.summary} — {see}" if c.summary and
                         len(c.summary) + len(see) + 3 <= room else see))
    details = max(len("detail"), *(len(r[2]) for r in rows))

    def line(row: tuple[str, str, str]) -> str:
        return f"{row[0]:<{names}}  {row[1]:<{statuses}}  {row[2]}".rstrip()

    out = [line(("component", "status", "detail")), "  ".join("-" * w for w in (names, statuses, details))]
    out += [line(r) for r in rows]
    if hints:  # straight under the table, no blank line: each line of the output starts with a word
        out += ["hints (one line each, so that a command copies whole):"] + hints
    return out
