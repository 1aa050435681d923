"""Shared fixtures. The digits CNN is trained and converted once per session, into a session cache
that the conversion, runner and end-to-end tests share (the second use of it is a cache hit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.artifacts import Cache
from harness.build import build_models
from harness.config import load_inventory, load_plan

ROOT = Path(__file__).resolve().parent.parent
FAST_PROTOCOL = "protocol: {warmup_runs: 1, warmup_min_secs: 0.05, num_runs: 10, min_secs: 0.05, max_secs: 2}\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def harness_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 900):
    """Run the real `harness` command line; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifact-cache")


@pytest.fixture(scope="session")
def digits_build(session_cache, tmp_path_factory):
    """digits_cnn trained and converted into all nine variants (about half a minute, once)."""
    plan_path = write(tmp_path_factory.mktemp("plans") / "digits.yaml", "models:\n  - model: digits_cnn\n")
    plan = load_plan(plan_path, load_inventory(None))
    messages: list[str] = []
    builds, summary = build_models(plan, Cache(session_cache), messages.append)
    return builds["digits_cnn"], summary, messages


@pytest.fixture
def local_device(tmp_path):
    from devices.local import LocalConfig, LocalDevice

    return LocalDevice(LocalConfig(name="local", workdir=str(tmp_path / "device")))
