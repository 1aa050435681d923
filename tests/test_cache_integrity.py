"""A damaged cache entry (cut short, edited) is never used: the sweep says which and why, once,
builds it again and measures the rebuilt one. Each test damages one kind of entry in a copy of the
session cache, then sweeps through the command line. (A damaged copy on a device:
tests/test_device_contract.py; a cache folder that is a file: docs/errors.md.)"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import FAST_PROTOCOL, harness_cli, inventory_yaml, write
from harness.artifacts import Cache

pytestmark = pytest.mark.slow

PLAN = ("name: tiny\nmodels:\n  - model: digits_cnn\n    variants: [int8]\n"
        "targets:\n  - device: local\n    delegates: [cpu]\n    threads: [1]\n" + FAST_PROTOCOL)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(digits_build, session_cache, tmp_path) -> Path:
    """A copy of the session cache (the other tests share it: it is never damaged itself)."""
    copy = tmp_path / "cache"
    for folder in ("sources", "artifacts", "references"):
        shutil.copytree(session_cache / folder, copy / folder)
    return copy


def entries(digits_build, cache: Path) -> dict[str, Path]:
    """The digits model's entries in the copy, by what they are."""
    build = digits_build[0]
    fp32, int8 = build.artifacts["fp32"], build.artifacts["int8"]
    return {"eval": cache / "sources" / build.eval_path.parent.name / "eval.npz",
            "keras": cache / "sources" / build.eval_path.parent.name / "model.keras",
            "int8": cache / "artifacts" / int8.path.name,
            "reference": Cache(cache).reference_path(fp32.sha256, build.eval_sha256)}


def sweep(tmp_path: Path) -> tuple[str, list[tuple]]:
    """Sweep the plan into a new store; (stderr, its cells as (variant, status, reason, sha256))."""
    write(tmp_path / "p.yaml", PLAN)
    write(tmp_path / "inv.yaml", inventory_yaml([{"name": "local", "transport": "local", "delegates": ["cpu"],
                                                  "workdir": str(tmp_path / "device")}]))
    result = harness_cli("sweep", "--plan", "p.yaml", "--inventory", "inv.yaml", "--db", "s.sqlite",
                         "--cache-dir", "cache", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        cells = db.execute("SELECT variant, status, reason, artifact_sha256 FROM cells").fetchall()
    return result.stderr, cells


def assert_rebuilt(stderr: str, cells: list[tuple], damaged: Path, why: str, int8: Path) -> None:
    """Said once, naming the entry (as --cache-dir names it) and why; the cell ok, measuring the
    int8 model the cache now holds, under its true sha256."""
    named = damaged.relative_to(int8.parents[2])
    said = [line for line in stderr.splitlines() if "is damaged" in line and str(named) in line]
    assert said == [f"harness: warning: cache entry {named} is damaged ({why}): rebuilding it"], stderr
    assert [c[:3] for c in cells] == [("int8", "ok", None)], cells
    meta = json.loads(int8.with_suffix(".json").read_text())
    assert cells[0][3] == meta["sha256"] == sha256(int8)


def test_a_cut_eval_set_is_made_again(digits_build, cache, tmp_path):
    paths = entries(digits_build, cache)
    whole = paths["eval"].read_bytes()
    os.truncate(paths["eval"], 3000)
    stderr, cells = sweep(tmp_path)
    assert_rebuilt(stderr, cells, paths["eval"], f"size mismatch: 3000 bytes, {len(whole)} recorded", paths["int8"])
    assert paths["eval"].read_bytes() == whole


def test_a_cut_reference_is_computed_again(digits_build, cache, tmp_path):
    paths = entries(digits_build, cache)
    whole = paths["reference"].read_bytes()
    os.truncate(paths["reference"], 100)
    stderr, cells = sweep(tmp_path)
    assert_rebuilt(stderr, cells, paths["reference"], f"size mismatch: 100 bytes, {len(whole)} recorded",
                   paths["int8"])
    assert paths["reference"].read_bytes() == whole


def test_a_cut_model_is_converted_again(digits_build, cache, tmp_path):
    paths = entries(digits_build, cache)
    size = paths["int8"].stat().st_size
    os.truncate(paths["int8"], 7000)
    stderr, cells = sweep(tmp_path)
    assert_rebuilt(stderr, cells, paths["int8"], f"size mismatch: 7000 bytes, {size} recorded", paths["int8"])
    assert "digits_cnn/int8: converted" in stderr


def test_an_edited_sha256_is_not_trusted(digits_build, cache, tmp_path):
    paths = entries(digits_build, cache)
    meta_path = paths["int8"].with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "sha256": "deadbeef" * 8}))
    stderr, cells = sweep(tmp_path)
    assert_rebuilt(stderr, cells, paths["int8"], "sha256 mismatch", paths["int8"])
    assert cells[0][3] == meta["sha256"]


def test_a_cut_source_model_is_trained_again_and_its_failures_dropped(digits_build, cache, tmp_path):
    """The failure the cut model caused (cached as the variant's) goes with it: int8 converts."""
    paths = entries(digits_build, cache)
    size = paths["keras"].stat().st_size
    meta_path = paths["int8"].with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    paths["int8"].unlink()
    meta_path.write_text(json.dumps({**meta, "status": "failed", "sha256": None, "bytes": None,
                                     "reason": "cannot load the source model: OSError: file signature not found"}))
    os.truncate(paths["keras"], 5000)
    stderr, cells = sweep(tmp_path)
    assert_rebuilt(stderr, cells, paths["keras"], f"size mismatch: 5000 bytes, {size} recorded", paths["int8"])
    assert "training" in stderr


def test_an_entry_from_before_records_is_checked_by_its_format(digits_build, cache):
    """A cache kept before sha256 records: a whole file is recorded, a cut one removed."""
    paths = entries(digits_build, cache)
    for path in (paths["eval"], paths["reference"]):
        path.with_name(path.name + ".sha256.json").unlink()
    os.truncate(paths["eval"], 3000)
    said: list[str] = []
    copy = Cache(cache, said.append)
    assert copy.whole(paths["reference"]) == sha256(paths["reference"])
    assert copy.whole(paths["eval"]) is None and not paths["eval"].exists()
    assert said == [f"warning: cache entry {paths['eval']} is damaged (not a whole .npz file: "
                    "File is not a zip file): rebuilding it"]

