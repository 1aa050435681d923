"""The results store: SQLite, tidy rows, provenance on every run, raw samples for the gate.

Each cell is written in one transaction with its metrics and samples, so an interrupted sweep
leaves whole cells or none. Units live in metric names (`latency_p50_us`) and in `metrics.unit`.

Every timed sample is kept, one row per cell: `samples.latency_us` is a BLOB of little-endian
float32 microseconds in run order (`numpy.frombuffer(blob, "<f4")`). A 20 us model measured for
a second gives ~50,000 samples; as a row each they made a quick sweep ~30 MB, as a BLOB ~3 MB."""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import ConfigError
from harness.metrics import UNITS

SCHEMA_VERSION = 3
# Upgrades a store of an older schema in place: version -> statements that bring it to version + 1.
# (Version 3 added `baselines`, which SCHEMA creates if missing.)
MIGRATIONS: dict[int, str] = {2: ""}
SAMPLE_DTYPE = "<f4"  # samples.latency_us: little-endian float32 microseconds
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL,
    harness_version TEXT, git_commit TEXT, git_dirty INTEGER, plan_name TEXT, plan_path TEXT,
    plan_sha256 TEXT, inventory_path TEXT, host TEXT, versions_json TEXT, argv_json TEXT,
    schema_version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    fingerprint_id TEXT PRIMARY KEY, name TEXT NOT NULL, transport TEXT NOT NULL,
    attributes_json TEXT NOT NULL, first_seen_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(id),
    device_name TEXT NOT NULL, device_fingerprint TEXT REFERENCES devices(fingerprint_id),
    model TEXT NOT NULL, variant TEXT NOT NULL, artifact_sha256 TEXT, delegate TEXT NOT NULL,
    threads INTEGER NOT NULL, status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'skipped')),
    reason TEXT, warnings_json TEXT, started_at TEXT, finished_at TEXT,
    runtime_name TEXT, runtime_version TEXT, accuracy_source TEXT, protocol_json TEXT,
    temp_before_c REAL, temp_after_c REAL, freq_before_khz REAL, freq_after_khz REAL, details_json TEXT,
    UNIQUE (run_id, device_name, model, variant, delegate, threads));
CREATE TABLE IF NOT EXISTS metrics (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE, name TEXT NOT NULL,
    value REAL, unit TEXT NOT NULL, PRIMARY KEY (cell_id, name));
