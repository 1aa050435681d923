"""The store is read while a sweep writes it: `harness report` and `harness export` in a loop, and
a read transaction left open the whole time (a notebook), never make the sweep's writes fail or
wait, and never fail themselves. And a path that is not a store is refused before it is touched."""

from __future__ import annotations

import csv
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import ROOT, harness_cli, inventory_yaml, write

PLAN = ("name: beside\nmodels:\n  - path: {model}\n    name: tiny\nthreads: [1, 2, 3]\n"
        "protocol: {{warmup_runs: 1, warmup_min_secs: 0.02, num_runs: 10, min_secs: 0.2, max_secs: 2, "
        "repetitions: 3}}\n")


def test_report_and_export_in_a_loop_beside_a_sweep_lose_nothing(tmp_path, tiny_tflite, session_cache):
    from harness.store import Store

    db = tmp_path / "results.sqlite"
    store = Store(db)
    assert store.journal_mode == "wal"
    store.close()
    inventory = write(tmp_path / "inventory.yaml", inventory_yaml(
        [{"name": "local", "transport": "local", "workdir": str(tmp_path / "w")}]))
    plan = write(tmp_path / "plan.yaml", PLAN.format(model=tiny_tflite))
    notebook = sqlite3.connect(db, timeout=0)  # a reader that never lets go
    notebook.execute("BEGIN")
    assert notebook.execute("SELECT count(*) FROM cells").fetchone() == (0,)
    sweep = subprocess.Popen([sys.executable, "-m", "harness", "sweep", "--plan", str(plan), "--inventory",
                              str(inventory), "--db", str(db), "--cache-dir", str(session_cache), "-q"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
    reads = []
    try:
        while sweep.poll() is None:
            with sqlite3.connect(db) as peek:
                started = peek.execute("SELECT count(*) FROM runs").fetchone()[0]
            if not started:
                time.sleep(0.2)
                continue
            report = harness_cli("report", "--run", "latest", "--db", str(db), cwd=tmp_path)
            exported = harness_cli("export", "--format", "csv", "--run", "all", "--out", str(tmp_path / "e.csv"),
                                   "--db", str(db), cwd=tmp_path)
            assert report.returncode == 0, report.stderr
            assert exported.returncode == 0, exported.stderr
            reads.append(len(list(csv.DictReader(open(tmp_path / "e.csv")))))
        out, err = sweep.communicate(timeout=60)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        notebook.rollback()
        notebook.close()
    assert sweep.returncode == 0, err
    run_id = out.strip().splitlines()[-1]
    assert len(reads) >= 2 and reads == sorted(reads)  # the readers saw the sweep grow, never shrink
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()[0] == "ok"
        assert con.execute("SELECT status, count(*) FROM cells GROUP BY status").fetchall() == [("ok", 6)]
        assert con.execute("SELECT count(*) FROM launches").fetchone()[0] == 6 * 3
    final = harness_cli("export", "--format", "csv", "--run", "all", "--out", str(tmp_path / "final.csv"),
                        "--db", str(db), cwd=tmp_path)
    assert final.returncode == 0 and len(list(csv.DictReader(open(tmp_path / "final.csv")))) >= reads[-1]


def _sqlite_of_someone_else(path):
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
        con.execute("INSERT INTO contacts VALUES ('Ada', '555-0100')")


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("model,latency\nnet,1.0\n"),
     "not a results store: the file is not an SQLite database; refusing to write into it"),
    (_sqlite_of_someone_else, "an SQLite database that is not a results store (its tables: contacts); refusing to "
                              "write into it"),
    (lambda p: p.mkdir(), "a directory, not a results store (--db takes a file path)"),
])
@pytest.mark.parametrize("command", ["report", "sweep"])
def test_a_path_that_is_not_a_store_is_refused_and_left_as_it_was(tmp_path, make, message, command):
    db = tmp_path / "results.sqlite"
    make(db)
    before = sorted((p.name, p.stat().st_size if p.is_file() else None, p.is_file() and p.read_bytes())
                    for p in [db, *tmp_path.rglob("*")])
    args = ("--plan", str(ROOT / "plans" / "quick.yaml")) if command == "sweep" else ()
    result = harness_cli(command, *args, "--db", str(db), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr == f"harness: error: {db}: {message}\n"
    after = sorted((p.name, p.stat().st_size if p.is_file() else None, p.is_file() and p.read_bytes())
                   for p in [db, *tmp_path.rglob("*")])
    assert after == before  # nothing written beside it (no -wal, no -journal), nothing in it
