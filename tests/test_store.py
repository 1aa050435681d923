"""The SQLite store: a run with cells, metrics and raw samples goes in and comes back as it was."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest

from harness.errors import ConfigError
from harness.store import SCHEMA_VERSION, CellRecord, Store


def make_run(store: Store, plan: str = "quick") -> str:
    return store.create_run(harness_version="0.1.0", git_commit="abc123", git_dirty=0, plan_name=plan,
                            plan_path=f"plans/{plan}.yaml", plan_sha256="f" * 64, inventory_path="inventory.yaml",
                            host="testhost", versions_json=json.dumps({"ai-edge-litert": "2.3.0"}), argv_json="[]")


def test_round_trip(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    run_id = make_run(store)
    store.upsert_device("0123456789abcdef", "local", "local", {"cpu_model": "Test CPU", "cores": 2})
    cell = CellRecord(device_name="local", model="digits_cnn", variant="int8", delegate="xnnpack", threads=2,
                      status="ok", device_fingerprint="0123456789abcdef", artifact_sha256="a" * 64,
                      runtime_name="ai_edge_litert", runtime_version="2.3.0", accuracy_source="device",
                      protocol_json='{"num_runs": 50}', temp_before_c=41.5, freq_after_khz=2.4e6,
                      warnings=["w1"], details={"coverage": {"nodes_delegated": 6}},
                      metrics={"latency_p50_us": 31.5, "top1_accuracy": 0.98, "sqnr_db": math.inf},
                      samples_us=[30.0, 31.5, 33.25])
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
    assert store.samples(cell_id).tolist() == [30.0, 31.5, 33.25]  # float32 holds these exactly
    assert store.samples(cell_id + 1).size == 0
    assert failed["status"] == "failed" and failed["reason"] == "allocate failed: boom" and failed["metrics"] == {}
    assert [d["name"] for d in store.devices_of_run(run_id)] == ["local"]
    assert store.devices_of_run(run_id)[0]["attributes"]["cpu_model"] == "Test CPU"
    units = dict(store.db.execute("SELECT name, unit FROM metrics WHERE cell_id = ?", (cell_id,)).fetchall())
    assert units == {"latency_p50_us": "us", "top1_accuracy": "ratio", "sqnr_db": "dB"}
    assert (store.count("cells", run_id), store.count("samples", run_id), store.count("metrics", run_id)) == (2, 3, 3)


def test_one_row_per_cell_and_whole_cells_only(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    run_id = make_run(store)
    cell = CellRecord(device_name="local", model="m", variant="fp32", delegate="cpu", threads=1, status="ok",
                      metrics={"latency_p50_us": 1.0}, samples_us=[1.0])
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
