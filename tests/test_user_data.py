"""The user's own data through the whole pipeline (`data:` in the plan), with the real command line,
TensorFlow, tfmot and LiteRT on this host:

- the digits CNN saved as a `.keras` file and scored on scikit-learn's held-out digits written out
  as an image folder (a subfolder per class) gets the zoo's own top-1, calibrated and fine-tuned
  on the training digits given as an `.npz`;
- a regression model of one's own scored by MAE / RMSE with intervals, and a user metric;
- data that does not fit the model, and trained weights this machine cannot download, are refused
  before anything is measured (exit 2, no store)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import FAST_PROTOCOL, harness_cli, write
from harness.store import Store

pytestmark = pytest.mark.slow

LOCAL_CPU = "targets:\n  - device: local\n    delegates: [cpu]\n    threads: [1]\n"


def digits_keras(digits_build, session_cache, folder):
    """The zoo's trained digits CNN, as the user's own .keras file."""
    from harness.artifacts import Cache
    from harness.build import _keys
    from harness.config import ModelEntry

    _, skey, _ = _keys(ModelEntry("digits_cnn", "zoo", ("fp32",), zoo="digits_cnn"))
    path = folder / "digits.keras"
    path.write_bytes((Cache(session_cache).source_dir(skey) / "model.keras").read_bytes())
    return path


def image_folder(root, x: np.ndarray, y: np.ndarray):
    """Images in [0, 1] as 8-bit grayscale PNGs, one subfolder per class (Keras' convention)."""
    for i, (image, label) in enumerate(zip(x, y)):
        folder = root / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L").save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def digits_sweep(digits_build, session_cache, tmp_path_factory):
    from models.digits import SETTINGS, load_data

    work = tmp_path_factory.mktemp("user-data")
    x_train, y_train, x_test, y_test = load_data()
    digits_keras(digits_build, session_cache, work)
    image_folder(work / "test", x_test, y_test)
    np.savez(work / "train.npz", x=x_train * 255, y=y_train)  # pixel values, as the images hold them
    np.savez(work / "calibration.npz", x=x_train[:SETTINGS["calibration_examples"]] * 255)
    plan = write(work / "plan.yaml", (
        "name: user-data\nmodels:\n"
        "  - model: digits_cnn\n    variants: [fp32, int8, pruned]\n"
        "  - path: digits.keras\n    name: mine\n    variants: [fp32, int8, pruned]\n"
        "    data:\n"
        "      eval: test\n"
        "      calibration: {npz: calibration.npz}\n"
        "      fine_tune: {npz: train.npz}\n"
        "      preprocess: {scale: 0.00392156862745098}\n"
        + LOCAL_CPU + FAST_PROTOCOL))
    db = work / "results.sqlite"
    swept = harness_cli("sweep", "--plan", str(plan), "--db", str(db), "--cache-dir", str(session_cache), cwd=work)
    assert swept.returncode == 0, swept.stderr
    run_id = swept.stdout.strip().splitlines()[-1]
    store = Store(db)
    cells = {(c["model"], c["variant"]): c for c in store.cells(run_id)}
    store.close()
    return work, db, run_id, cells, len(x_test)


def test_an_image_folder_of_the_digits_gives_the_zoo_top1(digits_sweep):
    work, db, run_id, cells, n_test = digits_sweep
    for variant in ("fp32", "int8", "pruned"):
        zoo, mine = cells[("digits_cnn", variant)], cells[("mine", variant)]
        assert zoo["status"] == mine["status"] == "ok", (zoo["reason"], mine["reason"])
        a, b = zoo["metrics"]["top1_accuracy"], mine["metrics"]["top1_accuracy"]
        if variant != "pruned":  # the same weights, calibrated on the same inputs; PNGs round pixels to 1/255
            assert abs(a - b) <= 0.005, (variant, a, b)
        else:  # fine-tuned on the same labelled digits by another schedule: recovered as well, give or take
            assert b > a - 0.03, (a, b)
        assert mine["metrics"]["eval_examples"] == n_test
        low, high = mine["metrics"]["top1_accuracy_low"], mine["metrics"]["top1_accuracy_high"]
        assert low < b < high and 0.005 < high - low < 0.1  # Wilson's 95 % on 360 examples: a few points wide
    assert cells[("mine", "int8")]["metrics"]["calibration_examples"] == 200
    assert cells[("mine", "pruned")]["metrics"]["fine_tune_examples"] == 1437
    assert cells[("mine", "pruned")]["metrics"]["sparsity"] > 0.75  # pruned while fine-tuned on the labels
    assert cells[("mine", "fp32")]["metrics"]["top1_accuracy"] > 0.9


def test_the_report_gives_intervals_and_the_examples_of_each_split(digits_sweep):
    work, db, run_id, cells, n_test = digits_sweep
    report = harness_cli("report", "--db", str(db), "--run", run_id)
    assert report.returncode == 0, report.stderr
    section = report.stdout.split("### mine")[1]
    top1 = 100 * cells[("mine", "fp32")]["metrics"]["top1_accuracy"]
    assert f"{top1:.2f} % [" in section and "top-1 [95 % CI]" in section
    assert f"Examples: eval {n_test}; calibration 200 (int8); fine-tune 1437 (pruned)." in " ".join(section.split())
    assert max(len(line) for line in report.stdout.splitlines()) <= 120


REGRESSION_MODEL = """
import sys
from harness.tfenv import import_tf
tf, keras = import_tf()
keras.utils.set_random_seed(0)
from sklearn.datasets import load_diabetes
x, y = load_diabetes(return_X_y=True)
x, y = x.astype("float32"), (y / 100.0).astype("float32")
model = keras.Sequential([keras.layers.InputLayer(input_shape=(10,)), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
model.fit(x[:342], y[:342], epochs=60, batch_size=32, verbose=0)
model.save(sys.argv[1] + "/diabetes.keras")
import numpy as np
np.savez(sys.argv[1] + "/test.npz", x=x[342:], y=y[342:])
"""
METRIC = """
import numpy as np

def r2(labels, outputs):
    residual = np.sum((labels - outputs[:, 0]) ** 2)
    return 1.0 - residual / np.sum((labels - labels.mean()) ** 2)

def broken(labels, outputs):
    raise RuntimeError("the user's bug")
"""


def test_a_regression_model_gets_mae_rmse_with_intervals_and_the_user_metric(session_cache, tmp_path):
    subprocess.run([sys.executable, "-c", REGRESSION_MODEL, str(tmp_path)], check=True, capture_output=True)
    write(tmp_path / "team_metrics.py", METRIC)
    plan = write(tmp_path / "plan.yaml", (
        "models:\n  - path: diabetes.keras\n    variants: [fp32, dynamic]\n"
        "    data: {eval: {npz: test.npz}, metric: team_metrics:r2}\n"
        "  - path: diabetes.keras\n    name: again\n    variants: [fp32]\n"
        "    data: {eval: {npz: test.npz}, metric: team_metrics:broken}\n" + LOCAL_CPU + FAST_PROTOCOL))
    db = tmp_path / "r.sqlite"
    swept = harness_cli("sweep", "--plan", str(plan), "--db", str(db), "--cache-dir", str(session_cache),
                        cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr
    run_id = swept.stdout.strip().splitlines()[-1]
    store = Store(db)
    cells = {(c["model"], c["variant"]): c for c in store.cells(run_id)}
    store.close()
    x, y = np.load(tmp_path / "test.npz")["x"], np.load(tmp_path / "test.npz")["y"]
    for variant in ("fp32", "dynamic"):
        m = cells[("diabetes", variant)]["metrics"]
        assert m["eval_examples"] == len(x) == 100
        assert m["mae_low"] < m["mae"] < m["mae_high"] and m["rmse_low"] < m["rmse"] < m["rmse_high"]
        assert m["mae"] <= m["rmse"] and 0.2 < m["mae"] < 0.8  # about 0.45 (45 disease-progression points)
        assert 0.0 < m["user_r2"] < 1.0 and "top1_accuracy" not in m
    assert cells[("diabetes", "fp32")]["metrics"]["sqnr_db"] == float("inf")  # fp32 is its own reference
    again = cells[("again", "fp32")]
    assert again["status"] == "ok" and "mae" in again["metrics"] and not any(k.startswith("user_") for k in again["metrics"])
    assert "the metric broken raised RuntimeError: the user's bug" in again["warnings_json"]
    report = harness_cli("report", "--db", str(db), "--run", run_id)
    assert "MAE [95 % CI]" in report.stdout
    mae = cells[("diabetes", "fp32")]["metrics"]["mae"]
    assert f"{mae:.4g} [" in report.stdout
    mine = report.stdout.split("### diabetes")[1].split("###")[0]
    r2 = cells[("diabetes", "dynamic")]["metrics"]["user_r2"]
    assert "| target | variant | r2 |" in mine and f"| dynamic | {r2:.4g} |" in mine


def test_data_that_does_not_fit_the_model_is_refused_before_measuring(digits_build, session_cache, tmp_path):
    digits_keras(digits_build, session_cache, tmp_path)
    np.savez(tmp_path / "wide.npz", x=np.zeros((4, 32, 32), np.float32), y=np.zeros(4, np.int64))
    np.savez(tmp_path / "labels.npz", x=np.zeros((4, 28, 28), np.float32), y=np.array([0, 3, 12, 9]))
    for data, key, words in (("{eval: {npz: wide.npz}}", "models[0].data.eval", "(32, 32)"),
                             ("{eval: {npz: labels.npz}}", "models[0].data.eval", "12"),
                             ("{calibration: {npz: wide.npz}}", "models[0].data.calibration", "(32, 32)")):
        plan = write(tmp_path / "plan.yaml", f"models:\n  - path: digits.keras\n    variants: [fp32, int8]\n"
                                             f"    data: {data}\n" + LOCAL_CPU + FAST_PROTOCOL)
        refused = harness_cli("sweep", "--plan", str(plan), "--db", str(tmp_path / "r.sqlite"), "--cache-dir",
                              str(tmp_path / "cache"), cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr
        last = refused.stderr.strip().splitlines()[-1]
        assert last.startswith(f"harness: error: {plan}: {key}: ") and words in last, last
        assert "Traceback" not in refused.stderr and not (tmp_path / "r.sqlite").exists()


def test_imagenet_weights_offline_are_refused_with_what_to_do(tmp_path):
    # no traffic leaves this machine: Keras' download goes through a proxy on a closed loopback port
    plan = write(tmp_path / "plan.yaml", "models:\n  - model: mobilenet_v2\n    weights: imagenet\n"
                                         "    variants: [fp32]\n" + LOCAL_CPU + FAST_PROTOCOL)
    env = {"KERAS_HOME": str(tmp_path / "keras"), "HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy":
           "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    refused = harness_cli("sweep", "--plan", str(plan), "--db", str(tmp_path / "r.sqlite"), "--cache-dir",
                          str(tmp_path / "cache"), cwd=tmp_path, env=env)
    assert refused.returncode == 2, refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert f"{plan}: models[0].weights: keras.applications.MobileNetV2(weights='imagenet') needs its weights" in last
    assert "copy the file into that folder" in last and not (tmp_path / "r.sqlite").exists()
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(f"file:{tmp_path / 'r.sqlite'}?mode=ro", uri=True).execute("SELECT 1")
