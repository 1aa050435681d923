"""The store's schema, and the upgrades that bring an older store to it in place.

Version 4 (launches as the unit of evidence, devices by identity):
- `launches`: one row per runner launch of a cell (a fresh process with its own warm-up): its
  index, its place in the device's interleaved order (`seq`), when it started, and its summary;
- `samples`: one float32 BLOB per (cell, launch), so every raw timing knows its launch;
- `devices` keyed by `identity` (fingerprint + serial, host key or machine id where the device
  has one, else + inventory name): two boards of one image are two devices; a renamed entry with
  the same serial is the same one. `cells.device_identity` points at it;
- `runs.seed`: the seed of the run's launch order; `cells.position`: the cell's place in the plan
  (cells are stored as they finish, in no useful order);
- `confirmations` + `confirmation_launches`: what `harness gate --confirm` measured."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import numpy as np

from harness.errors import ConfigError

SCHEMA_VERSION = 4
SAMPLE_DTYPE = "<f4"  # samples.latency_us: little-endian float32 microseconds

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL,
    harness_version TEXT, git_commit TEXT, git_dirty INTEGER, plan_name TEXT, plan_path TEXT,
    plan_sha256 TEXT, inventory_path TEXT, host TEXT, versions_json TEXT, argv_json TEXT,
    schema_version INTEGER NOT NULL, seed INTEGER);
CREATE TABLE IF NOT EXISTS devices (
    identity TEXT PRIMARY KEY, fingerprint_id TEXT NOT NULL, name TEXT NOT NULL, transport TEXT NOT NULL,
    serial TEXT, attributes_json TEXT NOT NULL, first_seen_at TEXT NOT NULL, last_seen_at TEXT);
CREATE TABLE IF NOT EXISTS cells (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(id),
    device_name TEXT NOT NULL, device_identity TEXT REFERENCES devices(identity), device_fingerprint TEXT,
    model TEXT NOT NULL, variant TEXT NOT NULL, artifact_sha256 TEXT, delegate TEXT NOT NULL,
    threads INTEGER NOT NULL, status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'skipped')),
    reason TEXT, warnings_json TEXT, started_at TEXT, finished_at TEXT, position INTEGER,
    runtime_name TEXT, runtime_version TEXT, runner_sha256 TEXT, accuracy_source TEXT, protocol_json TEXT,
    temp_before_c REAL, temp_after_c REAL, freq_before_khz REAL, freq_after_khz REAL, details_json TEXT,
    UNIQUE (run_id, device_name, model, variant, delegate, threads));
CREATE TABLE IF NOT EXISTS metrics (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE, name TEXT NOT NULL,
    value REAL, unit TEXT NOT NULL, PRIMARY KEY (cell_id, name));
CREATE TABLE IF NOT EXISTS launches (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE, launch INTEGER NOT NULL,
    seq INTEGER, started_at TEXT, count INTEGER NOT NULL, median_us REAL, mean_us REAL, std_us REAL,
    min_us REAL, max_us REAL, PRIMARY KEY (cell_id, launch));
CREATE TABLE IF NOT EXISTS samples (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE, launch INTEGER NOT NULL DEFAULT 0,
    count INTEGER NOT NULL, latency_us BLOB NOT NULL, PRIMARY KEY (cell_id, launch));
CREATE INDEX IF NOT EXISTS cells_by_run ON cells(run_id);
CREATE INDEX IF NOT EXISTS cells_by_identity ON cells(device_identity, model, variant, delegate, threads);
CREATE TABLE IF NOT EXISTS baselines (
    tag TEXT PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(id), set_at TEXT NOT NULL, note TEXT);
CREATE TABLE IF NOT EXISTS confirmations (
    id INTEGER PRIMARY KEY, baseline_run TEXT NOT NULL, candidate_run TEXT NOT NULL,
    device_identity TEXT, device_name TEXT NOT NULL, model TEXT NOT NULL, variant TEXT NOT NULL,
    delegate TEXT NOT NULL, threads INTEGER NOT NULL, baseline_sha256 TEXT, candidate_sha256 TEXT,
    started_at TEXT NOT NULL, finished_at TEXT, pairs INTEGER NOT NULL DEFAULT 0, device_seconds REAL,
    outcome TEXT, reason TEXT, details_json TEXT);
CREATE TABLE IF NOT EXISTS confirmation_launches (
    confirmation_id INTEGER NOT NULL REFERENCES confirmations(id) ON DELETE CASCADE, seq INTEGER NOT NULL,
    arm TEXT NOT NULL CHECK (arm IN ('baseline', 'candidate')), started_at TEXT, count INTEGER NOT NULL,
    median_us REAL, mean_us REAL, seconds REAL, PRIMARY KEY (confirmation_id, seq));
"""


