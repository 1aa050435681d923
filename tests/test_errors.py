"""Every row of docs/errors.md, run as a user would: the command on the row's input gives the row's
message on stderr (no traceback), its exit code, and leaves the directory as it was (or as the row
says). The rows are read from the document itself, so the table and the harness cannot drift
apart: a row without a case here, or a case without a row, fails.

`python tests/test_errors.py` prints what each case gives today (for writing a new row)."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ROOT, harness_cli, inventory_yaml, write  # noqa: E402

DOC = ROOT / "docs" / "errors.md"
DB = "results.sqlite"
TINY_PLAN = "name: p\nmodels:\n  - path: model.tflite\n"
LOCAL = [{"name": "local", "transport": "local", "delegates": ["cpu"]}]


def _tflite(tmp: Path) -> None:
    """A real .tflite (a sweep verifies the model's FlatBuffer before anything else it does)."""
    _real_tflite(tmp)


def _arrays(path: Path, shape: tuple[int, ...], labels: list[int] | None = None) -> None:
    import numpy as np

    arrays = {"x": np.zeros(shape, np.float32), **({"y": np.array(labels)} if labels is not None else {})}
    with open(path, "wb") as f:
        np.savez(f, **arrays)


REAL_TFLITE: list[bytes] = []
TINY_CLASSIFIER = """
import sys
from harness.tfenv import import_tf
tf, keras = import_tf()
model = keras.Sequential([keras.layers.InputLayer(input_shape=(8,)), keras.layers.Dense(3, activation="softmax")])
sys.stdout.buffer.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
"""


def _real_tflite(tmp: Path) -> None:
    """A real .tflite (8 inputs, 3 classes) as model.tflite, converted once per session."""
    if not REAL_TFLITE:
        REAL_TFLITE.append(subprocess.run([sys.executable, "-c", TINY_CLASSIFIER], capture_output=True, check=True,
                                          cwd=ROOT).stdout)
    (tmp / "model.tflite").write_bytes(REAL_TFLITE[0])


def _cut_tflite(tmp: Path) -> None:
    """model.tflite, a real model cut in half: the TFL3 identifier is there, the FlatBuffer is not whole."""
    _real_tflite(tmp)
    (tmp / "model.tflite").write_bytes(REAL_TFLITE[0][:len(REAL_TFLITE[0]) // 2])


def _zip(path: Path, members: dict[str, bytes]) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _store(tmp: Path, name: str = "results.sqlite") -> None:
    from harness.store import Store

    Store(tmp / name).close()


def _newer_store(tmp: Path) -> None:
    _store(tmp)
    with closing(sqlite3.connect(tmp / "results.sqlite")) as con, con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")


def _foreign_sqlite(tmp: Path) -> None:
    with closing(sqlite3.connect(tmp / "results.sqlite")) as con, con:
        con.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")


def _without(*modules: str):
    """A setup giving a Python that cannot import `modules`: a meta path finder that refuses them,
    installed by sitecustomize for this command and the processes it starts."""
    def setup(tmp: Path) -> dict:
        site = tmp.parent / f"{tmp.name}-site"
        site.mkdir()
        write(site / "sitecustomize.py", (
            "import sys\n"
            "class Refuse:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {modules!r}:\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Refuse())\n"))
        return {"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return setup


def _on_lab_host(tmp: Path, host: str = "lab-a") -> None:
    write(tmp / "lab.yaml", inventory_yaml([{**LOCAL[0], "lab_host": host}]))


@contextmanager
def _mounted(tmp: Path, options: str, fill: bool = False):
    """A tmpfs at tmp/mnt (root only): read-only, or tiny and full."""
    mnt = tmp.parent / f"{tmp.name}-mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        if fill:
            try:
                with open(mnt / "filler", "wb") as f:
                    while True:
                        f.write(bytes(4096))
                        f.flush()
            except OSError:  # no space left: full
                pass
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        mnt.rmdir()


# Each case: (setup(tmp) -> extra env or None, the command's arguments). Setup runs in an empty
# directory that is the command's working directory; what setup made is the "before" the row compares with.
CASES = {
    "plan-missing": (None, ["sweep", "--plan", "nope.yaml"]),
    "plan-directory": (lambda t: (t / "plans").mkdir(), ["sweep", "--plan", "plans"]),
    "plan-malformed": (lambda t: write(t / "p.yaml", "models: [digits_cnn\n"), ["sweep", "--plan", "p.yaml"]),
    "plan-empty": (lambda t: write(t / "p.yaml", ""), ["sweep", "--plan", "p.yaml"]),
    "plan-unknown-key": (lambda t: write(t / "p.yaml", "modles:\n  - model: digits_cnn\n"),
                         ["sweep", "--plan", "p.yaml"]),
    "plan-unknown-model": (lambda t: write(t / "p.yaml", "models:\n  - model: resnet9000\n"),
                           ["sweep", "--plan", "p.yaml"]),
    "plan-unknown-variant": (lambda t: write(t / "p.yaml", "models:\n  - model: digits_cnn\n    variants: [fp32, int4]\n"),
                             ["sweep", "--plan", "p.yaml"]),
    "plan-repeated-variant": (lambda t: write(t / "p.yaml", "models:\n  - model: digits_cnn\n    variants: [fp32, int8, fp32]\n"),
                              ["sweep", "--plan", "p.yaml"]),
    "plan-repeated-threads": (lambda t: write(t / "p.yaml", "models:\n  - model: digits_cnn\nthreads: [1, 2, 1]\n"),
                              ["sweep", "--plan", "p.yaml"]),
    "plan-wrong-type": (lambda t: write(t / "p.yaml", "models:\n  - model: digits_cnn\nthreads: two\n"),
                        ["sweep", "--plan", "p.yaml"]),
    "plan-huge-number": (lambda t: write(t / "p.yaml", "models:\n  - model: digits_cnn\nthreads: [100000000000000000000]\n"),
                         ["sweep", "--plan", "p.yaml"]),
    "plan-model-path-missing": (lambda t: write(t / "p.yaml", "models:\n  - path: net.keras\n"),
                                ["sweep", "--plan", "p.yaml"]),
    "plan-tflite-not-a-model": (lambda t: (write(t / "net.tflite", "not a model"),
                                           write(t / "p.yaml", "models:\n  - path: net.tflite\n")),
                                ["sweep", "--plan", "p.yaml"]),
    "plan-keras-not-a-model": (lambda t: (write(t / "net.keras", "not a model"),
                                          write(t / "p.yaml", "models:\n  - path: net.keras\n")),
                               ["sweep", "--plan", "p.yaml"]),
    "plan-tflite-corrupt": (lambda t: (_cut_tflite(t), write(t / "p.yaml", "models:\n  - path: model.tflite\n")),
                            ["sweep", "--plan", "p.yaml"]),
    "plan-keras-no-config": (lambda t: (_zip(t / "net.keras", {"readme.txt": b"hi\n"}),
                                        write(t / "p.yaml", "models:\n  - path: net.keras\n")),
                             ["sweep", "--plan", "p.yaml"]),
    "plan-saved-model-junk": (lambda t: ((t / "sm").mkdir(), write(t / "sm" / "saved_model.pb", "junk\n"),
                                         write(t / "p.yaml", "models:\n  - path: sm\n")),
                              ["sweep", "--plan", "p.yaml"]),
    "plan-unknown-device": (lambda t: write(t / "p.yaml", "models:\n  - model: digits_cnn\ntargets:\n  - device: pixel9\n"),
                            ["sweep", "--plan", "p.yaml"]),
    "plan-data-missing": (lambda t: write(t / "p.yaml", "models:\n  - model: digits_cnn\n    data: {eval: images/}\n"),
                          ["sweep", "--plan", "p.yaml"]),
    "plan-data-unknown-key": (lambda t: write(t / "p.yaml", "models:\n  - model: digits_cnn\n    data: {evaluation: e.npz}\n"),
                              ["sweep", "--plan", "p.yaml"]),
    "plan-data-tflite-calibration": (lambda t: (_arrays(t / "c.npz", (4, 8)), write(
        t / "p.yaml", "models:\n  - path: model.tflite\n    data: {calibration: c.npz}\n")), ["sweep", "--plan", "p.yaml"]),
    "plan-data-metric": (lambda t: (_arrays(t / "e.npz", (4, 8), [0, 1, 2, 1]), write(
        t / "p.yaml", "models:\n  - model: digits_cnn\n    data: {eval: e.npz, metric: team_metrics:f1}\n")),
        ["sweep", "--plan", "p.yaml"]),
    "plan-data-not-npy": (lambda t: (_zip(t / "e.npz", {"x.npy": b"hello", "y.npy": b"hello"}), write(
        t / "p.yaml", "models:\n  - model: digits_cnn\n    data: {eval: e.npz}\n")), ["sweep", "--plan", "p.yaml"]),
    "plan-data-metric-exit": (lambda t: (_arrays(t / "e.npz", (4, 28, 28), [0, 1, 2, 1]),
                                         write(t / "team_metrics.py", "raise SystemExit(3)\n"), write(
        t / "p.yaml", "models:\n  - model: digits_cnn\n    data: {eval: e.npz, metric: team_metrics:f1}\n")),
        ["sweep", "--plan", "p.yaml"]),
    "plan-data-before-training": (lambda t: (_arrays(t / "e.npz", (4, 28, 28), [0, 1, 2, 1]), write(
        t / "p.yaml", "models:\n  - model: digits_cnn\n    data: {eval: e.npz, top_k: 11}\n")),
        ["sweep", "--plan", "p.yaml", "--cache-dir", "cache"]),
    "plan-data-shape": (lambda t: (_real_tflite(t), _arrays(t / "e.npz", (4, 28, 28), [0, 1, 2, 1]), write(
        t / "p.yaml", "models:\n  - path: model.tflite\n    data: {eval: e.npz}\n")), ["sweep", "--plan", "p.yaml"]),
    "plan-data-label-range": (lambda t: (_real_tflite(t), _arrays(t / "e.npz", (4, 8), [0, 1, 7, 1]), write(
        t / "p.yaml", "models:\n  - path: model.tflite\n    data: {eval: e.npz}\n")), ["sweep", "--plan", "p.yaml"]),
    "plan-weights": (lambda t: write(t / "p.yaml", "models:\n  - model: digits_cnn\n    weights: imagenet\n"),
                     ["sweep", "--plan", "p.yaml"]),
    "inventory-missing": (None, ["sweep", "--inventory", "lab.yaml"]),
    "inventory-unknown-transport": (lambda t: write(t / "lab.yaml", "devices:\n  - name: pi\n    transport: telnet\n"),
                                    ["sweep", "--inventory", "lab.yaml"]),
    "inventory-ssh-without-host": (lambda t: write(t / "lab.yaml", "devices:\n  - name: pi\n    transport: ssh\n"),
                                   ["sweep", "--inventory", "lab.yaml"]),
    "inventory-repeated-name": (lambda t: write(t / "lab.yaml", inventory_yaml(LOCAL + LOCAL)),
                                ["sweep", "--inventory", "lab.yaml"]),
    "inventory-unknown-delegate": (lambda t: write(t / "lab.yaml", "devices:\n  - name: local\n    transport: local\n"
                                                                   "    delegates: [cpu, tpu]\n"),
                                   ["sweep", "--inventory", "lab.yaml"]),
    "option-unknown-device": (None, ["sweep", "--devices", "pixel9"]),
    "option-unknown-run": (_store, ["report", "--run", "nope"]),
    "option-unknown-format": (None, ["report", "--format", "pdf"]),
    "option-resume-unknown-run": (_store, ["sweep", "--resume", "nope"]),
    "option-unknown-baseline": (_store, ["gate", "--baseline", "nightly"]),
    "option-negative-threshold": (_store, ["gate", "--baseline", "x", "--threshold", "-0.05"]),
    "option-confirm-pairs": (_store, ["gate", "--baseline", "x", "--confirm", "--confirm-pairs", "50"]),
    "store-missing": (None, ["report"]),
    "store-not-sqlite": (lambda t: write(t / "results.sqlite", "model,latency\n"), ["report"]),
    "store-foreign-sqlite": (_foreign_sqlite, ["sweep", "--plan", "p.yaml"]),
    "store-directory": (lambda t: (t / "results.sqlite").mkdir(), ["report"]),
    "store-newer-schema": (_newer_store, ["report"]),
    "cache-is-a-file": (lambda t: write(t / "cache", ""), ["sweep", "--plan", "p.yaml", "--cache-dir", "cache"]),
    "cache-folder-is-a-file": (lambda t: write(t / "cache" / "artifacts", ""),
                               ["sweep", "--plan", "p.yaml", "--cache-dir", "cache"]),
    "env-no-tensorflow": (_without("tensorflow", "tf_keras"), ["sweep", "--cache-dir", "empty-cache"]),
    "inventory-lab-host": (lambda t: _on_lab_host(t, "lab a"), ["sweep", "--inventory", "lab.yaml"]),
    "option-lab-without-cluster": (_on_lab_host, ["sweep", "--plan", "p.yaml", "--inventory", "lab.yaml"]),
    "option-cluster-public": (_on_lab_host, ["sweep", "--plan", "p.yaml", "--inventory", "lab.yaml",
                                             "--cluster", "8.8.8.8:6379"]),
    "option-cluster-malformed": (None, ["sweep", "--plan", "p.yaml", "--cluster", "ray://"]),
    "env-no-ray": (lambda t: (_on_lab_host(t), _without("ray")(t))[1],
                   ["sweep", "--plan", "p.yaml", "--inventory", "lab.yaml", "--cluster", "127.0.0.1:6379"]),
}
HELD: list = []  # device locks a case's setup holds while its command runs


def _locked(tmp: Path) -> dict:
    """Another sweep holds this host's device lock (the same lock directory as the command's)."""
    from devices.local import LocalConfig
    from harness.lock import DeviceLocks

    locks = tmp.parent / f"{tmp.name}-locks"
    held = DeviceLocks([LocalConfig(name="local")], directory=locks)
    held.acquire({"plan": "nightly"})
    HELD.append(held)
    return {"HARNESS_LOCK_DIR": str(locks)}


CASES["env-second-sweep-same-device"] = (_locked, ["sweep", "--plan", "p.yaml"])


def _finished_run(tmp: Path) -> None:
    """A store holding run 20260301-221500-3fa9c2: finished ok, one ok cell with a latency."""
    from harness.store import CellRecord, Store

    store = Store(tmp / DB)
    run = store.create_run(plan_name="p")
    store.db.execute("UPDATE runs SET id = '20260301-221500-3fa9c2' WHERE id = ?", (run,))
    store.db.commit()
    store.add_cell("20260301-221500-3fa9c2", CellRecord(device_name="local", model="net", variant="fp32",
                                                        delegate="cpu", threads=1, status="ok",
                                                        metrics={"latency_p50_us": 100.0}))
    store.finish_run("20260301-221500-3fa9c2", "ok")
    store.close()


CASES.update({
    "plan-key-twice": (lambda t: write(t / "p.yaml", "models:\n  - path: model.tflite\n    variants: [fp32]\n"
                                                     "    variants: [int8]\n"), ["sweep", "--plan", "p.yaml"]),
    "plan-protocol-max-below-min": (lambda t: write(t / "p.yaml", TINY_PLAN + "protocol: {min_secs: 5, max_secs: 1}\n"),
                                    ["sweep", "--plan", "p.yaml"]),
    "option-devices-empty": (None, ["sweep", "--plan", "p.yaml", "--devices", ","]),
    "option-devices-repeated": (None, ["sweep", "--plan", "p.yaml", "--devices", "local,local"]),
    "option-lock-wait-negative": (None, ["sweep", "--plan", "p.yaml", "--lock-wait", "-5"]),
    "option-html-is-the-plan": (None, ["sweep", "--plan", "p.yaml", "--html", "p.yaml"]),
    "option-html-is-the-new-store": (None, ["sweep", "--plan", "p.yaml", "--html", DB]),
    "option-html-directory": (lambda t: (t / "reports").mkdir(), ["sweep", "--plan", "p.yaml", "--html", "reports"]),
    "option-out-is-the-store": (_finished_run, ["report", "--out", DB]),
    "option-resume-finished-run": (_finished_run, ["sweep", "--plan", "p.yaml", "--resume", "20260301"]),
    "option-history-unknown-metric": (_finished_run, ["history", "--model", "net", "--device", "local",
                                                      "--metric", "latency_p51_us", "--plot", "h.png"]),
    "option-baseline-tag-like-a-run": (_finished_run, ["baseline", "set", "latest", "--tag", "20260301"]),
    "option-baseline-tag-malformed": (None, ["baseline", "set", "latest", "--tag", "release 1.4"]),
    "option-lab-host-every-interface": (_on_lab_host, ["lab-host", "start", "--name", "lab-a", "--head",
                                                       "--node-ip-address", "0.0.0.0", "--inventory", "lab.yaml",
                                                       "--dry-run"]),
    "store-empty-file": (lambda t: write(t / DB, ""), ["report"]),
})
# these write the store into a place set up by a context (a mount), not into the working directory
MOUNTED = {
    "env-read-only-results": ("ro,size=1m", False),
    "env-disk-full": ("size=64k", True),
}


def doc_rows() -> dict[str, dict[str, str]]:
    """docs/errors.md's table rows: id -> {input, message, exit, left}."""
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| `([a-z0-9-]+)` \| (.*) \| `(.*)` \| (\d+) \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = {"input": m.group(2), "message": m.group(3).replace("\\|", "|"),
                                "exit": int(m.group(4)), "left": m.group(5)}
    return rows


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def run_case(case: str, tmp: Path) -> tuple[subprocess.CompletedProcess, dict, dict]:
    """(the command's result, the directory before, after)."""
    _tflite(tmp)
    write(tmp / "p.yaml", TINY_PLAN)
    if case in MOUNTED:
        options, fill = MOUNTED[case]
        with _mounted(tmp, options, fill) as mnt:
            before = snapshot(mnt)
            result = harness_cli("sweep", "--plan", "p.yaml", "--db", str(mnt / DB), "--cache-dir", "cache", cwd=tmp)
            result.stderr = result.stderr.replace(str(mnt), "<mount>")
            return result, before, snapshot(mnt)
    setup, args = CASES[case]
    env = setup(tmp) if setup else None
    env = env if isinstance(env, dict) else None
    before = snapshot(tmp)
    if "--db" not in args and args[0] != "lab-host":  # lab-host start has no store
        args = [*args, "--db", DB]
    try:
        result = harness_cli(*args, cwd=tmp, env={**os.environ, **env} if env else None, timeout=300)
    finally:
        while HELD:
            HELD.pop().release()
    return result, before, snapshot(tmp)


def test_every_row_has_a_case_and_every_case_a_row():
    assert sorted(doc_rows()) == sorted([*CASES, *MOUNTED])


@pytest.mark.parametrize("case", sorted([*CASES, *MOUNTED]))
def test_the_row_holds(case, tmp_path):
    row = doc_rows()[case]
    result, before, after = run_case(case, tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == row["exit"], result.stderr
    assert row["message"] in result.stderr.splitlines()[-1], result.stderr  # one message, the last line
    if row["left"] == "nothing":
        assert after == before
    else:
        raise AssertionError(f"{case}: the test knows only rows that leave nothing: {row['left']}")


if __name__ == "__main__":
    import tempfile

    for name in sorted([*CASES, *MOUNTED]):
        with tempfile.TemporaryDirectory() as d:
            got, b, a = run_case(name, Path(d))
            print(f"{name}\t{got.returncode}\t{'same' if a == b else 'CHANGED'}\t{got.stderr.strip().splitlines()[-1:]}")
