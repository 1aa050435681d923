"""Writing an output file so that a reader never sees half of it, and never over one of the
command's own inputs."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Iterable, Iterator

from harness.errors import ConfigError


def check_output(option: str, path: str | os.PathLike | None, inputs: Iterable[tuple[str, str | os.PathLike | None]]
                 ) -> None:
    """Before any work: refuse an output path that is one of the command's inputs (`inputs`: what
    each is, its path), a directory, or somewhere nothing can be written, so that a sweep of an
    hour does not end on a bad `--html` and `--out results.sqlite` does not overwrite the store."""
    if path is None:
        return
    out = Path(path)
    for what, given in inputs:
        if given is None:
            continue
        for candidate in (Path(given), *(Path(f"{given}{s}") for s in ("-wal", "-shm", "-journal"))):
            if _same_file(out, candidate):
                raise ConfigError(option, None, f"{out} is {what}: refusing to write over it (give another path)")
    try:
        info = out.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise ConfigError(option, None, f"{out}: cannot write: {exc.strerror or exc}") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise ConfigError(option, None, f"{out} is a directory (give a file path)")
    if info is not None and not stat.S_ISREG(info.st_mode):
        return  # /dev/stdout, a FIFO: written in place
    folder = existing_ancestor(out.absolute().parent)
    if not folder.is_dir():
        raise ConfigError(option, None, f"{out}: cannot write: {folder} is not a directory")
    try:  # what the write will do: a file created in that folder (root passes every permission test)
        probe = folder / f".{out.name}.probe-{os.getpid()}"
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise ConfigError(option, None, f"{out}: cannot create a file in {folder}: {exc.strerror or exc}") from None


def _same_file(a: Path, b: Path) -> bool:
    """The same file, or (where one does not exist yet: the store a sweep will create) the same path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def existing_ancestor(folder: Path) -> Path:
    """`folder`, or its nearest parent that exists: where something made there would be created."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


@contextlib.contextmanager
def atomic_path(out: Path) -> Iterator[Path]:
    """Yield a temporary path beside `out` to write to; on success it replaces `out` in one
    rename, on failure it is removed and `out` is left as it was. A symbolic link is followed (the
    file it names is replaced, the link stays); a device or a pipe (`/dev/stdout`) is written in
    place, as it cannot be replaced. A path that cannot be written (a directory, no permission, a
    full disk) is one ConfigError naming it."""
    try:
        if out.exists() and not out.is_file():
            if out.is_dir():
                raise IsADirectoryError(21, "Is a directory")
            yield out
            return
        target = Path(os.path.realpath(out)) if out.is_symlink() else out
        tmp = target.with_name(f".{target.name}.tmp{target.suffix}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(str(out), None, f"cannot write: {exc.strerror or exc}") from None
