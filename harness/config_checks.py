"""What the loaders of harness.config check beyond types: how a key or a value is shown in a
message (bounded, whatever the YAML held), numbers that a timer and SQLite can take, lists without
repeats, and model files that are what their names say (and, before a sweep measures, hold what
their kind needs: `model_contents`). Pure: nothing here imports TensorFlow."""

from __future__ import annotations

import json
import math
import os
import reprlib
import stat
import zipfile
from pathlib import Path
from typing import Any, Hashable, Sequence

from harness.errors import ConfigError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"  # what model.weights.h5 starts with
KERAS_WEIGHTS = ("model.weights.h5", "model.weights.npz")  # the weights file Keras writes beside config.json
TFLITE_MAGIC = b"TFL3"  # the flatbuffer file identifier, at bytes 4..8 of a .tflite
INT_MIN, INT_MAX = -2**63, 2**63 - 1  # what SQLite's INTEGER holds


class _Bounded(reprlib.Repr):
    """repr, cut short: a value from a YAML file may be an alias bomb or an integer of 10**5 digits."""

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxstring, self.maxlong, self.maxother = 3, 80, 40, 80
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 6

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() of a big int is slow, and refused past 4300 digits
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_BOUNDED = _Bounded()


def show(value: Any) -> str:
    """A value as a message shows it: its repr, at most a line."""
    return _BOUNDED.repr(value)


def clip(text: str, limit: int = 120) -> str:
    """A message from elsewhere (PyYAML, the OS), cut to a line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def key_text(key: Any) -> str:
    """A YAML key as messages name it: a printable string as it is, anything else by its repr."""
    return key if isinstance(key, str) and key and key.isprintable() and len(key) <= 80 else show(key)


def show_path(path: Path | str) -> str:
    text = str(path)
    return text if text.isprintable() and len(text) <= 200 else show(text)


def checked_number(value: int | float, hint: type, source: str, key: str) -> int | float:
    """An int that fits in 64 bits, or a finite float (nan, inf and 1e400 are no durations)."""
    if hint is float:
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(source, key, f"expected a finite number, got {show(value)}")
        return number
    if not INT_MIN <= value <= INT_MAX:
        raise ConfigError(source, key, f"{show(value)} is out of range (at most {INT_MAX})")
    return value


def first_repeat(values: Sequence[Hashable]) -> tuple[int, int] | None:
    """(index of the first value seen again, index where it was first), or None."""
    seen: dict[Hashable, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            return i, seen[value]
        seen[value] = i
    return None


def refuse_repeats(values: Sequence[Hashable], source: str, key: str) -> None:
    """A list of a plan or an inventory lists each value once: `key[i]: 'x' is listed twice`."""
    repeat = first_repeat(values)
    if repeat:
        i, first = repeat
        raise ConfigError(source, f"{key}[{i}]", f"{show(values[i])} is listed twice (first at {key}[{first}])")


def plan_path(text: str, base: Path, source: str, key: str) -> Path:
    """A path as a plan gives it: relative to the plan's folder, ~ expanded, no NUL."""
    if "\x00" in text:
        raise ConfigError(source, key, f"not a usable path: {show(text)} (a NUL character)")
    try:
        return base / Path(text).expanduser()
    except RuntimeError as exc:  # ~user of a user this host does not have
        raise ConfigError(source, key, f"cannot expand {show(text)}: {exc}") from None


def model_file(text: str, base: Path, source: str, key: str) -> tuple[str, Path]:
    """(kind, path) of a plan's `path:` (relative to the plan, ~ expanded): a .tflite with the TFL3
    identifier, a .keras zip archive, or a SavedModel directory with saved_model.pb."""
    path = plan_path(text, base, source, key)
    shown = show_path(path)
    info = _stat(path, shown, source, key)
    if stat.S_ISDIR(info.st_mode):
        if path.suffix in (".tflite", ".keras"):
            raise ConfigError(source, key, f"{shown} is a directory, not a {path.suffix} file")
        graph = _stat(path / "saved_model.pb", shown, source, key, missing_ok=True)
        if graph is None:
            raise ConfigError(source, key, f"{shown} is a directory without saved_model.pb")
        if not stat.S_ISREG(graph.st_mode):
            raise ConfigError(source, key, f"{shown}/saved_model.pb is not a file")
        return "saved_model", path
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(source, key, f"{shown} is not a regular file")
    if text.endswith(("/", os.sep)):
        raise ConfigError(source, key, f"{shown} is a file, not a directory")
    if path.suffix == ".tflite":
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError as exc:
            raise ConfigError(source, key, f"cannot read {shown}: {exc.strerror}") from None
        if len(head) < 8 or head[4:8] != TFLITE_MAGIC:
            raise ConfigError(source, key, f"{shown} is not a TFLite model (no TFL3 identifier at bytes 4..8)")
        return "tflite", path
    if path.suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise ConfigError(source, key, f"{shown} is not a Keras model (a .keras file is a zip archive)")
        return "keras", path
    if path.name == "saved_model.pb":
        raise ConfigError(source, key, f"{shown} is a file: give the SavedModel directory that holds it")
    raise ConfigError(source, key, f"{shown}: expected a .tflite, a .keras file or a SavedModel directory")


