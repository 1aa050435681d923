"""The artifact cache: every converted variant, trained source model and evaluation set, stored
under the sha256 of what made it (source bytes, recipe, the code that applies it, library
versions). Computing a key needs no TensorFlow, so a sweep whose artifacts all exist never loads it.

    <root>/sources/<source key>/model.keras, eval.npz, training.json
    <root>/artifacts/<variant key>.tflite + .json (status, reason, sizes, sparsity, provenance)
    <root>/references/<fp32 sha256>-<eval sha256>.npy   fp32 outputs on the host, for fidelity
    <root>/logs/build-<source key>.log                  the build worker's stderr
    <root>/measured/<sha256>.tflite                     every model a sweep measured, by content
                                                        (a hard link where it can be), for
                                                        `harness gate --confirm` to measure again
    <source file or reference>.sha256.json              its sha256 and size, as an artifact's .json

An entry is used only when its bytes are those its record says were written (hashed once per
sweep): a damaged one (cut short, edited) would be measured, or crash the sweep, so it is removed
with a warning and built again.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.provenance import digest, library_versions
from harness.variants import VARIANTS, Recipe

HERE = Path(__file__).resolve().parent
# The code that turns a recipe into bytes is part of the recipe.
CODE = (HERE / "convert.py", HERE / "optimize.py", HERE / "worker.py")
FOLDERS = ("sources", "artifacts", "references", "logs", "measured", "edgetpu")
CONVERSION_LIBRARIES = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "numpy", "scikit-learn", "pillow")


def conversion_versions() -> dict[str, str | None]:
    versions = library_versions()
    return {name: versions.get(name) for name in CONVERSION_LIBRARIES}


def source_key(key_material: Any) -> str:
    return digest("source", key_material, conversion_versions())


def variant_key(source: str, recipe: Recipe) -> str:
    code = hashlib.sha256(b"".join(p.read_bytes() for p in CODE)).hexdigest()
    return digest("variant", source, recipe.key(), code, conversion_versions())


def gzip_size(data: bytes) -> int:
    """Size after gzip at level 9, as the seeds measure models."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


@dataclass(frozen=True)
class Artifact:
    """One variant of one model: its file and what is known about it, or why it does not exist."""

    model: str
    variant: str
    status: str  # ok | failed
    reason: str | None = None
    path: Path | None = None
    sha256: str | None = None
    bytes: int | None = None
    gzip_bytes: int | None = None
    sparsity: float | None = None
    cached: bool = False
    seconds: float | None = None
    full_integer: bool = False  # every tensor an integer: what the Edge TPU compiler takes
    precompiled: bool = False  # a given model already compiled for the Edge TPU
    calibration_examples: int | None = None  # inputs the converter calibrated on (full-integer recipes)
    fine_tune_examples: int | None = None  # examples pruning / QAT fine-tuned on

    @classmethod
    def from_file(cls, model: str, variant: str, path: Path, full_integer: bool = False,
                  precompiled: bool = False) -> "Artifact":
        data = Path(path).read_bytes()
        return cls(model, variant, "ok", path=Path(path), sha256=hashlib.sha256(data).hexdigest(),
                   bytes=len(data), gzip_bytes=gzip_size(data), cached=True, full_integer=full_integer,
                   precompiled=precompiled)


def _stderr(message: str) -> None:
    print(f"harness: {message}", file=sys.stderr, flush=True)


