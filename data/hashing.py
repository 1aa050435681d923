"""Content hashes of the data, for cache keys: the same bytes under the same names give the same
key on any machine, whatever the files' times; one changed byte, name, label or limit gives another.

What a split is hashed from: its kind and limit, then each file it uses, in its fixed order, as its
name relative to the source ('/' separators), its size and its bytes. For an image folder that is
the class folder names too (they are the labels) and the images used (the first `limit`); for the
ImageNet layout, both label files whole and the images used; for arrays, the .npz or the .npy
pair. Every field is length-prefixed, so no two different sources can run together into the same
byte stream."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from data import listing
from data.spec import DataSource, DataSpec
from harness.config_checks import show_path
from harness.errors import ConfigError

_CHUNK = 1 << 20
_FORMAT = "harness-data-1"  # bump when what is hashed changes


def content_sha256(src: DataSource, source: str = "<data>", where: str = "data") -> str:
    """The split's hash; a file that went away or cannot be read since parsing is a ConfigError."""
    try:
        return _content_sha256(src, source, where)
    except OSError as exc:
        raise ConfigError(source, where, f"cannot read {show_path(exc.filename or src.path)}: "
                          f"{exc.strerror or exc}") from None


def _content_sha256(src: DataSource, source: str, where: str) -> str:
    digest = hashlib.sha256()
    header = {"format": _FORMAT, "kind": src.kind, "limit": src.limit}
    _field(digest, json.dumps(header, sort_keys=True).encode())
    if src.kind in ("npz", "npy"):
        _file(digest, "x", src.path)
        if src.labels_path is not None:
            _file(digest, "y", src.labels_path)
        return digest.hexdigest()
    found = listing.listing_of(src, source, where)
    if src.kind == "imagenet":
        _file(digest, "ground_truth", src.labels_path)
        _file(digest, "model_labels", src.model_labels)
    else:
        _field(digest, json.dumps(found.class_names).encode())
    used = found.files if src.limit is None else found.files[:src.limit]
    for name in used:
        _file(digest, name, found.root / name)
    return digest.hexdigest()


def spec_key(spec: DataSpec, source: str = "<data>", where: str = "data") -> dict:
    """What the data contributes to a cache key, as JSON-able values."""
    pre = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec.preprocess).items()}
    splits = {name: None if src is None else content_sha256(src, source, f"{where}.{name}")
              for name, src in (("calibration", spec.calibration), ("eval", spec.eval), ("fine_tune", spec.fine_tune))}
    return {"splits": splits, "preprocess": pre, "task": spec.task, "top_k": spec.top_k, "metric": spec.metric}


def _field(digest, data: bytes) -> None:
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)


def _file(digest, name: str, path: Path) -> None:
    _field(digest, name.encode("utf-8", "surrogateescape"))
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        digest.update(size.to_bytes(8, "little"))
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
