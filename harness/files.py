"""Writing an output file so that a reader never sees half of it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from harness.errors import ConfigError


@contextlib.contextmanager
def atomic_path(out: Path) -> Iterator[Path]:
    """Yield a temporary path beside `out` to write to; on success it replaces `out` in one
    rename, on failure it is removed and `out` is left as it was. A path that cannot be written
    (a directory, no permission, a full disk) is one ConfigError naming it."""
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        tmp.replace(out)
    except OSError as exc:
        raise ConfigError(str(out), None, f"cannot write: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
