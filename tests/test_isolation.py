"""One bad cell never stops a sweep: an exception in any step of one cell (preparing it, its
runner's report parser, reading its launches' reports, storing it) becomes that cell's failed row
naming the exception, with the traceback in the log, and every other cell is measured. Only a
failure of the coordinator itself (a store that cannot be written) ends the run, as `interrupted`,
and `--resume` finishes it. A timeout quarantines a device only when a health probe then finds the
device, not the model, at fault."""

from __future__ import annotations

import sqlite3
import sys

import pytest

from conftest import inventory_yaml, write

PROTOCOL = "protocol: {warmup_runs: 1, warmup_min_secs: 0.02, num_runs: 10, min_secs: 0.1, max_secs: 2, repetitions: 2}\n"


def _sweep(tmp_path, entries, plan_text, session_cache, resume=None, store=None):
    """run_sweep in this process, as `harness sweep` runs it; (store, run id, log lines)."""
    from harness.artifacts import Cache
    from harness.config import load_inventory, load_plan
    from harness.store import Store
    from harness.sweep import run_sweep

    inventory = load_inventory(write(tmp_path / "inventory.yaml", inventory_yaml(entries)))
    plan = load_plan(write(tmp_path / "plan.yaml", plan_text), inventory)
    store = store or Store(tmp_path / "results.sqlite")
    log: list[str] = []
    with open(tmp_path / "progress.log", "a") as progress:
        run_id = run_sweep(inventory, plan, plan.targets, store, Cache(session_cache), log.append,
                           progress_stream=progress, resume=resume)
    return store, run_id, log


def _by_cell(store, run_id) -> dict[tuple[str, str, int], dict]:
    return {(c["device_name"], c["delegate"], c["threads"]): c for c in store.cells(run_id)}


def test_an_exception_in_any_step_of_one_cell_fails_that_cell_only(tmp_path, tiny_tflite, session_cache, netns_board,
                                                                   monkeypatch):
    """Two machines (this host, and a board in a network namespace), four cells each. Four cells
    raise, one in each step; the other four are measured, on both machines."""
    import devices.base as base
    import harness.measure as measure
    from harness.store import Store

    def on(record_or_argv, device, delegate, threads) -> bool:
        if isinstance(record_or_argv, tuple):  # a runner's argv: the device by its workdir
            text = " ".join(record_or_argv)
            return f"/w-{device}/" in text and f"--delegate={delegate}" in text and f"--num_threads={threads}" in text
        return (record_or_argv.device_name, record_or_argv.delegate, record_or_argv.threads) == (device, delegate,
                                                                                               threads)

    parse = base.parse_runner_json

    def parser_with_a_bug(result):  # the runner's report parser, on one cell's launches
        if on(tuple(map(str, result.argv)), "local", "xnnpack", 2) and "--probe" not in result.argv:
            raise KeyError("samples_us")
        return parse(result)

    prepare = measure.MachineWorker._prepare

    def prepare_with_a_bug(worker, cell):
        if (cell.device, cell.delegate, cell.threads) == ("local", "cpu", 2):
            raise AttributeError("'NoneType' object has no attribute 'sha256'")
        return prepare(worker, cell)

    read = measure.record_reports

    def reader_with_a_bug(record, reports, build):
        if on(record, "board", "cpu", 1):
            raise ZeroDivisionError("float division by zero")
        return read(record, reports, build)

    add_cell = Store.add_cell
    refused = []

    def store_with_a_bug(store, run_id, record, replace=False):  # a value SQLite or json cannot hold, once
        if on(record, "board", "xnnpack", 2) and not refused:
            refused.append(record.status)
            raise TypeError("Object of type float32 is not JSON serializable")
        return add_cell(store, run_id, record, replace)

    monkeypatch.setattr(base, "parse_runner_json", parser_with_a_bug)
    monkeypatch.setattr(measure.MachineWorker, "_prepare", prepare_with_a_bug)
    monkeypatch.setattr(measure, "record_reports", reader_with_a_bug)
    monkeypatch.setattr(Store, "add_cell", store_with_a_bug)
    entries = [{"name": "local", "transport": "local", "workdir": str(tmp_path / "w-local")},
               netns_board.inventory_entry("board", python=sys.executable, workdir=str(tmp_path / "w-board"))]
    plan = (f"name: isolation\nmodels:\n  - path: {tiny_tflite}\n    name: tiny\nthreads: [1, 2]\n"
            "targets:\n  - device: local\n  - device: board\n" + PROTOCOL)
    store, run_id, log = _sweep(tmp_path, entries, plan, session_cache)
    try:
        cells = _by_cell(store, run_id)
        assert len(cells) == 8 and store.run(run_id)["status"] == "partial"
        failed = {key: c["reason"] for key, c in cells.items() if c["status"] == "failed"}
        assert failed == {
            ("local", "xnnpack", 2): "launch 1 raised KeyError: 'samples_us'",
            ("local", "cpu", 2): "preparing raised AttributeError: 'NoneType' object has no attribute 'sha256'",
            ("board", "cpu", 1): "reading the launches' reports raised ZeroDivisionError: float division by zero",
            ("board", "xnnpack", 2): "storing the cell raised TypeError: Object of type float32 is not JSON "
                                     "serializable"}
        ok = [key for key, c in cells.items() if c["status"] == "ok"]
        assert sorted(ok) == [("board", "cpu", 2), ("board", "xnnpack", 1), ("local", "cpu", 1),
                              ("local", "xnnpack", 1)]
        assert all(cells[key]["metrics"]["latency_p50_us"] > 0 for key in ok)
        assert refused == ["ok"]  # the measured cell the store refused is a failed row now, without its numbers
        assert "latency_p50_us" not in cells[("board", "xnnpack", 2)]["metrics"]
        assert "latency_p50_us" not in cells[("board", "cpu", 1)]["metrics"]
        assert store.count("launches", run_id) == 4 * 2  # only the ok cells' launches
        tracebacks = [line for line in log if "Traceback (most recent call last)" in line]
        assert len(tracebacks) == 4 and any("KeyError: 'samples_us'" in t for t in tracebacks)
    finally:
        store.close()


