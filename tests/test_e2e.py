"""End to end through the command line: `harness sweep` on a tiny plan (a zoo model, a given .tflite,
a .keras file of one's own, and a .tflite whose custom op no runtime has) -> `harness report` in
every format -> a second sweep that converts nothing."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys

import numpy as np
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

class Determinant(tf.Module):  # MatrixDeterminant is no TFLite builtin: kept as a custom op
    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def __call__(self, x):
        return tf.linalg.det(tf.reshape(x, (1, 2, 2)))

converter = tf.lite.TFLiteConverter.from_concrete_functions([Determinant().__call__.get_concrete_function()])
converter.allow_custom_ops = True
open({custom!r}, "wb").write(converter.convert())
"""


@pytest.fixture(scope="module")
def sweep(digits_build, session_cache, tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    shutil.copy(digits_build[0].artifacts["int8"].path, work / "given_int8.tflite")
    subprocess.run([sys.executable, "-c", KERAS_MODEL.format(path=str(work / "mine.keras"),
                                                          custom=str(work / "custom_op.tflite"))],
                   check=True, capture_output=True)
    plan = write(work / "tiny.yaml", "name: tiny\nmodels:\n"
                 "  - model: digits_cnn\n    variants: [fp32, int8, pruned_dynamic]\n"
                 "  - path: given_int8.tflite\n"
                 "  - path: mine.keras\n    variants: [fp32, dynamic]\n"
                 "  - path: custom_op.tflite\n"
                 "targets:\n  - device: local\n    delegates: [cpu, xnnpack]\n    threads: [1]\n" + FAST_PROTOCOL)
    db = work / "results.sqlite"
    args = ("sweep", "--plan", str(plan), "--db", str(db), "--cache-dir", str(session_cache))
    first = harness_cli(*args, cwd=work)
    second = harness_cli(*args, "--html", str(work / "report.html"), cwd=work)
    return {"work": work, "db": db, "first": first, "second": second}


def test_sweep_prints_the_table_then_the_run_id(sweep):
    first = sweep["first"]
    assert first.returncode == 0, first.stderr  # some cells failed, not all: the sweep succeeded
    lines = first.stdout.strip().splitlines()
    run_id = lines[-1]
    assert Store(sweep["db"]).resolve_run("latest") == sweep["second"].stdout.strip().splitlines()[-1]
    assert Store(sweep["db"]).resolve_run(run_id) == run_id
    assert "### digits_cnn on local" in first.stdout and "### given_int8 on local" in first.stdout
    assert "| int8 |" in first.stdout and "run partial: 2 failed, 12 ok" in first.stdout
    assert "| given | " in first.stdout and "failed [1]" in first.stdout
    progress = [line for line in first.stderr.splitlines() if line.startswith("[") and "of launches done" not in line]
    assert len(progress) == 14 and progress[-1].startswith("[####################] 14/14")
    rounds = [line.split("s ETA ")[1].split(" ", 1)[1] for line in first.stderr.splitlines() if "of launches" in line]
    assert rounds == ["local: round 1/3 of launches done", "local: round 2/3 of launches done"]
    assert "custom_op given on local xnnpack 1t: FAILED: allocate failed:" in first.stderr


def test_json_report_has_every_cell(sweep):
    run_id = sweep["first"].stdout.strip().splitlines()[-1]
    result = harness_cli("report", "--db", str(sweep["db"]), "--run", run_id, "--format", "json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert len(records) == 14
    cells = {(r["model"], r["variant"], r["delegate"]): r for r in records}
    for delegate in ("cpu", "xnnpack"):  # a model that cannot allocate is a stored failure with why
        failed = cells.pop(("custom_op", "given", delegate))
        assert failed["status"] == "failed" and failed["latency_p50_us"] is None
        assert failed["reason"].startswith("allocate failed:") and "MatrixDeterminant" in failed["reason"]
        assert failed["model_bytes"] > 0
    assert all(r["status"] == "ok" for r in cells.values())
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
        ("given_int8", "given"), ("mine", "fp32"), ("mine", "dynamic"), ("custom_op", "given")]
    markdown = harness_cli("report", "--db", str(sweep["db"]))
    assert markdown.returncode == 0 and "| pruned_dynamic |" in markdown.stdout and "## Run " in markdown.stdout


def test_provenance_is_stored(sweep):
    store = Store(sweep["db"])
    run = store.run(store.resolve_run("latest"))
    versions = json.loads(run["versions_json"])
    assert versions["ai-edge-litert"] == "2.3.0" and versions["tensorflow"] == "2.21.0" and versions["numpy"]
    assert run["plan_name"] == "tiny" and len(run["plan_sha256"]) == 64 and run["status"] == "partial"
    (device,) = store.devices_of_run(run["id"])
    assert device["attributes"]["kernel"] and device["attributes"]["cores"] >= 1
    cell = store.cells(run["id"])[0]
    assert json.loads(cell["protocol_json"])["num_runs"] == 10 and cell["runtime_version"] == "2.3.0"
    samples = store.samples(cell["id"])
    assert len(samples) == cell["metrics"]["samples_count"] and samples.min() > 0
    assert abs(float(np.median(samples)) - cell["metrics"]["latency_p50_us"]) < 0.01 * cell["metrics"]["latency_p50_us"]


def test_second_sweep_converts_and_trains_nothing(sweep):
    second = sweep["second"]
    assert second.returncode == 0, second.stderr
    assert "digits_cnn: all 3 variants from cache, nothing to convert or train" in second.stderr
    assert "mine: all 2 variants from cache, nothing to convert or train" in second.stderr
    assert "0 converted, 0 failed (0 build worker runs)" in second.stderr
    assert "training" not in second.stderr
    store = Store(sweep["db"])
    assert store.count("runs") == 2 and store.count("cells") == 28


def test_a_sweep_writes_its_html_report(sweep):
    second, page = sweep["second"], sweep["work"] / "report.html"
    lines = second.stdout.strip().splitlines()
    assert lines[-2] == f"report: {page}" and page.exists()
    html = page.read_text()
    assert f"Run {lines[-1]} — plan tiny" in html and "digits_cnn on local" in html
    assert "custom_op" in html and "allocate failed:" in html  # the failed cells with their reasons
    # digits_cnn: size, accuracy and distribution figures, and the trend over the two sweeps
    assert html.count('alt="digits_cnn: ') == 4 and 'alt="digits_cnn: Trend on local over 2 runs"' in html
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)  # nothing to fetch (reasons may cite URLs)

