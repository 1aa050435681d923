"""End to end through the command line: `harness sweep` on a tiny plan (a zoo model, a given .tflite,
a .keras file of one's own) -> `harness report` in every format -> a second sweep that converts nothing."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys

import pytest

from conftest import FAST_PROTOCOL, harness_cli, write
from harness.store import Store

pytestmark = pytest.mark.slow

KERAS_MODEL = """
from harness.tfenv import import_tf
tf, keras = import_tf()
keras.utils.set_random_seed(1)
model = keras.Sequential([keras.layers.InputLayer(input_shape=(16,)), keras.layers.Dense(32, activation="relu"),
                          keras.layers.Dense(8)])
model.save({path!r})
"""


@pytest.fixture(scope="module")
def sweep(digits_build, session_cache, tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    shutil.copy(digits_build[0].artifacts["int8"].path, work / "given_int8.tflite")
    subprocess.run([sys.executable, "-c", KERAS_MODEL.format(path=str(work / "mine.keras"))], check=True,
                   capture_output=True)
    plan = write(work / "tiny.yaml", "name: tiny\nmodels:\n"
                 "  - model: digits_cnn\n    variants: [fp32, int8, pruned_dynamic]\n"
                 "  - path: given_int8.tflite\n"
                 "  - path: mine.keras\n    variants: [fp32, dynamic]\n"
                 "targets:\n  - device: local\n    delegates: [cpu, xnnpack]\n    threads: [1]\n" + FAST_PROTOCOL)
    db = work / "results.sqlite"
    args = ("sweep", "--plan", str(plan), "--db", str(db), "--cache-dir", str(session_cache))
    first = harness_cli(*args, cwd=work)
    second = harness_cli(*args, cwd=work)
    return {"work": work, "db": db, "first": first, "second": second}


def test_sweep_prints_the_table_then_the_run_id(sweep):
    first = sweep["first"]
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    run_id = lines[-1]
    assert Store(sweep["db"]).resolve_run("latest") == sweep["second"].stdout.strip().splitlines()[-1]
    assert Store(sweep["db"]).resolve_run(run_id) == run_id
    assert "### digits_cnn on local" in first.stdout and "### given_int8 on local" in first.stdout
    assert "| int8 |" in first.stdout and "run ok: 12 ok" in first.stdout
    progress = [line for line in first.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 12 and progress[-1].startswith("[####################] 12/12")


def test_json_report_has_every_cell(sweep):
    run_id = sweep["first"].stdout.strip().splitlines()[-1]
    result = harness_cli("report", "--db", str(sweep["db"]), "--run", run_id, "--format", "json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert len(records) == 12 and all(r["status"] == "ok" for r in records)
    cells = {(r["model"], r["variant"], r["delegate"]): r for r in records}
    assert {v for m, v, d in cells if m == "mine"} == {"fp32", "dynamic"}
    digits_int8 = cells["digits_cnn", "int8", "xnnpack"]
    assert digits_int8["top1_accuracy"] > 0.9 and digits_int8["top1_agreement"] > 0.9
    assert digits_int8["latency_p50_us"] > 0 and digits_int8["samples_count"] >= 10
    assert digits_int8["nodes_delegated"] > 0 and cells["digits_cnn", "int8", "cpu"]["nodes_delegated"] == 0
    assert cells["digits_cnn", "pruned_dynamic", "cpu"]["sparsity"] >= 0.79
    given = cells["given_int8", "given", "cpu"]
    assert given["top1_accuracy"] is None and given["model_bytes"] == digits_int8["model_bytes"]
    assert given["artifact_sha256"] == digits_int8["artifact_sha256"]
    mine = cells["mine", "dynamic", "xnnpack"]
    assert 0 < mine["top1_agreement"] <= 1 and mine["sqnr_db"] > 10 and mine["eval_examples"] == 32


def test_csv_and_markdown_reports(sweep):
    csv_out = sweep["work"] / "out" / "report.csv"
    result = harness_cli("report", "--db", str(sweep["db"]), "--format", "csv", "--out", str(csv_out))
    assert result.returncode == 0 and result.stdout.strip() == str(csv_out)
    rows = list(csv.DictReader(io.StringIO(csv_out.read_text())))
    assert [(r["model"], r["variant"]) for r in rows] == [
        ("digits_cnn", "fp32"), ("digits_cnn", "int8"), ("digits_cnn", "pruned_dynamic"),
        ("given_int8", "given"), ("mine", "fp32"), ("mine", "dynamic")]
    markdown = harness_cli("report", "--db", str(sweep["db"]))
    assert markdown.returncode == 0 and "| pruned_dynamic |" in markdown.stdout and "## Run " in markdown.stdout


def test_provenance_is_stored(sweep):
    store = Store(sweep["db"])
    run = store.run(store.resolve_run("latest"))
    versions = json.loads(run["versions_json"])
    assert versions["ai-edge-litert"] == "2.3.0" and versions["tensorflow"] == "2.21.0" and versions["numpy"]
    assert run["plan_name"] == "tiny" and len(run["plan_sha256"]) == 64 and run["status"] == "ok"
    (device,) = store.devices_of_run(run["id"])
    assert device["attributes"]["kernel"] and device["attributes"]["cores"] >= 1
    cell = store.cells(run["id"])[0]
    assert json.loads(cell["protocol_json"])["num_runs"] == 10 and cell["runtime_version"] == "2.3.0"
    assert len(store.samples(cell["id"])) == cell["metrics"]["samples_count"]


def test_second_sweep_converts_and_trains_nothing(sweep):
    second = sweep["second"]
    assert second.returncode == 0, second.stderr
    assert "digits_cnn: all 3 variants from cache, nothing to convert or train" in second.stderr
    assert "mine: all 2 variants from cache, nothing to convert or train" in second.stderr
    assert "0 converted, 0 failed (0 build worker runs)" in second.stderr
    assert "training" not in second.stderr
    store = Store(sweep["db"])
    assert store.count("runs") == 2 and store.count("cells") == 24
