"""The SQLite store: a run with cells, metrics and raw samples goes in and comes back as it was."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest

from pathlib import Path

import numpy as np

from harness.errors import ConfigError
from harness.store import SCHEMA_VERSION, CellRecord, LaunchRecord, Store

SCHEMA_3 = Path(__file__).parent / "fixtures" / "store" / "schema-3.sql"


def make_run(store: Store, plan: str = "quick") -> str:
    return store.create_run(harness_version="0.1.0", git_commit="abc123", git_dirty=0, plan_name=plan,
                            plan_path=f"plans/{plan}.yaml", plan_sha256="f" * 64, inventory_path="inventory.yaml",
                            host="testhost", versions_json=json.dumps({"ai-edge-litert": "2.3.0"}), argv_json="[]")


def test_round_trip(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    run_id = make_run(store)
    store.upsert_device("0123456789abcdef-1", "0123456789abcdef", "local", "local", "SN1",
                        {"cpu_model": "Test CPU", "cores": 2})
    cell = CellRecord(device_name="local", model="digits_cnn", variant="int8", delegate="xnnpack", threads=2,
                      status="ok", device_fingerprint="0123456789abcdef", device_identity="0123456789abcdef-1",
                      artifact_sha256="a" * 64, runner_sha256="b" * 64,
                      runtime_name="ai_edge_litert", runtime_version="2.3.0", accuracy_source="device",
                      protocol_json='{"num_runs": 50}', temp_before_c=41.5, freq_after_khz=2.4e6,
                      warnings=["w1"], details={"coverage": {"nodes_delegated": 6}},
                      metrics={"latency_p50_us": 31.5, "top1_accuracy": 0.98, "sqnr_db": math.inf},
                      launches=[LaunchRecord(0, [30.0, 31.5, 33.25], seq=4, started_at="t0"),
                                LaunchRecord(1, [40.0, 41.0], seq=9, started_at="t1")])
    cell_id = store.add_cell(run_id, cell)
    store.add_cell(run_id, CellRecord(device_name="local", model="digits_cnn", variant="int16x8", delegate="cpu",
                                      threads=1, status="failed", reason="allocate failed: boom"))
    store.finish_run(run_id, "partial")
    store.close()

    store = Store(tmp_path / "r.sqlite")
    assert store.resolve_run("latest") == run_id
    assert store.resolve_run(run_id[:17]) == run_id
    run = store.run(run_id)
    assert run["status"] == "partial" and run["finished_at"] and run["schema_version"] == SCHEMA_VERSION
    assert run["git_commit"] == "abc123" and json.loads(run["versions_json"]) == {"ai-edge-litert": "2.3.0"}
    ok, failed = store.cells(run_id)
    assert ok["metrics"] == {"latency_p50_us": 31.5, "top1_accuracy": 0.98, "sqnr_db": math.inf}
    assert (ok["variant"], ok["delegate"], ok["threads"], ok["status"]) == ("int8", "xnnpack", 2, "ok")
    assert ok["temp_before_c"] == 41.5 and ok["freq_after_khz"] == 2.4e6 and ok["temp_after_c"] is None
    assert json.loads(ok["warnings_json"]) == ["w1"] and json.loads(ok["details_json"])["coverage"]["nodes_delegated"] == 6
    assert store.samples(cell_id).tolist() == [30.0, 31.5, 33.25, 40.0, 41.0]  # float32 holds these exactly
    assert [x.tolist() for x in store.launch_samples(cell_id)] == [[30.0, 31.5, 33.25], [40.0, 41.0]]
    first, second = store.launches(cell_id)
    assert (first["launch"], first["seq"], first["started_at"], first["count"]) == (0, 4, "t0", 3)
    assert (first["median_us"], second["median_us"], second["mean_us"]) == (31.5, 40.5, 40.5)
    assert ok["device_identity"] == "0123456789abcdef-1" and ok["runner_sha256"] == "b" * 64
    assert store.samples(cell_id + 1).size == 0
    assert failed["status"] == "failed" and failed["reason"] == "allocate failed: boom" and failed["metrics"] == {}
    assert [(d["name"], d["serial"]) for d in store.devices_of_run(run_id)] == [("local", "SN1")]
    assert store.devices_of_run(run_id)[0]["attributes"]["cpu_model"] == "Test CPU"
    units = dict(store.db.execute("SELECT name, unit FROM metrics WHERE cell_id = ?", (cell_id,)).fetchall())
    assert units == {"latency_p50_us": "us", "top1_accuracy": "ratio", "sqnr_db": "dB"}
    assert (store.count("cells", run_id), store.count("samples", run_id), store.count("metrics", run_id)) == (2, 5, 3)
    assert store.count("launches", run_id) == 2


def test_one_row_per_cell_and_whole_cells_only(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    run_id = make_run(store)
    cell = CellRecord(device_name="local", model="m", variant="fp32", delegate="cpu", threads=1, status="ok",
                      metrics={"latency_p50_us": 1.0}, launches=[LaunchRecord(0, [1.0])])
    store.add_cell(run_id, cell)
    with pytest.raises(sqlite3.IntegrityError):
        store.add_cell(run_id, cell)
    assert (store.count("cells"), store.count("metrics"), store.count("samples")) == (1, 1, 1)


def test_run_lookup_errors(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    with pytest.raises(ConfigError, match="no runs yet"):
        store.resolve_run("latest")
    make_run(store)
    with pytest.raises(ConfigError, match="no run 'nope'"):
        store.resolve_run("nope")
    with pytest.raises(ConfigError, match="no results store"):
        Store.open_existing(tmp_path / "absent.sqlite")


def test_schema_version_mismatch_is_refused(tmp_path):
    Store(tmp_path / "r.sqlite").close()
    db = sqlite3.connect(tmp_path / "r.sqlite")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="schema 99"):
        Store(tmp_path / "r.sqlite")


def test_a_renamed_entry_of_a_known_device_is_recognised(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    assert store.upsert_device("fp-1-serial", "fp-1", "pi-a", "ssh", "1000000012345678", {}) is None
    assert store.upsert_device("fp-1-serial", "fp-1", "pi-a", "ssh", "1000000012345678", {}) is None
    assert store.upsert_device("fp-1-serial", "fp-1", "lab-pi-3", "ssh", "1000000012345678", {}) == "pi-a"
    assert store.upsert_device("fp-1-other", "fp-1", "pi-b", "ssh", "10000000abcdef00", {}) is None
    assert store.count("devices") == 2  # two boards of one image: two rows, never merged
    runs = []
    for name in ("pi-a", "lab-pi-3"):
        runs.append(make_run(store))
        store.add_cell(runs[-1], CellRecord(device_name=name, model="m", variant="fp32", delegate="cpu", threads=1,
                                            status="ok", device_identity="fp-1-serial", device_fingerprint="fp-1"))
    from harness.report import header_lines

    old, new = store.devices_of_run(runs[0]), store.devices_of_run(runs[1])
    assert [(d["name"], d["other_names"]) for d in old] == [("pi-a", ["lab-pi-3"])]
    assert [(d["name"], d["other_names"]) for d in new] == [("lab-pi-3", ["pi-a"])]
    header = "\n".join(header_lines(store.run(runs[1]), new))
    assert "device lab-pi-3 [fp-1, serial 1000000012345678; the same device as pi-a in other runs]" in header


def _schema_3_store(path: Path, baselines: bool = True) -> None:
    """A store as harness wrote it at schema 3: one run, a local cell and a benchmark_model cell
    with their samples, one device row keyed by fingerprint."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_3.read_text())
    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", ("3" if baselines else "2",))
    if not baselines:
        db.execute("DROP TABLE baselines")
    db.execute("INSERT INTO runs (id, started_at, status, schema_version, plan_name) VALUES "
               "('20261201-010101-aaaaaa', '2026-12-01T01:01:01+0000', 'ok', 3, 'quick')")
    db.execute("INSERT INTO devices VALUES ('fp-old', 'local', 'local', '{\"cores\": 2}', '2026-12-01')")
    for cell_id, name, runtime, values in ((1, "local", "ai_edge_litert", [10.0, 11.0, 12.0]),
                                           (2, "pixel", "benchmark_model", [500.0, 510.0, 490.0])):
        db.execute("INSERT INTO cells (id, run_id, device_name, device_fingerprint, model, variant, delegate, threads, "
                   "status, runtime_name, started_at) VALUES (?, '20261201-010101-aaaaaa', ?, 'fp-old', 'm', 'fp32', "
                   "'cpu', 1, 'ok', ?, 't')", (cell_id, name, runtime))
        db.execute("INSERT INTO metrics VALUES (?, 'latency_p50_us', ?, 'us')", (cell_id, float(np.median(values))))
        db.execute("INSERT INTO samples VALUES (?, ?, ?)",
                   (cell_id, len(values), np.asarray(values, dtype="<f4").tobytes()))
    db.commit()
    db.close()