def _read_json(path: Path) -> Any:
    """The JSON in `path`, None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _format_damage(path: Path) -> str | None:
    """Why a file kept before the cache recorded hashes is not whole, checked by its format (every
    zip member's CRC, an array's header and length); None when it is whole."""
    try:
        if path.suffix in (".keras", ".npz"):
            with zipfile.ZipFile(path) as archive:
                return None if archive.testzip() is None else "a zip member fails its CRC"
        if path.suffix == ".npy":
            import numpy as np

            np.load(path, mmap_mode="r")
            return None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        return f"not a whole {path.suffix} file: {exc}"
    return "no recorded sha256"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Cache:
    def __init__(self, root: Path | str, log: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.log = log or _stderr  # where a damaged entry is said (stderr: even with --quiet)
        self._hashed: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256, this sweep

    def check(self, option: str = "--cache-dir") -> None:
        """Refuse, before anything runs (and without creating anything), a cache path that is a
        file or that cannot be written."""
        from harness.errors import ConfigError
        from harness.files import existing_ancestor

        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(str(self.root), option, "a file, not a directory: the cache is a directory")
        existing = existing_ancestor(self.root.absolute())
        if not existing.is_dir():
            raise ConfigError(str(self.root), option, f"{existing} is a file, so the cache cannot be made here")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(str(self.root), option, f"cannot write the cache here: {existing} is read-only")
        for folder in (self.root / name for name in FOLDERS):  # else every cell fails writing into it
            if folder.exists() and not folder.is_dir():
                raise ConfigError(str(folder), option,
                                  "a file, not a directory: the cache keeps its entries in folders")
            if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
                raise ConfigError(str(folder), option, f"cannot write the cache here: {folder} is read-only")

    # -- whole entries ---------------------------------------------------------------------------

    def _sha256(self, path: Path, stat: os.stat_result) -> str:
        """Hashed once per sweep: every entry is checked where it is used, some in several places."""
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._hashed:
            with open(path, "rb") as f:
                self._hashed[key] = hashlib.file_digest(f, "sha256").hexdigest()
        return self._hashed[key]

    def damage(self, path: Path, sha256: str | None, size: int | None) -> str | None:
        """Why the file at `path` is not the one recorded (None when it is): its size, then its hash."""
        stat = path.stat()
        if size is not None and stat.st_size != size:
            return f"size mismatch: {stat.st_size} bytes, {size} recorded"
        if not sha256:
            return "no recorded sha256"
        return None if self._sha256(path, stat) == sha256 else "sha256 mismatch"

    def discard(self, path: Path, why: str, *with_it: Path) -> None:
        """A damaged entry goes, with its metadata, so that it is built again rather than used."""
        self.log(f"warning: cache entry {path} is damaged ({why}): rebuilding it")
        for each in (path, *with_it):
            each.unlink(missing_ok=True)

    @staticmethod
    def _record(path: Path) -> Path:
        return path.with_name(path.name + ".sha256.json")

    def seal(self, path: Path) -> str:
        """Record the sha256 and size of a file the cache just made; returns the sha256."""
        path = Path(path)
        stat = path.stat()
        sha256 = self._sha256(path, stat)
        _atomic_write(self._record(path), json.dumps({"sha256": sha256, "bytes": stat.st_size}).encode())
        return sha256

    def keep_array(self, path: Path, array) -> str:
        """Write an array as an .npy cache file whole (a temporary renamed into place) and record it;
        returns its sha256."""
        import io

        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, array)
        _atomic_write(Path(path), buffer.getvalue())
        return self.seal(path)

    def whole(self, path: Path) -> str | None:
        """The sha256 of the cache file at `path` when it is the file its record says was made; None
        when it is missing or damaged (removed, so it is made again). A file kept before records
        were is checked by its format, then recorded."""
        path = Path(path)
        if not path.is_file():
            return None
        record = _read_json(self._record(path))
        if not isinstance(record, dict):
            why = _format_damage(path)
            if why is None:
                return self.seal(path)
        else:
            why = self.damage(path, record.get("sha256"), record.get("bytes"))
            if why is None:
                return record["sha256"]
        self.discard(path, why, self._record(path))
        return None

    def check_source(self, key: str) -> None:
        """Check the source's kept files (model, eval set). When one was damaged (and so removed),
        the failures cached for its variants may be that damage, not the recipe's: they are dropped."""
        damaged = False
        for path in (self.source_dir(key) / "model.keras", self.eval_path(key)):
            damaged |= path.is_file() and self.whole(path) is None
        if damaged:
            for recipe in VARIANTS.values():
                meta_path = self._artifact(variant_key(key, recipe))[1]
                if (_read_json(meta_path) or {}).get("status") == "failed":
                    meta_path.unlink(missing_ok=True)

    def seal_source(self, key: str) -> None:
        """Record the files the build worker just made for the source (it runs only after
        `check_source`, so an unrecorded file there is its own)."""
        for path in (self.source_dir(key) / "model.keras", self.eval_path(key)):
            if path.is_file() and not self._record(path).exists():
                self.seal(path)

    def source_dir(self, key: str) -> Path:
        return self.root / "sources" / key

    def eval_path(self, key: str) -> Path:
        return self.source_dir(key) / "eval.npz"

    def log_path(self, key: str) -> Path:
        path = self.root / "logs" / f"build-{key[:16]}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def reference_path(self, fp32_sha256: str, eval_sha256: str) -> Path:
        return self.root / "references" / f"{fp32_sha256[:24]}-{eval_sha256[:24]}.npy"

    def measured(self, sha256: str) -> Path | None:
        """The model a sweep measured with this sha256, if the cache still holds it."""
        path = self.root / "measured" / f"{sha256}.tflite"
        if not path.is_file():
            return None
        why = self.damage(path, sha256, None)
        if why is not None:
            self.discard(path, why)
        return None if why else path

    def keep_measured(self, path: Path, sha256: str) -> Path:
        """Keep the model about to be measured under its sha256, so a later confirmation measures
        these very bytes even when a given file was changed since: a hard link to the cache's own
        files (written once, replaced whole, never changed in place), a copy of anything else.
        Returns the kept path."""
        kept = self.measured(sha256)
        if kept is not None:  # its name is its sha256: a cut copy is kept again
            return kept
        kept = self.root / "measured" / f"{sha256}.tflite"
        kept.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=kept.parent, prefix=f".{sha256[:12]}.")
        os.close(fd)
        os.unlink(tmp)
        try:
            try:
                if not Path(path).resolve().is_relative_to(self.root.resolve()):
                    raise OSError("not the cache's own file")
                os.link(path, tmp)
            except OSError:  # a user's file, another file system, or links not allowed: copy
                _atomic_write(Path(tmp), Path(path).read_bytes())
            os.replace(tmp, kept)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return kept

    def _artifact(self, key: str) -> tuple[Path, Path]:
        return self.root / "artifacts" / f"{key}.tflite", self.root / "artifacts" / f"{key}.json"

    def write_artifact(self, key: str, meta: dict, data: bytes | None) -> None:
        """The model file first, then its metadata: a key with metadata is complete."""
        model_path, meta_path = self._artifact(key)
        if data is not None:
            _atomic_write(model_path, data)
            meta = {**meta, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                    "gzip_bytes": gzip_size(data)}
        _atomic_write(meta_path, json.dumps(meta, indent=1, sort_keys=True).encode())

    def read_artifact(self, key: str) -> Artifact | None:
        model_path, meta_path = self._artifact(key)
        if not meta_path.is_file():
            return None
        meta = _read_json(meta_path)
        if not isinstance(meta, dict) or not {"model", "variant", "status"} <= meta.keys():
            self.discard(meta_path, "unreadable metadata", model_path)
            return None
        if meta["status"] == "ok" and not model_path.is_file():
            return None
        why = self.damage(model_path, meta.get("sha256"), meta.get("bytes")) if meta["status"] == "ok" else None
        if why is not None:  # the model is not the one its metadata describes: measured, it would lie
            self.discard(model_path, why, meta_path)
            return None
        return Artifact(
            model=meta["model"], variant=meta["variant"], status=meta["status"], reason=meta.get("reason"),
            path=model_path if meta["status"] == "ok" else None, sha256=meta.get("sha256"),
            bytes=meta.get("bytes"), gzip_bytes=meta.get("gzip_bytes"), sparsity=meta.get("sparsity"),
            cached=True, seconds=meta.get("seconds"), full_integer=bool(meta.get("full_integer")),
            calibration_examples=meta.get("calibration_examples"), fine_tune_examples=meta.get("fine_tune_examples"))
