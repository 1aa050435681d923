"""Which files a source uses, in which order, with which labels. Parsing, loading and hashing all
list a source through here, so the three can never disagree about what a split is.

Image folders follow Keras' `image_dataset_from_directory` (labels inferred): one subfolder per
class, classes in sorted order take labels 0..C-1, and each class folder is walked recursively
(keras/src/utils/dataset_utils.py `index_directory`). Within a class, images are sorted by
relative path (folder by folder); the classes are then taken in turn (`_round_robin`), so that
`limit: N` keeps about N/C images of every class rather than the first classes only. A folder with images and no class subfolders
is an unlabelled source (Keras' `labels=None`), enough for calibration. Names starting with a dot
are skipped (macOS leaves `._x.jpg` files that are not images).

The "imagenet" layout is what TFLite's ImageNet classification evaluation tool takes
(tensorflow/lite/tools/evaluation/tasks/imagenet_image_classification: README.md, run_eval.cc,
and ../../utils.cc, ../../stages/topk_accuracy_eval_stage.cc, image_classification_stage.cc):
- `--ground_truth_images_path`: a folder whose files (every entry that is not a folder, whatever
  its extension; no recursion) are evaluated "in alphabetical order of filename" (`GetSortedFileNames`:
  readdir, then std::sort of the paths, i.e. byte order);
- `--ground_truth_labels`: one label per line (`ReadFileLines`, std::getline) "in the same order as
  the sorted filename of images"; the tool refuses a file whose line count differs from the image
  count. The lines are label *names*, not indices: the README's `generate_validation_labels.py`
  turns the devkit's synset ids into the first word of each synset's words;
- `--model_output_labels`: line i names output i, "e.g. in case of mobilenets ... the output 1001
  dimension tensor" (line 0 "background"); the stage requires the output shape (1, line count);
- an image's label index is the position of the first line of the model labels equal to its
  ground-truth line (`GroundTruthIndex`, exact string match); a label not found is an error. So a
  1001-output model's background offset comes from its labels file, never from a constant;
- `--num_images` keeps the first N after sorting (our `limit`). The tool's optional denylist is
  not supported. One leniency: a trailing carriage return is dropped from label lines.
A folder holding the tool's three inputs under the names its README pushes to the phone
(`ilsvrc_images/`, `ilsvrc_validation_labels.txt`, `model_output_labels.txt`) or under its flag
names (`ground_truth_images/`, `ground_truth_labels.txt`, `model_output_labels.txt`) is recognised
from a bare path."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from harness.config_checks import clip, show, show_path
from harness.errors import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".webp")
IMAGENET_NAMES = (("ilsvrc_images", "ilsvrc_validation_labels.txt", "model_output_labels.txt"),
                  ("ground_truth_images", "ground_truth_labels.txt", "model_output_labels.txt"))
NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class Listing:
    """A source's files in its fixed order, relative to `root` with '/' separators."""

    root: Path
    files: tuple[str, ...]
    labels: tuple[int, ...] | None  # one per file, or None (unlabelled)
    class_names: tuple[str, ...] | None  # folder names, or the model's output labels
    outputs_named: bool = False  # class_names[i] names output i (the model must have that many)


def image_folder(path: Path, source: str, key: str) -> Listing:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except NotADirectoryError:
        raise ConfigError(source, key, f"{show_path(path)} is not a folder") from None
    except OSError as exc:
        raise ConfigError(source, key, f"cannot read {show_path(path)}: {exc.strerror or exc}") from None
    classes = [e.name for e in entries if not e.name.startswith(".") and _is_dir(e)]
    per_class = [[f"{name}/{f}" for f in _walk_images(path / name, source, key)] for name in classes]
    files, labels = _round_robin(per_class)
    if files:
        return Listing(path, tuple(files), tuple(labels), tuple(classes))
    flat = [e.name for e in entries if _is_image(e.name) and not _is_dir(e)]
    if not flat:
        raise ConfigError(source, key, f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {show_path(path)}"
                          " or in class subfolders of it")
    return Listing(path, tuple(flat), None, None)


def _round_robin(per_class: list[list[str]]) -> tuple[list[str], list[int]]:
    """The first image of every class, then the second of every class, and so on: a `limit` then
    keeps a sample of every class (the first 200 of an ImageNet train folder in sorted order would
    be a class and a sixth), and the order is as fixed as the sorted one."""
    files: list[str] = []
    labels: list[int] = []
    for rank in range(max((len(found) for found in per_class), default=0)):
        for label, found in enumerate(per_class):
            if rank < len(found):
                files.append(found[rank])
                labels.append(label)
    return files, labels