@pytest.mark.parametrize("baselines", [True, False], ids=["schema-3", "schema-2"])
def test_an_older_store_is_upgraded_in_place(tmp_path, baselines):
    path = tmp_path / "old.sqlite"
    _schema_3_store(path, baselines)
    store = Store(path)
    try:
        assert store.db.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION) == "4"
        local, pixel = store.cells("20261201-010101-aaaaaa")
        assert local["metrics"] == {"latency_p50_us": 11.0} and local["device_identity"].startswith("fp-old-n")
        assert local["device_identity"] != pixel["device_identity"]  # one fingerprint, two names: two devices
        # a runner cell was one launch; a benchmark_model cell's every sample was a run of the tool
        assert [(l["launch"], l["count"], l["median_us"]) for l in store.launches(local["id"])] == [(0, 3, 11.0)]
        assert [(l["count"], l["median_us"], l["mean_us"]) for l in store.launches(pixel["id"])] == [
            (1, None, 500.0), (1, None, 510.0), (1, None, 490.0)]
        assert store.samples(local["id"]).tolist() == [10.0, 11.0, 12.0]
        devices = store.devices_of_run("20261201-010101-aaaaaa")
        assert {d["name"] for d in devices} == {"local", "pixel"} and devices[0]["attributes"] == {"cores": 2}
        history = store.launch_history("20261201-010101-aaaaaa", 5)  # nothing before the only run
        assert history == {}
        assert store.set_baseline("release-1", "20261201-010101-aaaaaa") is None
    finally:
        store.close()
    reopened = Store(path)  # an upgraded store opens as it is
    assert reopened.count("launches") == 4
    reopened.close()