def test_a_store_that_cannot_be_written_interrupts_the_run_and_resume_finishes_it(tmp_path, tiny_tflite,
                                                                                  session_cache, monkeypatch):
    from harness.errors import SweepInterrupted
    from harness.store import Store

    add_cell = Store.add_cell
    full = {"on": True}

    def disk_full(store, run_id, record, replace=False):
        if full["on"] and record.threads == 2:
            raise sqlite3.OperationalError("database or disk is full")
        return add_cell(store, run_id, record, replace)

    monkeypatch.setattr(Store, "add_cell", disk_full)
    entries = [{"name": "local", "transport": "local", "workdir": str(tmp_path / "w-local")}]
    plan = (f"name: full\nmodels:\n  - path: {tiny_tflite}\n    name: tiny\nthreads: [1, 2]\n"
            "targets:\n  - device: local\n    delegates: [xnnpack]\n" + PROTOCOL)
    store = Store(tmp_path / "results.sqlite")
    try:
        with pytest.raises(SweepInterrupted) as raised:
            _sweep(tmp_path, entries, plan, session_cache, store=store)
        run_id = store.resolve_run("latest")
        assert str(raised.value) == (f"run {run_id} interrupted by OperationalError: database or disk is full; its "
                                     f"finished cells are stored, and `harness sweep --resume {run_id}` measures "
                                     "the rest")
        assert store.run(run_id)["status"] == "interrupted"
        assert {c["threads"] for c in store.cells(run_id)} <= {1}  # never a half-written cell
        full["on"] = False
        _, resumed, _ = _sweep(tmp_path, entries, plan, session_cache, resume=run_id, store=store)
        assert resumed == run_id and store.run(run_id)["status"] == "ok"
        assert store.status_counts(run_id) == {"ok": 2}
    finally:
        store.close()


def _slow_sweep(tmp_path, tiny_tflite, session_cache):
    """Three cells whose every launch runs past the device's 1 s timeout; quarantine after two faults."""
    entries = [{"name": "local", "transport": "local", "workdir": str(tmp_path / "w-local"), "run_timeout_s": 1}]
    plan = (f"name: slow\nmodels:\n  - path: {tiny_tflite}\n    name: tiny\nthreads: [1, 2, 3]\nquarantine_after: 2\n"
            "targets:\n  - device: local\n    delegates: [xnnpack]\n"
            "protocol: {warmup_runs: 1, warmup_min_secs: 0.0, num_runs: 10, min_secs: 5, max_secs: 10, "
            "repetitions: 2}\n")
    return _sweep(tmp_path, entries, plan, session_cache)


def test_timeouts_on_a_healthy_device_are_the_models_not_a_quarantine(tmp_path, tiny_tflite, session_cache):
    """Every launch runs longer than the device's 1 s timeout; the runner's health probe answers
    after each. Three slow cells in a row, with quarantine after two device faults: none is a
    fault, so the device is never quarantined."""
    store, run_id, _ = _slow_sweep(tmp_path, tiny_tflite, session_cache)
    try:
        reasons = [c["reason"] for c in store.cells(run_id)]
        assert len(reasons) == 3 and all(c["status"] == "failed" for c in store.cells(run_id))
        assert all("ran past its 1 s timeout" in r for r in reasons), reasons
        assert all("the device answered a health probe right after, so the model was too slow, not the device: not "
                   "counted toward quarantine" in r for r in reasons)
        assert not any("quarantined" in r for r in reasons)
    finally:
        store.close()


def test_timeouts_on_a_device_that_then_fails_its_probe_quarantine_it(tmp_path, tiny_tflite, session_cache,
                                                                      monkeypatch):
    from devices.base import Health
    from devices.local import LocalDevice

    monkeypatch.setattr(LocalDevice, "health", lambda device: Health(reachable=False, detail="no answer in 60 s"))
    store, run_id, _ = _slow_sweep(tmp_path, tiny_tflite, session_cache)
    try:
        reasons = sorted(c["reason"] for c in store.cells(run_id))
        assert len(reasons) == 3
        timed_out = [r for r in reasons if "ran past its 1 s timeout; then the device failed a health probe: no "
                                           "answer in 60 s" in r]
        assert len(timed_out) == 3  # two faults, then the quarantine names the last
        assert sum("quarantined after 2 consecutive device failures" in r for r in reasons) == 1
    finally:
        store.close()