def launch_summary(samples: np.ndarray, median_known: bool = True) -> dict[str, float | int | None]:
    """A launch's row: count, median, mean, std, min, max of its timings (microseconds). A launch
    measured by a tool that prints only its average (benchmark_model) has no median."""
    x = np.asarray(samples, dtype=np.float64)
    if not x.size:
        return {"count": 0, "median_us": None, "mean_us": None, "std_us": None, "min_us": None, "max_us": None}
    return {"count": int(x.size), "median_us": float(np.median(x)) if median_known else None,
            "mean_us": float(x.mean()), "std_us": float(x.std(ddof=1)) if x.size > 1 else 0.0,
            "min_us": float(x.min()), "max_us": float(x.max())}


def launch_center(launch) -> float | None:
    """What a launch counts as: its median, or its mean where the tool printed no median."""
    return launch["median_us"] if launch["median_us"] is not None else launch["mean_us"]


def legacy_identity(fingerprint_id: str, name: str) -> str:
    """The identity of a device known only by fingerprint and inventory name (stores before version 4,
    and devices that report no serial, host key or machine id)."""
    return f"{fingerprint_id}-n{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _upgrade_3_to_4(db: sqlite3.Connection) -> None:
    """Devices by identity, cells pointing at it, samples and launches per launch. A cell of an older
    store was one launch (launch 0), except benchmark_model cells, whose every sample was a run of
    the tool: one launch each."""
    db.execute("ALTER TABLE runs ADD COLUMN seed INTEGER")
    old_devices = {r[0]: r for r in db.execute("SELECT fingerprint_id, name, transport, attributes_json, first_seen_at "
                                               "FROM devices")}
    db.execute("ALTER TABLE devices RENAME TO devices_v3")
    db.execute("ALTER TABLE cells RENAME TO cells_v3")
    db.execute("ALTER TABLE samples RENAME TO samples_v3")
    create(db)
    pairs = db.execute("SELECT DISTINCT device_fingerprint, device_name FROM cells_v3 "
                       "WHERE device_fingerprint IS NOT NULL").fetchall()
    for fingerprint_id, name in pairs:
        row = old_devices.get(fingerprint_id)
        db.execute("INSERT OR IGNORE INTO devices VALUES (?, ?, ?, ?, NULL, ?, ?, NULL)",
                   (legacy_identity(fingerprint_id, name), fingerprint_id, name, row[2] if row else "unknown",
                    row[3] if row else "{}", row[4] if row else "1970-01-01T00:00:00+0000"))
    columns = ("id, run_id, device_name, device_fingerprint, model, variant, artifact_sha256, delegate, threads, "
               "status, reason, warnings_json, started_at, finished_at, runtime_name, runtime_version, "
               "accuracy_source, protocol_json, temp_before_c, temp_after_c, freq_before_khz, freq_after_khz, "
               "details_json")
    db.execute(f"INSERT INTO cells ({columns}) SELECT {columns} FROM cells_v3")
    for cell_id, fingerprint_id, name in db.execute(
            "SELECT id, device_fingerprint, device_name FROM cells WHERE device_fingerprint IS NOT NULL").fetchall():
        db.execute("UPDATE cells SET device_identity = ? WHERE id = ?", (legacy_identity(fingerprint_id, name), cell_id))
    rows = db.execute("SELECT s.cell_id, s.latency_us, c.runtime_name, c.started_at FROM samples_v3 s "
                      "JOIN cells c ON c.id = s.cell_id").fetchall()
    for cell_id, blob, runtime, started in rows:
        x = np.frombuffer(blob, dtype=SAMPLE_DTYPE)
        per_run = runtime == "benchmark_model"
        parts = [x[i:i + 1] for i in range(x.size)] if per_run else [x]
        for launch, part in enumerate(parts):
            summary = launch_summary(part, median_known=not per_run)
            db.execute("INSERT INTO samples VALUES (?, ?, ?, ?)", (cell_id, launch, int(part.size), part.tobytes()))
            db.execute("INSERT INTO launches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (cell_id, launch, launch, started, summary["count"], summary["median_us"], summary["mean_us"],
                        summary["std_us"], summary["min_us"], summary["max_us"]))
    db.execute("DROP TABLE samples_v3")
    db.execute("DROP TABLE cells_v3")
    db.execute("DROP TABLE devices_v3")


