"""A model's `data:` block, parsed once into frozen dataclasses at the plan's boundary.

Every source named here is checked as far as it can be without the model: the file or folder is
there and readable, a folder holds images, the ImageNet-layout's label files agree with its images,
an .npz holds an `x` array. What needs the model (input shape, output units) is checked when a split
is loaded (data/load.py). Nothing here writes a file, decodes an image or imports TensorFlow."""

from __future__ import annotations

import importlib
import math
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data import listing
from data.keras_modes import KERAS_MODES
from harness.config_checks import clip, key_text, plan_path, show, show_path
from harness.errors import ConfigError

KINDS = ("images", "imagenet", "npz", "npy")
SPLITS = ("calibration", "eval", "fine_tune")
TASKS = ("classification", "regression")
CHANNELS = ("rgb", "bgr", "gray")
# keys a split's mapping may hold beside its kind key
_EXTRA_KEYS = {"images": ("limit",), "imagenet": ("ground_truth", "model_labels", "limit"),
               "npz": ("limit",), "npy": ("labels", "limit")}
_METRIC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")


@dataclass(frozen=True)
class DataSource:
    """Where one split's examples come from. `limit` keeps the first N in the source's fixed order
    (image folders: one image of each class in turn, each class by relative path; ImageNet layout:
    by file name; arrays: by row)."""

    kind: str  # images | imagenet | npz | npy
    path: Path  # the folder, the .npz, or the x .npy
    labels_path: Path | None = None  # npy: the y .npy; imagenet: the ground-truth labels file
    model_labels: Path | None = None  # imagenet: the model's output labels (line i names output i)
    limit: int | None = None


@dataclass(frozen=True)
class Preprocess:
    """What turns a decoded image (pixels 0..255) into the model's input, in this order: channels,
    center crop, resize, then scale -> mean -> std, or a Keras application's mode instead of the
    last three. Arrays take only scale / mean / std / keras: they are already the model's shape."""

    resize: tuple[int, int] | None = None  # (height, width); default: the model's input size
    center_crop: float | None = None  # fraction of the short side kept (a centred square)
    scale: float | None = None
    mean: tuple[float, ...] | None = None  # per channel, after scale
    std: tuple[float, ...] | None = None  # per channel, after mean
    channels: str | None = None  # rgb | bgr | gray; default: what the model's input has
    keras: str | None = None  # a keras.applications module name (data/keras_modes.py)


@dataclass(frozen=True)
class DataSpec:
    calibration: DataSource | None
    eval: DataSource | None
    fine_tune: DataSource | None
    preprocess: Preprocess
    task: str | None  # classification | regression | None: inferred from the labels' dtype
    top_k: int | None = None  # None: top-5 where the model has at least 5 outputs; given: must fit them
    metric: str | None = None  # "package.module:function", called with labels and outputs

    def splits(self) -> dict[str, DataSource]:
        """The splits that are given, by name."""
        return {name: getattr(self, name) for name in SPLITS if getattr(self, name) is not None}


def parse_data(raw: Any, base: Path, source: str, where: str) -> DataSpec:
    """The DataSpec of a `data:` value. Relative paths resolve against `base` (the plan's folder).
    Any problem is one ConfigError naming `source` and the key path below `where`."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(source, where, f"expected a mapping with at least one of {', '.join(SPLITS)}, got {show(raw)}")
    known = (*SPLITS, "preprocess", "task", "top_k", "metric")
    for key in raw:
        if key not in known:
            raise ConfigError(source, f"{where}.{key_text(key)}", f"unknown key (known: {', '.join(known)})")
    if not any(raw.get(name) is not None for name in SPLITS):
        raise ConfigError(source, where, f"give at least one of {', '.join(SPLITS)}")
    splits = {name: None if raw.get(name) is None else _source(raw[name], base, source, f"{where}.{name}")
              for name in SPLITS}
    preprocess = _preprocess(raw.get("preprocess"), source, f"{where}.preprocess")
    task = raw.get("task")
    if task is not None and (not isinstance(task, str) or task not in TASKS):
        raise ConfigError(source, f"{where}.task", f"expected one of {', '.join(TASKS)}, got {show(task)}")
    top_k = raw.get("top_k")
    if top_k is not None and (not _is_int(top_k) or not 1 <= top_k <= 1000):
        raise ConfigError(source, f"{where}.top_k", f"expected an integer from 1 to 1000, got {show(top_k)}")
    metric = raw.get("metric")
    if metric is not None and (not isinstance(metric, str) or not _METRIC.match(metric)):
        raise ConfigError(source, f"{where}.metric",
                          f"expected 'package.module:function', got {show(metric)}")
    spec = DataSpec(preprocess=preprocess, task=task, top_k=top_k, metric=metric, **splits)
    for name, split in spec.splits().items():
        refuse_image_steps(split, preprocess, source, f"{where}.{name}", f"{where}.preprocess")
        if task == "regression" and split.kind in ("images", "imagenet"):
            raise ConfigError(source, f"{where}.task", f"{where}.{name} is an image folder, whose labels are "
                              "classes: regression needs an .npz or .npy pair with float targets")
    return spec


def refuse_image_steps(src: DataSource, pre: Preprocess, source: str, where: str, pre_where: str) -> None:
    """Arrays are the model's input already: resizing, cropping or reordering channels would be a
    guess about what their axes mean, so a plan that asks for it is refused rather than obeyed."""
    if src.kind not in ("npz", "npy"):
        return
    for step in ("resize", "center_crop", "channels"):
        if getattr(pre, step) is not None:
            raise ConfigError(source, f"{pre_where}.{step}",
                              f"applies to images only, and {where} is an .{src.kind} array (give its x "
                              f"already {step.replace('_', ' ')}d, or keep only scale/mean/std/keras)")


def check_metric(spec: DataSpec, source: str, where: str, base: Path | None = None) -> None:
    """Import the user metric's module and find the function: a typo fails at the boundary, not after
    an hour of measuring. This runs the module's import-time code, so it is a separate step."""
    if spec.metric is not None:
        resolve_metric(spec.metric, base, source, f"{where}.metric")


