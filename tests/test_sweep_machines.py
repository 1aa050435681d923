"""One measurement per machine at a time, and devices told apart by identity, in real sweeps:

- inventory entries that are one machine (two local entries; an SSH board on loopback) share one
  worker: their launches never overlap;
- host-side work of another machine's worker (scoring, storing) never runs while a launch is
  timed on this host;
- two SSH boards of one image (same fingerprint, their own host keys) are two devices: their own
  `devices` rows, their own cells, and a gate that never pairs one with the other."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import harness_cli, inventory_yaml, write

PROTOCOL = "protocol: {warmup_runs: 1, warmup_min_secs: 0.02, num_runs: 10, min_secs: 0.1, max_secs: 2, repetitions: 3}\n"


class Intervals:
    """(what, thread, start, end) of instrumented calls, from every thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.spans: list[tuple[str, str, float, float]] = []

    def wrap(self, monkeypatch, owner, name: str, label):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.monotonic()
            try:
                return original(*args, **kwargs)
            finally:
                with self.lock:
                    self.spans.append((label(*args), threading.current_thread().name, start, time.monotonic()))

        monkeypatch.setattr(owner, name, timed)

    def of(self, prefix: str) -> list[tuple[str, str, float, float]]:
        return [s for s in self.spans if s[0].startswith(prefix)]


def overlapping(a, b) -> list[tuple]:
    return [(x, y) for x in a for y in b if x[2] < y[3] and y[2] < x[3]]


def _sweep_in_process(tmp_path, inventory_entries, plan_text, session_cache, monkeypatch):
    """run_sweep in this process (so its calls can be timed), as `harness sweep` would run it."""
    from harness.artifacts import Cache
    from harness.config import load_inventory, load_plan
    from harness.store import Store
    from harness.sweep import run_sweep

    inventory = load_inventory(write(tmp_path / "inventory.yaml", inventory_yaml(inventory_entries)))
    plan = load_plan(write(tmp_path / "plan.yaml", plan_text), inventory)
    store = Store(tmp_path / "results.sqlite")
    messages: list[str] = []
    run_id = run_sweep(inventory, plan, plan.targets, store, Cache(session_cache), messages.append,
                       progress_stream=open(tmp_path / "progress.log", "w"))
    return store, run_id, messages


def test_entries_of_one_machine_never_measure_at_once(tmp_path, tiny_tflite, session_cache, sshd_host,
                                                      monkeypatch):
    from devices.local import LocalDevice
    from devices.ssh import SSHDevice

    spans = Intervals()
    for cls in (LocalDevice, SSHDevice):
        spans.wrap(monkeypatch, cls, "measure", lambda device, job: f"measure {device.name}")
    entries = [{"name": "local", "transport": "local", "workdir": str(tmp_path / "w1")},
               {"name": "local-2", "transport": "local", "workdir": str(tmp_path / "w2")},
               sshd_host.inventory_entry("loop-board", python=sys.executable, workdir=str(tmp_path / "w3"))]
    plan = (f"name: one-machine\nmodels:\n  - path: {tiny_tflite}\n    name: tiny\n"
            "targets:\n  - device: local\n  - device: local-2\n  - device: loop-board\n" + PROTOCOL)
    store, run_id, messages = _sweep_in_process(tmp_path, entries, plan, session_cache, monkeypatch)
    try:
        assert "local, local-2, loop-board are one machine (local): one worker measures them, one launch at a " \
               "time" in messages
        assert store.status_counts(run_id) == {"ok": 6}
        measured = spans.of("measure")
        assert len(measured) == 6 * 3 and len({s[1] for s in measured}) == 1  # one worker thread
        assert overlapping(measured, measured) == [(s, s) for s in measured]  # each overlaps only itself
    finally:
        store.close()