CREATE TABLE IF NOT EXISTS samples (
    cell_id INTEGER PRIMARY KEY REFERENCES cells(id) ON DELETE CASCADE, count INTEGER NOT NULL,
    latency_us BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS cells_by_run ON cells(run_id);
CREATE TABLE IF NOT EXISTS baselines (
    tag TEXT PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(id), set_at TEXT NOT NULL, note TEXT);
"""
CELL_COLUMNS = ("device_name", "device_fingerprint", "model", "variant", "artifact_sha256", "delegate",
                "threads", "status", "reason", "warnings_json", "started_at", "finished_at", "runtime_name",
                "runtime_version", "accuracy_source", "protocol_json", "temp_before_c", "temp_after_c",
                "freq_before_khz", "freq_after_khz", "details_json")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class CellRecord:
    """One measured (or failed, or skipped) cell, ready to store."""

    device_name: str
    model: str
    variant: str
    delegate: str
    threads: int
    status: str
    reason: str | None = None
    device_fingerprint: str | None = None
    artifact_sha256: str | None = None
    warnings: list[str] = field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    runtime_name: str | None = None
    runtime_version: str | None = None
    accuracy_source: str | None = None
    protocol_json: str | None = None
    temp_before_c: float | None = None
    temp_after_c: float | None = None
    freq_before_khz: float | None = None
    freq_after_khz: float | None = None
    details: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    samples_us: list[float] = field(default_factory=list)


class Store:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Device workers write from their threads; one lock serializes them on this connection.
        self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self.lock = threading.RLock()
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA foreign_keys = ON")
        with self.db:
            self.db.executescript(SCHEMA)
            found = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if found is None:
                self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            else:
                version = int(found[0])
                while version in MIGRATIONS and version < SCHEMA_VERSION:
                    self.db.executescript(MIGRATIONS[version])
                    version += 1
                    self.db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
                if version != SCHEMA_VERSION:
                    raise ConfigError(str(self.path), "schema_version",
                                      f"store has schema {found[0]}, this harness writes {SCHEMA_VERSION}")

    @classmethod
    def open_existing(cls, path: Path | str) -> "Store":
        """A store that must already exist (report, gate): a missing file is an error, not a new store."""
        if not Path(path).exists():
            raise ConfigError(str(path), None, "no results store here (run `harness sweep` first, or pass --db)")
        return cls(path)

    def close(self) -> None:
        self.db.close()

    # -- writing --------------------------------------------------------------------------------

    def create_run(self, **provenance: Any) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        columns = ("harness_version", "git_commit", "git_dirty", "plan_name", "plan_path", "plan_sha256",
                   "inventory_path", "host", "versions_json", "argv_json")
        values = [provenance.get(c) for c in columns]
        with self.db:
            self.db.execute(f"INSERT INTO runs (id, started_at, status, schema_version, {', '.join(columns)}) "
                            f"VALUES (?, ?, 'running', ?, {', '.join('?' * len(columns))})",
                            (run_id, now(), SCHEMA_VERSION, *values))
        return run_id

    def finish_run(self, run_id: str, status: str) -> None:
        with self.lock, self.db:
            self.db.execute("UPDATE runs SET finished_at = ?, status = ? WHERE id = ?", (now(), status, run_id))

    def reopen_run(self, run_id: str) -> None:
        """Mark a run as running again (`sweep --resume`); its settled cells stay as they are."""
        with self.lock, self.db:
            self.db.execute("UPDATE runs SET status = 'running', finished_at = NULL WHERE id = ?", (run_id,))

    def upsert_device(self, fingerprint_id: str, name: str, transport: str, attributes: dict) -> None:
        with self.lock, self.db:
            self.db.execute(
                "INSERT INTO devices VALUES (?, ?, ?, ?, ?) ON CONFLICT (fingerprint_id) DO UPDATE SET "
                "name = excluded.name, transport = excluded.transport, attributes_json = excluded.attributes_json",
                (fingerprint_id, name, transport, json.dumps(attributes, sort_keys=True), now()))

    def add_cell(self, run_id: str, cell: CellRecord, replace: bool = False) -> int:
        """Store a cell with its metrics and samples in one transaction. With `replace`, a stored
        cell of the same run and configuration (a failed one being measured again) is replaced."""
        row = {c: getattr(cell, c, None) for c in CELL_COLUMNS}
        row["warnings_json"] = json.dumps(cell.warnings) if cell.warnings else None
        row["details_json"] = json.dumps(cell.details, sort_keys=True) if cell.details else None
        with self.lock, self.db:
            if replace:
                self.db.execute("DELETE FROM cells WHERE run_id = ? AND device_name = ? AND model = ? AND variant = ? "
                                "AND delegate = ? AND threads = ?", (run_id, cell.device_name, cell.model,
                                                                     cell.variant, cell.delegate, cell.threads))
            cur = self.db.execute(
                f"INSERT INTO cells (run_id, {', '.join(CELL_COLUMNS)}) VALUES (?, {', '.join('?' * len(CELL_COLUMNS))})",
                (run_id, *row.values()))
            cell_id = cur.lastrowid
            self.db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)",
                                [(cell_id, n, v, UNITS.get(n, "")) for n, v in cell.metrics.items()])
            if cell.samples_us:
                blob = np.asarray(cell.samples_us, dtype=SAMPLE_DTYPE).tobytes()
                self.db.execute("INSERT INTO samples VALUES (?, ?, ?)", (cell_id, len(cell.samples_us), blob))
        return cell_id

    # -- reading --------------------------------------------------------------------------------

    def resolve_run(self, ref: str | None) -> str:
        """A run id from an id, a unique prefix of one, or 'latest'."""
        if ref in (None, "latest"):
            row = self.db.execute("SELECT id FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1").fetchone()
            if row is None:
                raise ConfigError(str(self.path), "--run", "the store holds no runs yet")
            return row[0]
        rows = self.db.execute("SELECT id FROM runs WHERE id = ? OR id LIKE ? ORDER BY id",
                               (ref, ref.replace("%", "") + "%")).fetchall()
        exact = [r[0] for r in rows if r[0] == ref]
        if exact or len(rows) == 1:
            return exact[0] if exact else rows[0][0]
        raise ConfigError(str(self.path), "--run", f"no run {ref!r}" if not rows else
                          f"{ref!r} matches {len(rows)} runs; give more of the id")

    def resolve_baseline(self, ref: str) -> tuple[str, str | None]:
        """(run id, tag) for a baseline tag, else for a run id, prefix or 'latest' (tag None)."""
        row = self.db.execute("SELECT run_id FROM baselines WHERE tag = ?", (ref,)).fetchone()
        if row is not None:
            return row[0], ref
        try:
            return self.resolve_run(ref), None
        except ConfigError:
            tags = [r[0] for r in self.db.execute("SELECT tag FROM baselines ORDER BY tag")]
            raise ConfigError(str(self.path), "--baseline",
                              f"{ref!r} is neither a baseline tag ({', '.join(tags) or 'none set yet'}) "
                              "nor a run id") from None

    def set_baseline(self, tag: str, run_id: str, note: str | None = None) -> str | None:
        """Point `tag` at a run; returns the run it named before, if any."""
        with self.lock, self.db:
            old = self.db.execute("SELECT run_id FROM baselines WHERE tag = ?", (tag,)).fetchone()
            self.db.execute("INSERT INTO baselines VALUES (?, ?, ?, ?) ON CONFLICT (tag) DO UPDATE SET "
                            "run_id = excluded.run_id, set_at = excluded.set_at, note = excluded.note",
                            (tag, run_id, now(), note))
        return old[0] if old else None

    def remove_baseline(self, tag: str) -> bool:
        with self.lock, self.db:
            return self.db.execute("DELETE FROM baselines WHERE tag = ?", (tag,)).rowcount > 0

    def baselines(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT b.tag, b.run_id, b.set_at, b.note, r.started_at, r.plan_name, r.git_commit, r.status, "
            "(SELECT COUNT(*) FROM cells c WHERE c.run_id = b.run_id AND c.status = 'ok') AS ok_cells "
            "FROM baselines b JOIN runs r ON r.id = b.run_id ORDER BY b.tag")
        return [dict(r) for r in rows]

    def history(self, model: str, device: str, metric: str, until: str | None = None) -> list[dict[str, Any]]:
        """One row per ok cell of `model` on `device` (a device name or a fingerprint id) across all
        runs (or those up to run `until`), oldest run first, with the run's provenance and the
        value of `metric`."""
        rows = self.db.execute(
            "SELECT r.id AS run_id, r.started_at, r.git_commit, r.plan_name, c.device_name, c.device_fingerprint, "
            "c.variant, c.delegate, c.threads, c.runtime_name, c.runtime_version, c.artifact_sha256, "
            "m.value AS value, s.count AS samples "
            "FROM cells c JOIN runs r ON r.id = c.run_id "
            "LEFT JOIN metrics m ON m.cell_id = c.id AND m.name = ? "
            "LEFT JOIN samples s ON s.cell_id = c.id "
            "WHERE c.model = ? AND (c.device_name = ? OR c.device_fingerprint = ?) AND c.status = 'ok' "
            "AND (? IS NULL OR (r.started_at, r.rowid) <= (SELECT started_at, rowid FROM runs WHERE id = ?)) "
            "ORDER BY r.started_at, r.rowid, c.id", (metric, model, device, device, until, until))
        return [dict(r) for r in rows]

    def p50_history(self, before_run: str, limit: int) -> dict[tuple, list[float]]:
        """(fingerprint, model, variant, delegate, threads) -> p50 of that cell in each of the up to
        `limit` most recent runs that started before `before_run`, newest first."""
        found: dict[tuple, list[float]] = {}
        if limit <= 0:
            return found
        rows = self.db.execute(
            "SELECT c.device_fingerprint, c.model, c.variant, c.delegate, c.threads, m.value "
            "FROM cells c JOIN runs r ON r.id = c.run_id "
            "JOIN metrics m ON m.cell_id = c.id AND m.name = 'latency_p50_us' "
            "WHERE c.status = 'ok' AND c.device_fingerprint IS NOT NULL "
            "AND (r.started_at, r.rowid) < (SELECT started_at, rowid FROM runs WHERE id = ?) "
            "ORDER BY r.started_at DESC, r.rowid DESC", (before_run,))
        for fingerprint, model, variant, delegate, threads, value in rows:
            values = found.setdefault((fingerprint, model, variant, delegate, threads), [])
            if len(values) < limit:
                values.append(value)
        return found

    def settled_cells(self, run_id: str) -> set[tuple[str, str, str, str, int]]:
        """(device, model, variant, delegate, threads) of the cells of a run that need no new try."""
        rows = self.db.execute("SELECT device_name, model, variant, delegate, threads FROM cells "
                               "WHERE run_id = ? AND status IN ('ok', 'skipped')", (run_id,))
        return {tuple(r) for r in rows}

    def status_counts(self, run_id: str) -> dict[str, int]:
        rows = self.db.execute("SELECT status, COUNT(*) FROM cells WHERE run_id = ? GROUP BY status", (run_id,))
        return {status: n for status, n in rows}

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())

    def devices_of_run(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT DISTINCT d.* FROM devices d JOIN cells c ON c.device_fingerprint = d.fingerprint_id "
            "WHERE c.run_id = ? ORDER BY d.name", (run_id,)).fetchall()
        return [{**dict(r), "attributes": json.loads(r["attributes_json"])} for r in rows]

    def cells(self, run_id: str) -> list[dict[str, Any]]:
        """Every cell of a run with its metrics as a dict (units in the names)."""
        cells = [dict(r) for r in self.db.execute("SELECT * FROM cells WHERE run_id = ? ORDER BY id", (run_id,))]
        metrics: dict[int, dict[str, float]] = {}
        for cell_id, name, value in self.db.execute(
                "SELECT m.cell_id, m.name, m.value FROM metrics m JOIN cells c ON c.id = m.cell_id WHERE c.run_id = ?",
                (run_id,)):
            metrics.setdefault(cell_id, {})[name] = value
        for cell in cells:
            cell["metrics"] = metrics.get(cell["id"], {})
        return cells

    def samples(self, cell_id: int) -> np.ndarray:
        """Every timed sample of a cell, in run order (microseconds, float32); empty if none."""
        row = self.db.execute("SELECT latency_us FROM samples WHERE cell_id = ?", (cell_id,)).fetchone()
        return np.frombuffer(row[0], dtype=SAMPLE_DTYPE) if row else np.empty(0, SAMPLE_DTYPE)

    def count(self, table: str, run_id: str | None = None) -> int:
        """Rows of a table (for `samples`: the samples themselves), optionally of one run only."""
        if table not in ("runs", "cells", "metrics", "samples", "devices"):
            raise ValueError(table)
        what = "SUM(t.count)" if table == "samples" else "COUNT(*)"
        if run_id is None or table in ("runs", "devices"):
            return self.db.execute(f"SELECT COALESCE({what}, 0) FROM {table} t").fetchone()[0]
        if table == "cells":
            return self.db.execute("SELECT COUNT(*) FROM cells WHERE run_id = ?", (run_id,)).fetchone()[0]
        return self.db.execute(f"SELECT COALESCE({what}, 0) FROM {table} t JOIN cells c ON c.id = t.cell_id "
                               "WHERE c.run_id = ?", (run_id,)).fetchone()[0]
