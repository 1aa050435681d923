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
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.provenance import digest, library_versions
from harness.variants import Recipe

HERE = Path(__file__).resolve().parent
# The code that turns a recipe into bytes is part of the recipe.
CODE = (HERE / "convert.py", HERE / "optimize.py", HERE / "worker.py")
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
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def check(self, option: str = "--cache-dir") -> None:
        """Refuse, before anything runs (and without creating anything), a cache path that is a
        file or that cannot be written."""
        from harness.errors import ConfigError

        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(str(self.root), option, "a file, not a directory: the cache is a directory")
        existing = next(p for p in (self.root, *self.root.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise ConfigError(str(self.root), option, f"{existing} is a file, so the cache cannot be made here")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(str(self.root), option, f"cannot write the cache here: {existing} is read-only")

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
        return path if path.is_file() else None

    def keep_measured(self, path: Path, sha256: str) -> Path:
        """Keep the model about to be measured under its sha256, so a later confirmation measures
        these very bytes even when a given file was changed since: a hard link to the cache's own
        files (written once, replaced whole, never changed in place), a copy of anything else.
        Returns the kept path."""
        kept = self.root / "measured" / f"{sha256}.tflite"
        if kept.is_file():
            return kept
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
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(meta, dict) or not {"model", "variant", "status"} <= meta.keys():
            return None  # a damaged entry (cut short, edited) is built again
        if meta["status"] == "ok" and not model_path.exists():
            return None
        return Artifact(
            model=meta["model"], variant=meta["variant"], status=meta["status"], reason=meta.get("reason"),
            path=model_path if meta["status"] == "ok" else None, sha256=meta.get("sha256"),
            bytes=meta.get("bytes"), gzip_bytes=meta.get("gzip_bytes"), sparsity=meta.get("sparsity"),
            cached=True, seconds=meta.get("seconds"), full_integer=bool(meta.get("full_integer")),
            calibration_examples=meta.get("calibration_examples"), fine_tune_examples=meta.get("fine_tune_examples"))
