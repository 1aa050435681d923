"""What the loaders of harness.config check beyond types: how a key or a value is shown in a
message (bounded, whatever the YAML held), numbers that a timer and SQLite can take, lists without
repeats, and model files that are what their names say. Pure: nothing here imports TensorFlow."""

from __future__ import annotations

import math
import os
import reprlib
import stat
import zipfile
from pathlib import Path
from typing import Any, Hashable, Sequence

from harness.errors import ConfigError

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