def _walk_images(folder: Path, source: str, key: str) -> list[str]:
    """Image files under one class folder, relative to it, sorted folder by folder."""
    found: list[tuple[str, ...]] = []

    def failed(exc: OSError) -> None:
        raise ConfigError(source, key, f"cannot read {show_path(exc.filename or folder)}: {exc.strerror or exc}")

    for top, dirs, names in os.walk(folder, onerror=failed):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(top).relative_to(folder).parts
        found.extend((*rel, n) for n in names if _is_image(n))
    return ["/".join(parts) for parts in sorted(found)]


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def find_imagenet_layout(folder: Path) -> tuple[Path, Path, Path] | None:
    for images, truth, labels in IMAGENET_NAMES:
        if (folder / images).is_dir() and (folder / truth).is_file() and (folder / labels).is_file():
            return folder / images, folder / truth, folder / labels
    return None


def imagenet_layout(src, source: str, where: str, detected: bool = False) -> Listing:
    """The images, their label indices and the model's labels of an "imagenet" DataSource."""
    def key(name: str) -> str:
        return where if detected else f"{where}.{name}"

    try:
        names = [e.name for e in os.scandir(src.path) if not _is_dir(e)]
    except NotADirectoryError:
        raise ConfigError(source, key("imagenet"), f"{show_path(src.path)} is not a folder") from None
    except OSError as exc:
        raise ConfigError(source, key("imagenet"), f"cannot read {show_path(src.path)}: {exc.strerror or exc}") from None
    names.sort(key=lambda n: os.fsencode(n))
    if not names:
        raise ConfigError(source, key("imagenet"), f"no images in {show_path(src.path)}")
    truth = read_lines(src.labels_path, source, key("ground_truth"))
    outputs = read_lines(src.model_labels, source, key("model_labels"))
    if len(truth) != len(names):
        raise ConfigError(source, key("ground_truth"),
                          f"{show_path(src.labels_path)} has {len(truth)} lines for {len(names)} files in "
                          f"{show_path(src.path)} (one label per image, in sorted file-name order)")
    if not outputs:
        raise ConfigError(source, key("model_labels"), f"{show_path(src.model_labels)} is empty")
    index: dict[str, int] = {}
    for i, label in enumerate(outputs):
        index.setdefault(label, i)
    labels = []
    for line, label in enumerate(truth, 1):
        if label not in index:
            hint = (" (the ground truth holds label names, as generate_validation_labels.py writes them, "
                    "not indices)") if label.strip().isdigit() else ""
            raise ConfigError(source, key("ground_truth"),
                              f"line {line} of {show_path(src.labels_path)}: {show(label)} is not a line of "
                              f"{show_path(src.model_labels)}{hint}")
        labels.append(index[label])
    return Listing(src.path, tuple(names), tuple(labels), tuple(outputs), outputs_named=True)


def read_lines(path: Path, source: str, key: str) -> list[str]:
    """Lines as std::getline gives them (a final newline ends the last line, no empty line after)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, key, f"{show_path(path)} is not UTF-8 text ({clip(str(exc))})") from None
    except OSError as exc:
        raise ConfigError(source, key, f"cannot read {show_path(path)}: {exc.strerror or exc}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def npz_file(path: Path, source: str, key: str) -> None:
    """An .npz is a zip of .npy members; it must hold `x` (and may hold `y`)."""
    _regular(path, source, key)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
    except (zipfile.BadZipFile, EOFError):
        raise ConfigError(source, key, f"{show_path(path)} is not an .npz file (not a zip archive)") from None
    except OSError as exc:
        raise ConfigError(source, key, f"cannot read {show_path(path)}: {exc.strerror or exc}") from None
    arrays = [m[:-4] for m in members if m.endswith(".npy")]
    if "x" not in arrays:
        raise ConfigError(source, key, f"{show_path(path)} has no array 'x' (it has: {', '.join(arrays) or 'none'}; "
                          "save it with np.savez(path, x=..., y=...))")


def npy_file(path: Path, source: str, key: str) -> None:
    _regular(path, source, key)
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except IsADirectoryError:
        raise ConfigError(source, key, f"{show_path(path)} is a folder, not an .npy file") from None
    except OSError as exc:
        raise ConfigError(source, key, f"cannot read {show_path(path)}: {exc.strerror or exc}") from None
    if head != NPY_MAGIC:
        raise ConfigError(source, key, f"{show_path(path)} is not an .npy file (no NumPy header)")


def _regular(path: Path, source: str, key: str) -> None:
    """A folder, a pipe or a device is refused before it is opened (a pipe would block the read)."""
    if not path.is_file():
        raise ConfigError(source, key, f"{show_path(path)} is not a regular file")


def listing_of(src, source: str, where: str) -> Listing:
    """The listing of an image source (images or imagenet); arrays have none."""
    if src.kind == "images":
        return image_folder(src.path, source, where)
    return imagenet_layout(src, source, where, detected=True)