# version -> the upgrade that brings a store of that version to the next (3 added `baselines`,
# which SCHEMA creates where it is missing)
UPGRADES = {2: lambda db: None, 3: _upgrade_3_to_4}


SQLITE_HEADER = b"SQLite format 3\x00"


def refuse_what_is_not_a_store(path: Path) -> None:
    """Before connecting: a directory, or a file that is not an SQLite database, is refused (SQLite
    would fail later with 'file is not a database', or write into a file that was empty)."""
    if path.is_dir():
        raise ConfigError(str(path), None, "a directory, not a results store (--db takes a file path)")
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read: {exc.strerror or exc}") from None
    if head and head != SQLITE_HEADER:
        raise ConfigError(str(path), None, "not a results store: the file is not an SQLite database; "
                                           "refusing to write into it")


def refuse_a_foreign_database(db: sqlite3.Connection, path: Path) -> None:
    """An SQLite database with tables but without our `meta` table is someone else's: never
    create our tables in it."""
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    if tables and "meta" not in tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise ConfigError(str(path), None, f"an SQLite database that is not a results store (its tables: {shown}); "
                                           "refusing to write into it")


def sqlite_hint(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "readonly" in text or "unable to open" in text:
        return " (is its directory read-only? pass --db a writable path)"
    if "disk is full" in text:
        return " (free some space, or pass --db a path on another disk)"
    return ""


def open_schema(db: sqlite3.Connection, source: str) -> None:
    """Create the schema in a new store, or upgrade an older one in place (one transaction per
    step, foreign keys off while tables are rebuilt). Raises ValueError for a store of a version
    this harness cannot read."""
    found = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    version = None
    if found is not None:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else None
    if version is None:
        db.execute("BEGIN")
        create(db)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        db.commit()
        return
    if version > SCHEMA_VERSION:
        raise ValueError(f"store has schema {version}: written by a newer harness (this one reads "
                         f"{', '.join(map(str, (*UPGRADES, SCHEMA_VERSION)))}); upgrade the harness or pass "
                         "another --db")
    if version not in (*UPGRADES, SCHEMA_VERSION):
        raise ValueError(f"store has schema {version}, this harness reads {', '.join(map(str, UPGRADES))} "
                         f"and writes {SCHEMA_VERSION}")
    while version < SCHEMA_VERSION:
        db.execute("PRAGMA foreign_keys = OFF")  # a no-op inside a transaction: set before BEGIN
        try:
            db.execute("BEGIN")
            try:
                UPGRADES[version](db)
                version += 1
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
            except BaseException:
                db.rollback()
                raise
            db.commit()
        finally:
            db.execute("PRAGMA foreign_keys = ON")
    if missing(db):  # only when something is missing: a reader's open writes nothing
        db.execute("BEGIN")
        create(db)
        db.commit()


def missing(db: sqlite3.Connection) -> list[str]:
    """The tables and indexes of SCHEMA this store lacks."""
    wanted = re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", SCHEMA)
    present = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    return [name for name in wanted if name not in present]


def create(db: sqlite3.Connection) -> None:
    """SCHEMA's statements one by one: `executescript` would commit the transaction they belong to."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
