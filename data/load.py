"""A split loaded for a model: its inputs shaped and preprocessed as the model takes them, its
labels, and a one-line description for the report. Checks that need the model (input shape,
output units) happen here; they are ConfigErrors too, raised before anything is measured."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from data import listing
from data.images import check_channel_steps, image_plan, load_image, normalize
from data.spec import DataSource, Preprocess, refuse_image_steps
from harness.config_checks import clip, show, show_path
from harness.errors import ConfigError

Progress = Callable[[int, int], None]


@dataclass
class Split:
    x: np.ndarray  # float32 (N, *input_shape)
    y: np.ndarray | None  # int64 class indices, float32 targets, or None
    description: str  # "412 images in 10 class folders of /data/val"
    class_names: tuple[str, ...] | None = None
    outputs_named: bool = False  # class_names[i] names output i (ImageNet layout: the model's labels)

    @property
    def task(self) -> str | None:
        if self.y is None:
            return None
        return "classification" if np.issubdtype(self.y.dtype, np.integer) else "regression"


def load_split(src: DataSource, pre: Preprocess, input_shape: tuple, source: str, where: str,
               progress: Progress | None = None, task: str | None = None) -> Split:
    """`where` is the split's key path (e.g. models[0].data.eval); preprocess problems are named
    under its parent's `preprocess`. `progress(done, total)` is called as images are decoded (at
    most about 200 times) so a long load can show where it is."""
    pre_where = f"{where.rpartition('.')[0]}.preprocess" if "." in where else "preprocess"
    refuse_image_steps(src, pre, source, where, pre_where)
    if src.kind in ("npz", "npy"):
        return _load_arrays(src, pre, tuple(input_shape), source, where, pre_where, task)
    return _load_images(src, pre, tuple(input_shape), source, where, pre_where, progress)


def _load_images(src: DataSource, pre: Preprocess, input_shape: tuple, source: str, where: str,
                 pre_where: str, progress: Progress | None) -> Split:
    plan = image_plan(pre, input_shape, source, where, pre_where)
    found = listing.listing_of(src, source, where)
    count = len(found.files) if src.limit is None else min(src.limit, len(found.files))
    refuse_too_large(count, plan.shape, src, source, where)
    x = np.empty((count, *plan.shape), np.float32)
    step = max(1, count // 200)
    for i, name in enumerate(found.files[:count]):
        x[i] = load_image(found.root / name, plan, source, where)
        if progress is not None and ((i + 1) % step == 0 or i + 1 == count):
            progress(i + 1, count)
    y = None if found.labels is None else np.asarray(found.labels[:count], np.int64)
    first = f"first {count} of " if count < len(found.files) else ""
    if src.kind == "imagenet":
        text = (f"{first}{len(found.files)} images of {show_path(src.path)} (ground truth {show_path(src.labels_path)}, "
                f"{len(found.class_names)} model labels)")
    elif found.class_names is None:
        text = f"{first}{len(found.files)} unlabelled images in {show_path(src.path)}"
    else:
        text = f"{first}{len(found.files)} images in {len(found.class_names)} class folders of {show_path(src.path)}"
    return Split(x, y, text, found.class_names, found.outputs_named)


MAX_SPLIT_BYTES = 4 * 2**30  # a split is held in memory as float32 (and pushed to devices): past this, ask for a limit


def refuse_too_large(count: int, shape: tuple, src: DataSource, source: str, where: str) -> None:
    """A split larger than MAX_SPLIT_BYTES as float32 (ImageNet's 50,000 validation images at
    224x224x3 are 30 GB) is refused before it is decoded, with the `limit` that fits."""
    per_example = 4 * int(np.prod(shape))
    if count * per_example > MAX_SPLIT_BYTES:
        fits = MAX_SPLIT_BYTES // per_example
        raise ConfigError(source, where, f"{count:,} examples of shape {tuple(shape)} are "
                          f"{count * per_example / 2**30:.1f} GiB as float32, more than the "
                          f"{MAX_SPLIT_BYTES / 2**30:.0f} GiB a split may hold: give `limit: {fits:,}` or less "
                          f"(the first examples of {show_path(src.path)} in its fixed order)")


def _load_arrays(src: DataSource, pre: Preprocess, input_shape: tuple, source: str, where: str,
                 pre_where: str, task: str | None) -> Split:
    x, y, total = _read_arrays(src, source, where, task)
    x = _fit_shape(x, input_shape, source, where)
    channels = x.shape[-1] if x.ndim > 1 else 1
    check_channel_steps(pre, channels, f"x's last axis is {channels}", source, pre_where)
    x = np.ascontiguousarray(normalize(x, pre), np.float32)
    first = f"first {len(x)} of " if len(x) < total else ""
    return Split(x, y, f"{first}{total} examples from {show_path(src.path)}")


def _read_arrays(src: DataSource, source: str, where: str, task: str | None) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(x as float32, its first `limit` rows; their labels; how many rows the source has): what an
    array split must be whatever the model (numbers, finite, one label per example, labels of a kind)."""
    if src.kind == "npz":
        x, y = _read_npz(src.path, source, where)
    else:
        x = _read_npy(src.path, source, where)
        y = None if src.labels_path is None else _read_npy(src.labels_path, source, f"{where}.labels")
    total = len(x) if x.ndim else 0
    if x.dtype.kind not in "buif" or x.ndim == 0 or total == 0:
        raise ConfigError(source, where, f"x in {show_path(src.path)} must be a non-empty numeric array, "
                          f"got dtype {x.dtype} and shape {x.shape}")
    if y is not None and (y.ndim == 0 or len(y) != total):
        raise ConfigError(source, where, f"x has {total} examples and y has shape {y.shape}: one label per example")
    count = total if src.limit is None else min(src.limit, total)
    refuse_too_large(count, x.shape[1:], src, source, where)
    x = np.asarray(x[:count], np.float32)
    if not np.isfinite(x).all():
        raise ConfigError(source, where, f"x in {show_path(src.path)} holds NaN or infinite values")
    y = None if y is None else _labels(np.asarray(y[:count]), task, source, where)
    return x, y, total


