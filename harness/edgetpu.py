"""The Edge TPU compile step: full-integer variants through Coral's `edgetpu_compiler`, once.

A Coral cell (`edgetpu` delegate) measures `<model>_edgetpu.tflite`, which the compiler makes from
a full-integer model on the host: the operations it can map become one custom op run by the TPU,
the rest stay on the host's CPU. The step

- finds the compiler (the plan's `edgetpu_compiler.path`, else `edgetpu_compiler` on PATH) and
  records its `--version`;
- runs `edgetpu_compiler -s -o DIR [-a] [-d [-k N]] [-m N] [-n N] [-t N] X.tflite` under a
  timeout of ours, and parses its console output (harness.parsers.edgetpu_compiler): ops on the
  TPU and on the CPU, subgraphs, on-chip and off-chip memory;
- keeps the compiled model, its `.log` and what was parsed in the artifact cache under the sha256
  of (input model, compiler version, flags): a second sweep compiles nothing. A compiler failure
  is cached like a success (same inputs, same failure); a timeout is not.

Which variants may go: only full-integer ones (int8, qat_int8, a given .tflite whose tensors are
all integer). A given model that is already compiled (it holds `edgetpu-custom-op`) goes as it is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from harness.artifacts import Cache
from harness.provenance import digest

Log = Callable[[str], None]

NEEDS_FULL_INTEGER = ("Edge TPU needs full-integer quantization: only int8, qat_int8 or a fully "
                      "quantized .tflite is compiled for it")
NOT_INSTALLED = ("edgetpu_compiler is not installed on this host (not on PATH; the plan may name it with "
                 "edgetpu_compiler.path). It runs on x86-64 Debian/Ubuntu: sudo apt-get install "
                 "edgetpu-compiler from Coral's apt repository, see https://coral.ai/docs/edgetpu/compiler/")
COMPILED_OP = b"edgetpu-custom-op"  # the custom op a compiled model runs on the TPU
INTEGER_TYPES = ("int8", "uint8", "int32", "int64", "bool")  # activations 8-bit, biases and shapes wider
VERSION = re.compile(r"Edge TPU Compiler version (\S+)")


@dataclass(frozen=True)
class CompilerSettings:
    """The plan's `edgetpu_compiler:` section: where the compiler is, its documented flags, and how
    long we let it run. A bare string is the path."""

    path: str | None = None  # default: edgetpu_compiler on PATH
    min_runtime_version: int | None = None  # -m: the oldest Edge TPU runtime the model must run on
    num_segments: int | None = None  # -n: split into segments for a pipeline of TPUs
    search_delegate: bool = False  # -d: search for an earlier stopping point when compilation fails
    delegate_search_step: int | None = None  # -k: ops per step of that search (needs search_delegate)
    enable_multiple_subgraphs: bool = False  # -a: map ops after an unsupported one too (experimental)
    timeout_sec: int | None = None  # -t: the compiler's own limit (it defaults to 180 s)
    timeout_s: float = 900.0  # ours: the compiler is killed after this

    def flags(self) -> list[str]:
        """The flags these settings add; `-s` and `-o` are always given by the harness."""
        argv = ["-a"] if self.enable_multiple_subgraphs else []
        if self.search_delegate:
            argv.append("-d")
            if self.delegate_search_step is not None:
                argv += ["-k", str(self.delegate_search_step)]
        for flag, value in (("-m", self.min_runtime_version), ("-n", self.num_segments), ("-t", self.timeout_sec)):
            if value is not None:
                argv += [flag, str(value)]
        return argv

    def problems(self) -> list[tuple[str, str]]:
        """(key, what is wrong) for values the compiler would refuse."""
        found = []
        for key in ("min_runtime_version", "num_segments", "delegate_search_step", "timeout_sec"):
            value = getattr(self, key)
            if value is not None and value < 1:
                found.append((key, f"must be >= 1, got {value}"))
        if self.delegate_search_step is not None and not self.search_delegate:
            found.append(("delegate_search_step", "needs search_delegate: true (-k goes with -d)"))
        if self.timeout_s <= 0:
            found.append(("timeout_s", f"must be > 0 (seconds), got {self.timeout_s}"))
        return found


@dataclass(frozen=True)
class Compiled:
    """One variant compiled for the Edge TPU, or why it could not be."""

    status: str  # ok | failed | segmented (compiled into a pipeline of several models)
    reason: str | None = None
    path: Path | None = None
    sha256: str | None = None
    bytes: int | None = None
    log_path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)  # the parsed console output
    compiler_version: str | None = None
    cached: bool = False
    precompiled: bool = False  # a given model that was compiled elsewhere

    def metrics(self) -> dict[str, float]:
        """What the compiler says about the model, as metrics of the Edge TPU cell."""
        names = {"edgetpu_model_bytes": "output_size_bytes", "edgetpu_ops": "ops_on_edgetpu",
                 "cpu_ops": "ops_on_cpu", "edgetpu_subgraphs": "subgraphs",
                 "edgetpu_on_chip_bytes": "on_chip_memory_bytes", "edgetpu_off_chip_bytes": "off_chip_memory_bytes"}
        found = {metric: float(self.info[key]) for metric, key in names.items() if self.info.get(key) is not None}
        if self.bytes is not None:
            found["edgetpu_model_bytes"] = float(self.bytes)
        return found

    def details(self) -> dict[str, Any]:
        keep = ("compiler_version", "success", "input_model", "output_model", "total_ops", "operators", "error")
        return {"status": self.status, "reason": self.reason, "sha256": self.sha256, "precompiled": self.precompiled,
                "log": str(self.log_path) if self.log_path else None,
                **{k: self.info.get(k) for k in keep}}


def inspect_tflite(path: Path) -> tuple[bool, bool]:
    """(full integer, already compiled) for a .tflite file: every tensor an integer type, read
    with LiteRT's interpreter (no allocation); compiled when it holds the Edge TPU custom op."""
    data = Path(path).read_bytes()
    if COMPILED_OP in data:
        return True, True
    from ai_edge_litert.interpreter import Interpreter

    try:
        tensors = Interpreter(model_content=data).get_tensor_details()
    except (ValueError, RuntimeError):
        return False, False
    return all(t["dtype"].__name__ in INTEGER_TYPES for t in tensors), False