def _stat(path: Path, shown: str, source: str, key: str, missing_ok: bool = False) -> os.stat_result | None:
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        if missing_ok:
            return None
        raise ConfigError(source, key, f"no such file: {shown}") from None
    except OSError as exc:  # too long, not permitted, a loop of links
        raise ConfigError(source, key, f"cannot read {shown}: {exc.strerror or exc}") from None
    except ValueError:  # a character the file system cannot take (a lone surrogate)
        raise ConfigError(source, key, f"not a usable path: {shown}") from None


def model_contents(kind: str, path: Path, source: str, key: str) -> None:
    """What can be known of a Keras or SavedModel file without TensorFlow, checked before anything
    is built: a .keras archive holds config.json (JSON naming a model class) and the weights file
    Keras writes; a saved_model.pb is a SavedModel protobuf (a wire-format walk, nothing decoded).
    A .tflite's FlatBuffer is verified by LiteRT (harness/build.py check_model_files)."""
    shown = show_path(path)
    try:
        if kind == "keras":
            _keras_archive(path, shown, source, key)
        elif kind == "saved_model":
            _saved_model_graph((path / "saved_model.pb").read_bytes(), shown, source, key)
    except OSError as exc:
        raise ConfigError(source, key, f"cannot read {shown}: {exc.strerror or exc}") from None


def _keras_archive(path: Path, shown: str, source: str, key: str) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" not in names:
                raise ConfigError(source, key, f"{shown} is not a Keras model: its archive holds no config.json "
                                  f"(it holds: {show(names) if names else 'nothing'})")
            weights = [name for name in KERAS_WEIGHTS if name in names]
            if not weights:
                raise ConfigError(source, key, f"{shown} is not a Keras model: its archive holds no "
                                  f"{KERAS_WEIGHTS[0]} (the weights Keras saves beside config.json)")
            config_text = archive.read("config.json")
            head = archive.open(weights[0]).read(len(HDF5_MAGIC))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, ValueError) as exc:
        raise ConfigError(source, key, f"{shown} is not a Keras model (a damaged zip archive: {clip(str(exc))})") from None
    try:
        config = json.loads(config_text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(source, key, f"{shown}: config.json is not JSON ({clip(str(exc))})") from None
    name = config.get("class_name") if isinstance(config, dict) else None
    if not isinstance(name, str) or not name:
        raise ConfigError(source, key, f"{shown}: config.json names no model (no 'class_name' at its top)")
    inner = config.get("config")
    if name in ("Sequential", "Functional", "Model") and not (isinstance(inner, dict) and isinstance(inner.get("layers"), list)):
        layers = inner.get("layers") if isinstance(inner, dict) else None
        raise ConfigError(source, key, f"{shown}: config.json's {name} has no list of layers "
                          f"(config.layers is {show(layers)})")
    if weights[0].endswith(".h5") and head != HDF5_MAGIC:
        raise ConfigError(source, key, f"{shown}: {weights[0]} is not an HDF5 file (Keras writes the weights as one)")


# protobuf wire types that a field may have (3 and 4, groups, are not in proto3 messages)
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _proto_fields(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each field of the message in data[start:end];
    ValueError where the bytes are not a protobuf message."""
    fields, i = [], start

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            if i >= end or shift > 63:
                raise ValueError(f"a varint runs past byte {i}")
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while i < end:
        at = i
        tag = varint()
        number, wire = tag >> 3, tag & 7
        if number == 0 or wire not in (_VARINT, _I64, _LEN, _I32):
            raise ValueError(f"no protobuf field at byte {at} (tag {tag})")
        if wire == _VARINT:
            varint()
            fields.append((number, wire, at, i))
            continue
        size = {_I64: 8, _I32: 4}.get(wire) or varint()
        if i + size > end:
            raise ValueError(f"field {number} at byte {at} runs {i + size - end} bytes past its end")
        fields.append((number, wire, i, i + size))
        i += size
    return fields


def _saved_model_graph(data: bytes, shown: str, source: str, key: str) -> None:
    """saved_model.pb is a SavedModel message: field 1 its schema version (a varint), field 2 its
    MetaGraphDefs (messages, at least one)."""
    try:
        fields = _proto_fields(data, 0, len(data))
        graphs = [(s, e) for number, wire, s, e in fields if number == 2]
        if any(wire != (_VARINT if number == 1 else _LEN) for number, wire, _, _ in fields if number in (1, 2)):
            raise ValueError("its fields 1 and 2 are not a schema version and meta graphs")
        if not graphs:
            raise ValueError("it holds no meta graph")
        for s, e in graphs:
            _proto_fields(data, s, e)
    except ValueError as exc:
        raise ConfigError(source, key, f"{shown}/saved_model.pb is not a SavedModel ({exc})") from None