def check_split_alone(spec, name: str, source: str, where: str) -> None:
    """What can be checked of the spec's split `name` without the model (`where` is the data block's
    key path): an array split's dtypes, values, lengths and labels. Its shape against the model's
    input, the preprocessing's channels and the labels against the outputs wait for the model, and
    so does an image folder (its images are decoded at the model's input size)."""
    src = getattr(spec, name)
    if src.kind in ("npz", "npy"):
        _read_arrays(src, source, f"{where}.{name}", spec.task)


def _read_npz(path: Path, source: str, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files:
                raise ConfigError(source, where, f"{show_path(path)} has no array 'x' (it has: "
                                  f"{', '.join(archive.files) or 'none'})")
            return tuple(_array(archive, key, path, source, where) if key in archive.files else None
                         for key in ("x", "y"))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(source, where, f"cannot read {show_path(path)}: {clip(str(exc))}") from None


def _array(archive, key: str, path: Path, source: str, where: str) -> np.ndarray:
    """archive[key], an array: NumPy hands a member that is not an .npy file back as its bytes."""
    value = archive[key]
    if not isinstance(value, np.ndarray):
        raise ConfigError(source, where, f"{show_path(path)}: {key}.npy is not a NumPy array file "
                          f"(no .npy header; it starts {show(bytes(value[:16]))})")
    return value


def _read_npy(path: Path, source: str, where: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(source, where, f"cannot read {show_path(path)}: {clip(str(exc))}") from None


def _fit_shape(x: np.ndarray, input_shape: tuple, source: str, where: str) -> np.ndarray:
    """x as (N, *input_shape): equal, or equal once a trailing axis of 1 is added or dropped."""
    def fits(shape: tuple) -> bool:
        return len(shape) == len(input_shape) and all(w is None or w == s for w, s in zip(input_shape, shape))

    shape = x.shape[1:]
    if fits(shape):
        return x
    if fits((*shape, 1)):
        return x[..., None]
    if shape and shape[-1] == 1 and fits(shape[:-1]):
        return x[..., 0]
    raise ConfigError(source, where, f"x's examples have shape {shape}, the model's input is {tuple(input_shape)}")


def _labels(y: np.ndarray, task: str | None, source: str, where: str) -> np.ndarray:
    """Integer labels -> int64 class indices; float -> float32 targets; `task` overrides."""
    if y.dtype.kind not in "buif":
        raise ConfigError(source, where, f"labels must be numbers, got dtype {y.dtype}")
    wanted = task or ("regression" if y.dtype.kind == "f" else "classification")
    if wanted == "regression":
        y = y.astype(np.float32)
        if not np.isfinite(y).all():
            raise ConfigError(source, where, "regression targets hold NaN or infinite values")
        return y
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ConfigError(source, where, f"class labels must be one index per example, got shape {y.shape}")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise ConfigError(source, where, "task is classification but the labels are not whole numbers")
    return y.astype(np.int64)


def load_for_model(spec, name: str, input_shape: tuple, output_units: int | None, source: str, where: str,
                   progress: Progress | None = None) -> Split:
    """The spec's split `name` shaped for a model (`where` is the data block's key path) and its
    labels checked against the model's outputs when they are known; top_k is the eval split's."""
    split_where = f"{where}.{name}"
    split = load_split(getattr(spec, name), spec.preprocess, input_shape, source, split_where, progress,
                       task=spec.task)
    if output_units is not None:
        check_labels(split, output_units, spec.task, source, split_where,
                     top_k=spec.top_k if name == "eval" else None)
    return split


def check_labels(split: Split, output_units: int, task: str | None, source: str, where: str,
                 top_k: int | None = None) -> None:
    """Labels the model's outputs can be scored against: class indices inside [0, output_units),
    an ImageNet-layout labels file with one line per output, regression targets as wide as the
    output, and top_k no larger than the number of classes."""
    if split.outputs_named and split.class_names is not None and len(split.class_names) != output_units:
        raise ConfigError(source, f"{where}.model_labels", f"the model labels file has {len(split.class_names)} lines "
                          f"and the model {output_units} outputs (line i must name output i)")
    if not split.outputs_named and split.class_names is not None and len(split.class_names) > output_units:
        raise ConfigError(source, where, f"{len(split.class_names)} class folders for the model's {output_units} "
                          "outputs (class i is output i, folders in sorted order)")
    if split.y is None:
        return
    kind = task or split.task
    if kind == "classification":
        if split.y.dtype.kind not in "iub":
            raise ConfigError(source, where, "task is classification but the labels are not class indices")
        if top_k is not None and top_k > output_units:
            raise ConfigError(source, f"{where.rpartition('.')[0] or where}.top_k",
                              f"top_k {top_k} is more than the model's {output_units} outputs")
        low, high = int(split.y.min()), int(split.y.max())
        if low < 0 or high >= output_units:
            bad = high if high >= output_units else low
            raise ConfigError(source, where, f"label {bad} is outside the model's {output_units} outputs "
                              f"(labels span {low}..{high}; class indices must lie in 0..{output_units - 1})")
    else:
        width = 1 if split.y.ndim == 1 else int(np.prod(split.y.shape[1:]))
        if width != output_units:
            raise ConfigError(source, where, f"regression targets have {width} value(s) per example and the "
                              f"model {output_units} output(s)")