def resolve_metric(entry_point: str, base: Path | None, source: str, where: str) -> Any:
    """The function `package.module:function` names, importable from the plan's folder (`base`)
    as well as from the installed packages."""
    import sys

    module_name, _, attr = entry_point.partition(":")
    path = [str(base)] if base is not None and str(base) not in sys.path else []
    sys.path[:0] = path
    try:
        target: Any = importlib.import_module(module_name)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the user's module may raise anything while importing, SystemExit too
        raise ConfigError(source, where, f"cannot import {module_name}: {type(exc).__name__}: {clip(str(exc))}") from None
    finally:
        for entry in path:
            sys.path.remove(entry)
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(source, where, f"{module_name} has no {attr}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(source, where, f"{entry_point} is not callable")
    return target


# -- one split ---------------------------------------------------------------------------------


def _source(raw: Any, base: Path, source: str, where: str) -> DataSource:
    if isinstance(raw, str):
        return _detect(_path(_text(raw, source, where), base, source, where), source, where)
    if not isinstance(raw, dict):
        raise ConfigError(source, where, f"expected a path or a mapping with one of {', '.join(KINDS)}, got {show(raw)}")
    kinds = [k for k in raw if k in KINDS]
    if len(kinds) != 1:
        found = f" (found {', '.join(kinds)})" if kinds else ""
        raise ConfigError(source, where, f"give exactly one of {', '.join(KINDS)}{found}")
    kind = kinds[0]
    allowed = (kind, *_EXTRA_KEYS[kind])
    for key in raw:
        if key not in allowed:
            raise ConfigError(source, f"{where}.{key_text(key)}", f"unknown key for {kind} (known: {', '.join(allowed)})")
    limit = raw.get("limit")
    if limit is not None and (not _is_int(limit) or limit < 1 or limit > 2**53):
        raise ConfigError(source, f"{where}.limit", f"expected an integer >= 1, got {show(limit)}")
    path = _path(_text(raw[kind], source, f"{where}.{kind}"), base, source, f"{where}.{kind}")
    if kind == "images":
        listing.image_folder(path, source, f"{where}.images")
        return DataSource("images", path, limit=limit)
    if kind == "imagenet":
        for key in ("ground_truth", "model_labels"):
            if key not in raw:
                raise ConfigError(source, f"{where}.{key}", "missing required key (the ImageNet layout needs "
                                  "the ground-truth labels and the model's output labels)")
        truth = _path(_text(raw["ground_truth"], source, f"{where}.ground_truth"), base, source, f"{where}.ground_truth")
        labels = _path(_text(raw["model_labels"], source, f"{where}.model_labels"), base, source, f"{where}.model_labels")
        src = DataSource("imagenet", path, labels_path=truth, model_labels=labels, limit=limit)
        listing.imagenet_layout(src, source, where)
        return src
    if kind == "npz":
        listing.npz_file(path, source, f"{where}.npz")
        return DataSource("npz", path, limit=limit)
    listing.npy_file(path, source, f"{where}.npy")
    labels_path = None
    if raw.get("labels") is not None:
        labels_path = _path(_text(raw["labels"], source, f"{where}.labels"), base, source, f"{where}.labels")
        listing.npy_file(labels_path, source, f"{where}.labels")
    return DataSource("npy", path, labels_path=labels_path, limit=limit)


def _detect(path: Path, source: str, where: str) -> DataSource:
    """A bare path: an .npz or .npy file, a folder in the TFLite ImageNet-evaluation layout
    (data/listing.py IMAGENET_NAMES), or an image folder."""
    info = _stat(path, source, where)
    if stat.S_ISREG(info.st_mode):
        if path.suffix.lower() == ".npz":
            listing.npz_file(path, source, where)
            return DataSource("npz", path)
        if path.suffix.lower() == ".npy":
            listing.npy_file(path, source, where)
            return DataSource("npy", path)
        raise ConfigError(source, where, f"{show_path(path)}: expected an .npz or .npy file, or a folder of images")
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(source, where, f"{show_path(path)} is neither a file nor a folder")
    layout = listing.find_imagenet_layout(path)
    if layout is not None:
        images, truth, labels = layout
        src = DataSource("imagenet", images, labels_path=truth, model_labels=labels)
        listing.imagenet_layout(src, source, where, detected=True)
        return src
    listing.image_folder(path, source, where)
    return DataSource("images", path)


def _preprocess(raw: Any, source: str, where: str) -> Preprocess:
    if raw is None:
        return Preprocess()
    if not isinstance(raw, dict):
        raise ConfigError(source, where, f"expected a mapping, got {show(raw)}")
    known = ("resize", "center_crop", "scale", "mean", "std", "channels", "keras")
    for key in raw:
        if key not in known:
            raise ConfigError(source, f"{where}.{key_text(key)}", f"unknown key (known: {', '.join(known)})")
    values: dict[str, Any] = {}
    resize = raw.get("resize")
    if resize is not None:
        pair = [resize, resize] if _is_int(resize) else resize
        if not isinstance(pair, list) or len(pair) != 2 or not all(_is_int(v) and 1 <= v <= 65536 for v in pair):
            raise ConfigError(source, f"{where}.resize",
                              f"expected [height, width] (or one size for both) in pixels, got {show(resize)}")
        values["resize"] = (pair[0], pair[1])
    crop = raw.get("center_crop")
    if crop is not None:
        if not _is_number(crop) or not 0 < crop <= 1:
            raise ConfigError(source, f"{where}.center_crop", f"expected a fraction in (0, 1], got {show(crop)}")
        values["center_crop"] = float(crop)
    if raw.get("scale") is not None:
        if not _is_number(raw["scale"]) or raw["scale"] == 0:
            raise ConfigError(source, f"{where}.scale", f"expected a finite non-zero number, got {show(raw['scale'])}")
        values["scale"] = float(raw["scale"])
    for key in ("mean", "std"):
        if raw.get(key) is not None:
            values[key] = _numbers(raw[key], source, f"{where}.{key}", positive=key == "std")
    channels = raw.get("channels")
    if channels is not None:
        if not isinstance(channels, str) or channels not in CHANNELS:
            raise ConfigError(source, f"{where}.channels", f"expected one of {', '.join(CHANNELS)}, got {show(channels)}")
        values["channels"] = channels
    keras = raw.get("keras")
    if keras is not None:
        if not isinstance(keras, str) or keras not in KERAS_MODES:
            raise ConfigError(source, f"{where}.keras",
                              f"unknown Keras application {show(keras)} (known: {', '.join(KERAS_MODES)})")
        for other in ("scale", "mean", "std"):
            if other in values:
                raise ConfigError(source, f"{where}.{other}",
                                  f"give either keras ({keras} scales and centres by itself) or scale/mean/std")
        if values.get("channels") == "bgr":
            raise ConfigError(source, f"{where}.channels", "keras modes take RGB images (caffe mode reorders "
                              "to BGR itself): leave channels out or set rgb")
        values["keras"] = keras
    return Preprocess(**values)


# -- small checks ------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int of 400 digits
        return False


def _numbers(raw: Any, source: str, key: str, positive: bool) -> tuple[float, ...]:
    """One number (every channel) or one per channel (1 to 4 of them)."""
    values = raw if isinstance(raw, list) else [raw]
    if not 1 <= len(values) <= 4 or not all(_is_number(v) for v in values):
        raise ConfigError(source, key, f"expected a number or a list of 1 to 4 numbers, got {show(raw)}")
    if positive and any(v <= 0 for v in values):
        raise ConfigError(source, key, f"must be > 0 (a divisor), got {show(raw)}")
    return tuple(float(v) for v in values)


def _text(value: Any, source: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(source, key, f"expected a path, got {show(value)}")
    return value


def _path(text: str, base: Path, source: str, key: str) -> Path:
    path = plan_path(text, base, source, key)
    _stat(path, source, key)
    return path


def _stat(path: Path, source: str, key: str):
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(source, key, f"no such file or folder: {show_path(path)}") from None
    except OSError as exc:  # too long, not permitted, a loop of links
        raise ConfigError(source, key, f"cannot read {show_path(path)}: {exc.strerror or exc}") from None
    except ValueError:  # a character the file system cannot take
        raise ConfigError(source, key, f"not a usable path: {show_path(path)}") from None
