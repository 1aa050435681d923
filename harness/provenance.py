"""Where a number came from: library versions, the project's commit, the host."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import harness

# Libraries whose version changes what a conversion produces or what a measurement means.
LIBRARIES = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "numpy",
             "scikit-learn", "pillow")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "harness": harness.__version__}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> tuple[str | None, bool]:
    """(commit of the project checkout, whether it has uncommitted changes); (None, False) outside git."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else False
    return commit, dirty


def digest(*parts: object) -> str:
    """sha256 of JSON-serialised parts (bytes are hashed as they are)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def file_bytes(*paths: Path) -> bytes:
    return b"".join(Path(p).read_bytes() for p in paths)