def test_host_side_work_never_runs_beside_a_launch_timed_here(tmp_path, digits_build, session_cache, netns_board,
                                                              monkeypatch):
    import harness.measure as measure
    from devices.local import LocalDevice
    from harness.store import Store

    spans = Intervals()
    spans.wrap(monkeypatch, LocalDevice, "measure", lambda device, job: f"timed {device.name}")
    spans.wrap(monkeypatch, measure, "record_reports", lambda record, reports, build: f"host {record.device_name}")
    spans.wrap(monkeypatch, Store, "add_cell", lambda store, run_id, record, replace=False: f"host {record.device_name}")
    entries = [{"name": "local", "transport": "local", "workdir": str(tmp_path / "w1")},
               netns_board.inventory_entry("board", python=sys.executable, workdir=str(tmp_path / "w2"))]
    plan = (f"name: host-work\nmodels:\n  - model: digits_cnn\n    variants: [fp32, int8]\n"
            "targets:\n  - device: local\n  - device: board\n" + PROTOCOL)
    store, run_id, messages = _sweep_in_process(tmp_path, entries, plan, session_cache, monkeypatch)
    try:
        assert store.status_counts(run_id) == {"ok": 8}
        timed_here = spans.of("timed local")
        board_work = spans.of("host board")
        assert len(timed_here) == 4 * 3 and len(board_work) >= 4 * 2  # scored and stored, each cell
        assert overlapping(timed_here, board_work) == []
        boards = {s[1] for s in board_work}
        assert boards.isdisjoint({s[1] for s in timed_here})  # the board's own worker did that work
    finally:
        store.close()


def test_two_boards_of_one_image_are_two_devices_never_cross_matched(tmp_path, tiny_tflite, session_cache,
                                                                      sshd_host):
    from tests.peers.sshd import start_sshd

    twin = start_sshd(tmp_path / "sshd-twin", name="twin", authorized_key=sshd_host.identity_file)
    try:
        entries = [sshd_host.inventory_entry("pi-a", python=sys.executable, workdir=str(tmp_path / "a")),
                   twin.inventory_entry("pi-b", python=sys.executable, workdir=str(tmp_path / "b"))]
        inventory = write(tmp_path / "inventory.yaml", inventory_yaml(entries))
        plan = write(tmp_path / "plan.yaml", f"name: twins\nmodels:\n  - path: {tiny_tflite}\n    name: tiny\n"
                     + PROTOCOL)
        db = tmp_path / "results.sqlite"
        common = ("--plan", str(plan), "--inventory", str(inventory), "--db", str(db), "--cache-dir",
                  str(session_cache), "-q")
        runs = []
        for _ in range(2):
            result = harness_cli("sweep", *common, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            runs.append(result.stdout.strip().splitlines()[-1])
        import sqlite3

        with sqlite3.connect(db) as con:
            devices = con.execute("SELECT name, fingerprint_id, identity FROM devices ORDER BY name").fetchall()
            cells = con.execute("SELECT DISTINCT device_name, device_identity FROM cells").fetchall()
        assert [d[0] for d in devices] == ["pi-a", "pi-b"]
        assert devices[0][1] == devices[1][1] and devices[0][2] != devices[1][2]  # one image, two boards
        assert sorted(cells) == sorted((d[0], d[2]) for d in devices)
        gated = harness_cli("gate", "--baseline", runs[0], "--candidate", runs[1], "--threshold", "0.5", "--db",
                            str(db))
        assert gated.returncode == 0, gated.stdout + gated.stderr
        rows = [line.split(" | ") for line in gated.stdout.splitlines() if line.startswith("| pi-")]
        assert len(rows) == 4 and all(r[12] != "not comparable" for r in rows)
        assert "compared 4 of the baseline's 4 measured cells (100%)" in gated.stdout
        # pi-b's cells alone against pi-a's: another identity, never compared
        with sqlite3.connect(db) as con:
            con.execute("PRAGMA foreign_keys = ON")
            con.execute("DELETE FROM cells WHERE run_id = ? AND device_name = 'pi-b'", (runs[0],))
            con.execute("DELETE FROM cells WHERE run_id = ? AND device_name = 'pi-a'", (runs[1],))
        crossed = harness_cli("gate", "--baseline", runs[0], "--candidate", runs[1], "--db", str(db))
        assert crossed.returncode == 2 and "share no comparable cell" in crossed.stderr
    finally:
        twin.stop()