def find_compiler(settings: CompilerSettings) -> tuple[str | None, str | None]:
    """(path, None) or (None, why there is none)."""
    if settings.path:
        path = Path(settings.path).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            return None, f"the plan's edgetpu_compiler.path {path} is not an executable file"
        return str(path), None
    found = shutil.which("edgetpu_compiler")
    return (found, None) if found else (None, NOT_INSTALLED)


def compiler_version(path: str) -> tuple[str | None, str | None]:
    """(version, None) from `edgetpu_compiler --version`, or (None, why not)."""
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"cannot run {path} --version: {exc}"
    match = VERSION.search(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not match:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        return None, f"{path} --version exited {proc.returncode} without a version: {tail or '(no output)'}"
    return match.group(1), None


class Compiler:
    """Compiles models into `<cache>/edgetpu/` by key; `counts` says what it did this sweep."""

    def __init__(self, settings: CompilerSettings, cache_root: Path, log: Log):
        self.settings = settings
        self.root = Path(cache_root) / "edgetpu"
        self.log = log
        self.cache = Cache(cache_root, log)
        self.counts = {"compiled": 0, "cached": 0, "failed": 0}
        self._path, self._version, self._unusable = None, None, None
        self._looked = False

    def _compiler(self) -> tuple[str | None, str | None, str | None]:
        if not self._looked:
            self._looked = True
            self._path, self._unusable = find_compiler(self.settings)
            if self._path:
                self._version, self._unusable = compiler_version(self._path)
                if self._version:
                    self.log(f"edgetpu_compiler {self._version} ({self._path})")
        return self._path, self._version, self._unusable

    def compile(self, model: str, variant: str, source: Path, source_sha256: str) -> Compiled:
        path, version, unusable = self._compiler()
        if unusable:
            self.counts["failed"] += 1
            return Compiled("failed", reason=unusable)
        key = digest("edgetpu", source_sha256, version, self.settings.flags())
        cached = self._read(key)
        if cached is not None:
            self.counts["cached"] += 1
            return cached
        self.log(f"{model}/{variant}: compiling for the Edge TPU")
        result = self._run(path, version, key, f"{model}_{variant}", source)
        self.counts["compiled" if result.status != "failed" else "failed"] += 1
        what = (f"{result.info.get('ops_on_edgetpu')}/{result.info.get('total_ops')} ops on the Edge TPU, "
                f"{result.info.get('subgraphs')} subgraph(s)" if result.status != "failed" else f"FAILED: {result.reason}")
        self.log(f"{model}/{variant}: edgetpu_compiler: {what}")
        return result

    # -- the cache -----------------------------------------------------------------------------

    def _paths(self, key: str) -> dict[str, Path]:
        return {ext: self.root / f"{key}.{ext}" for ext in ("tflite", "log", "out", "json")}

    def _read(self, key: str) -> Compiled | None:
        paths = self._paths(key)
        try:
            meta = json.loads(paths["json"].read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if meta["status"] != "ok":
            return self._compiled(meta, paths, cached=True)
        if not paths["tflite"].exists():
            return None
        why = self.cache.damage(paths["tflite"], meta.get("sha256"), meta.get("bytes"))
        if why is not None:  # a compiled model that is not the one compiled is compiled again
            self.cache.discard(paths["tflite"], why, paths["json"])
            return None
        return self._compiled(meta, paths, cached=True)

    @staticmethod
    def _compiled(meta: dict, paths: dict[str, Path], cached: bool) -> Compiled:
        ok = meta["status"] == "ok"
        return Compiled(meta["status"], reason=meta.get("reason"), path=paths["tflite"] if ok else None,
                        sha256=meta.get("sha256"), bytes=meta.get("bytes"),
                        log_path=paths["log"] if paths["log"].exists() else None, info=meta.get("info") or {},
                        compiler_version=meta.get("compiler_version"), cached=cached)

    def _write(self, key: str, meta: dict, files: dict[str, Path | bytes]) -> Compiled:
        """The files first, then the metadata: a key with metadata is complete."""
        paths = self._paths(key)
        self.root.mkdir(parents=True, exist_ok=True)
        for ext, content in files.items():
            tmp = paths[ext].with_name(f".{paths[ext].name}.{os.getpid()}")
            if isinstance(content, bytes):
                tmp.write_bytes(content)
            else:
                shutil.copyfile(content, tmp)
            os.replace(tmp, paths[ext])
        tmp = paths["json"].with_name(f".{paths['json'].name}.{os.getpid()}")
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.replace(tmp, paths["json"])
        return self._compiled(meta, paths, cached=False)

    # -- one compilation -----------------------------------------------------------------------

    def _run(self, path: str, version: str, key: str, stem: str, source: Path) -> Compiled:
        from harness.parsers import edgetpu_compiler

        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".compile-") as tmp:
            work = Path(tmp)
            shutil.copyfile(source, work / f"{stem}.tflite")
            argv = [path, "-s", "-o", "out", *self.settings.flags(), f"{stem}.tflite"]
            (work / "out").mkdir()
            started = time.monotonic()
            proc = subprocess.Popen(argv, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                output, _ = proc.communicate(timeout=self.settings.timeout_s)
            except subprocess.TimeoutExpired:  # not cached: a slower machine may finish
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                return Compiled("failed", compiler_version=version,
                                reason=f"edgetpu_compiler ran past the plan's edgetpu_compiler.timeout_s="
                                       f"{self.settings.timeout_s:g} and was killed")
            seconds = time.monotonic() - started
            text = output.decode(errors="replace")
            info = edgetpu_compiler.parse(text)
            meta = {"status": "ok", "compiler_version": version, "argv": argv[1:], "exit_code": proc.returncode,
                    "seconds": seconds, "info": info}
            outputs = sorted((work / "out").glob("*_edgetpu.tflite"))
            logs = sorted((work / "out").glob("*_edgetpu.log"))
            files: dict[str, Path | bytes] = {"out": output}
            if logs:
                files["log"] = logs[0]
            if proc.returncode != 0 or not outputs:
                lines = [line for line in text.strip().splitlines() if line.strip()]
                why = info.get("error") or " | ".join(lines[-3:]) or "no output"
                meta.update(status="failed", reason=f"edgetpu_compiler exited {proc.returncode}: {why}")
            elif len(outputs) > 1:
                meta.update(status="segmented", reason=(
                    f"compiled into {len(outputs)} segments (edgetpu_compiler.num_segments) for a pipeline "
                    "of Edge TPUs; a cell measures one model, so these are compiled and reported, not run"))
            else:
                data = outputs[0].read_bytes()
                files["tflite"] = data
                meta.update(sha256=_sha256(data), bytes=len(data))
            return self._write(key, meta, files)


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def compile_for_cells(settings: CompilerSettings, cache_root: Path, wanted: Iterable[tuple[str, str]],
                      builds: dict[str, Any], log: Log) -> dict[str, int]:
    """Compile every (model, variant) an `edgetpu` cell will measure into `build.compiled[variant]`;
    returns what was compiled, found in the cache, or failed."""
    compiler = Compiler(settings, cache_root, log)
    for model, variant in dict.fromkeys(wanted):
        build = builds[model]
        artifact = build.artifacts[variant]
        if artifact.status != "ok" or not artifact.full_integer:
            continue
        if artifact.precompiled:
            build.compiled[variant] = Compiled("ok", path=artifact.path, sha256=artifact.sha256,
                                               bytes=artifact.bytes, precompiled=True)
            continue
        build.compiled[variant] = compiler.compile(model, variant, artifact.path, artifact.sha256)
    return compiler.counts
