"""The results store: SQLite, tidy rows, provenance on every run, raw samples for the gate.

Each cell is written in one transaction with its metrics, launches and samples, so an
interrupted sweep leaves whole cells or none. Units live in metric names (`latency_p50_us`) and
in `metrics.unit`. The schema and its upgrades are in harness/schema.py.

A cell is measured by several launches (fresh runner processes). Each launch has a row in
`launches` (its summary and its place in the device's interleaved order) and its timings in
`samples`: a BLOB of little-endian float32 microseconds in run order per (cell, launch)
(`numpy.frombuffer(blob, "<f4")`). A 20 us model measured for a second gives ~50,000 samples; as a
row each they made a quick sweep ~30 MB, as BLOBs ~3 MB."""

from __future__ import annotations

import json
import os
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
from harness.schema import (SAMPLE_DTYPE, SCHEMA_VERSION, launch_summary, open_schema, refuse_a_foreign_database,
                            refuse_what_is_not_a_store, sqlite_hint)

CELL_COLUMNS = ("device_name", "device_identity", "device_fingerprint", "model", "variant", "artifact_sha256", "delegate",
                "threads", "status", "reason", "warnings_json", "started_at", "finished_at", "position", "runtime_name",
                "runtime_version", "runner_sha256", "accuracy_source", "protocol_json", "temp_before_c", "temp_after_c",
                "freq_before_khz", "freq_after_khz", "details_json")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# A cell of `device`, named by its name in the run, its fingerprint id or its identity (three parameters).
ON_DEVICE = "(c.device_name = ? OR c.device_fingerprint = ? OR c.device_identity = ?)"


@dataclass
class LaunchRecord:
    """One launch of a cell: a fresh runner process, with its own warm-up. `seq` is its place in
    the device's interleaved order; `median_known` is False for tools that print only an average."""

    launch: int
    samples_us: list[float]
    seq: int | None = None
    started_at: str | None = None
    median_known: bool = True


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
    device_identity: str | None = None
    artifact_sha256: str | None = None
    warnings: list[str] = field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    position: int | None = None  # the cell's place in the plan's order
    runtime_name: str | None = None
    runtime_version: str | None = None
    runner_sha256: str | None = None  # the runner (runner.py, or benchmark_model) that measured it
    accuracy_source: str | None = None
    protocol_json: str | None = None
    temp_before_c: float | None = None
    temp_after_c: float | None = None
    freq_before_khz: float | None = None
    freq_after_khz: float | None = None
    details: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    launches: list[LaunchRecord] = field(default_factory=list)

    @property
    def samples_us(self) -> list[float]:
        """Every timing of every launch, in launch order."""
        return [x for launch in sorted(self.launches, key=lambda l: l.launch) for x in launch.samples_us]


class Store:
    """The store at `path`, created when absent, upgraded in place when older.

    WAL journal: a reader (`harness report`, `export`, a notebook) never blocks the sweep that
    writes, and the writer waits up to `BUSY_TIMEOUT_S` for another writer (`gate --confirm` on the
    same store) instead of failing. A file that is not ours (not SQLite, or an SQLite database of
    something else) or a store written by a newer harness is refused before anything is written."""

    BUSY_TIMEOUT_S = 60.0

    def __init__(self, path: Path | str, read_only: bool = False):
        self.path = Path(path)
        refuse_what_is_not_a_store(self.path)
        self._new = not self.path.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(str(self.path), None, f"cannot create its directory: {exc.strerror or exc}") from None
        # Device workers write from their threads; one lock serializes them on this connection.
        try:
            if read_only:  # a store this user may not write: read as it is, no -wal/-shm left beside it
                uri = f"{self.path.absolute().as_uri()}?mode=ro&immutable=1"
                self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            else:
                self.db = sqlite3.connect(self.path, timeout=self.BUSY_TIMEOUT_S, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ConfigError(str(self.path), None, f"cannot open the store: {exc}{sqlite_hint(exc)}") from None
        self.lock = threading.RLock()
        self.db.row_factory = sqlite3.Row
        try:
            refuse_a_foreign_database(self.db, self.path)
            self.db.execute("PRAGMA foreign_keys = ON")
            open_schema(self.db, str(self.path))  # refuses a newer store before anything is written
            self.journal_mode = self.db.execute("PRAGMA journal_mode" + ("" if read_only else " = WAL")).fetchone()[0]
        except ValueError as exc:
            self._abandon()
            raise ConfigError(str(self.path), "schema_version", str(exc)) from None
        except sqlite3.DatabaseError as exc:  # read-only directory or file, disk full, a corrupt file
            self._abandon()
            raise ConfigError(str(self.path), None, f"cannot use the store: {exc}{sqlite_hint(exc)}") from None
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """Close after a failed open; a store this open created is removed, so nothing is left."""
        self.db.close()
        if self._new:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def discard_if_unused(self) -> bool:
        """Close, and remove the store when this open created it and no run was written: a plan
        refused while its models were built (data that does not fit) leaves nothing behind."""
        if not self._new or self.db.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is not None:
            return False
        self._abandon()
        return True

    @classmethod
    def open_existing(cls, path: Path | str) -> "Store":
        """A store that must already exist (report, gate): a missing file is an error, not a new store."""
        if not Path(path).exists():
            raise ConfigError(str(path), None, "no results store here (run `harness sweep` first, or pass --db)")
        if Path(path).is_file() and Path(path).stat().st_size == 0:
            raise ConfigError(str(path), None, "an empty file, not a results store (run `harness sweep` first, "
                                               "or pass --db)")
        return cls(path, read_only=Path(path).is_file() and not os.access(path, os.W_OK))

    def close(self) -> None:
        self.db.close()

    # -- writing --------------------------------------------------------------------------------

    def create_run(self, **provenance: Any) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        columns = ("harness_version", "git_commit", "git_dirty", "plan_name", "plan_path", "plan_sha256",
                   "inventory_path", "host", "versions_json", "argv_json", "seed")
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

    def upsert_device(self, identity: str, fingerprint_id: str, name: str, transport: str, serial: str | None,
                      attributes: dict) -> str | None:
        """Record a device by its identity; returns the name it had before when it was known under
        another inventory name (a renamed entry of the same board), else None."""
        with self.lock, self.db:
            old = self.db.execute("SELECT name FROM devices WHERE identity = ?", (identity,)).fetchone()
            self.db.execute(
                "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (identity) DO UPDATE SET "
                "name = excluded.name, transport = excluded.transport, serial = excluded.serial, "
                "attributes_json = excluded.attributes_json, last_seen_at = excluded.last_seen_at",
                (identity, fingerprint_id, name, transport, serial, json.dumps(attributes, sort_keys=True), now(),
                 now()))
        return old[0] if old is not None and old[0] != name else None

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
            for launch in cell.launches:
                x = np.asarray(launch.samples_us, dtype=SAMPLE_DTYPE)
                summary = launch_summary(x, launch.median_known)
                self.db.execute("INSERT INTO launches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                (cell_id, launch.launch, launch.seq, launch.started_at, summary["count"],
                                 summary["median_us"], summary["mean_us"], summary["std_us"], summary["min_us"],
                                 summary["max_us"]))
                if x.size:
                    self.db.execute("INSERT INTO samples VALUES (?, ?, ?, ?)", (cell_id, launch.launch, int(x.size),
                                                                                x.tobytes()))
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
        """One row per ok cell of `model` on `device` (a device name, fingerprint id or identity) across all
        runs (or those up to run `until`), oldest run first, with the run's provenance and the
        value of `metric`."""
        rows = self.db.execute(
            "SELECT r.id AS run_id, r.started_at, r.git_commit, r.plan_name, c.device_name, c.device_fingerprint, "
            "c.device_identity, c.variant, c.delegate, c.threads, c.runtime_name, c.runtime_version, "
            "c.artifact_sha256, m.value AS value, "
            "(SELECT SUM(s.count) FROM samples s WHERE s.cell_id = c.id) AS samples, "
            "(SELECT COUNT(*) FROM launches l WHERE l.cell_id = c.id) AS launches "
            "FROM cells c JOIN runs r ON r.id = c.run_id "
            "LEFT JOIN metrics m ON m.cell_id = c.id AND m.name = ? "
            "WHERE c.model = ? AND " + ON_DEVICE + " "
            "AND c.status = 'ok' "
            "AND (? IS NULL OR (r.started_at, r.rowid) <= (SELECT started_at, rowid FROM runs WHERE id = ?)) "
            "ORDER BY r.started_at, r.rowid, c.id", (metric, model, device, device, device, until, until))
        return [dict(r) for r in rows]

    def metric_names(self, model: str, device: str) -> list[str]:
        """The metrics stored for `model`'s ok cells on `device` (name, fingerprint id or identity)."""
        rows = self.db.execute(
            "SELECT DISTINCT m.name FROM metrics m JOIN cells c ON c.id = m.cell_id WHERE c.model = ? AND "
            + ON_DEVICE + " AND c.status = 'ok' "
            "ORDER BY m.name", (model, device, device, device))
        return [r[0] for r in rows]

    def launch_history(self, before_run: str, limit: int) -> dict[tuple, list[list[float]]]:
        """(device identity, model, variant, delegate, threads) -> for each of the up to `limit` most
        recent runs that started before `before_run`, newest first, the centers of that cell's
        launches (median, or mean where the tool printed no median)."""
        found: dict[tuple, list[list[float]]] = {}
        if limit <= 0:
            return found
        rows = self.db.execute(
            "SELECT c.id, c.device_identity, c.model, c.variant, c.delegate, c.threads, "
            "COALESCE(l.median_us, l.mean_us) FROM cells c JOIN runs r ON r.id = c.run_id "
            "JOIN launches l ON l.cell_id = c.id "
            "WHERE c.status = 'ok' AND c.device_identity IS NOT NULL "
            "AND (r.started_at, r.rowid) < (SELECT started_at, rowid FROM runs WHERE id = ?) "
            "ORDER BY r.started_at DESC, r.rowid DESC, c.id, l.launch", (before_run,))
        cell_of: dict[tuple, int] = {}
        for cell_id, identity, model, variant, delegate, threads, center in rows:
            key = (identity, model, variant, delegate, threads)
            runs = found.setdefault(key, [])
            if cell_of.get(key) != cell_id:
                if len(runs) == limit:
                    continue
                cell_of[key] = cell_id
                runs.append([])
            if center is not None:
                runs[-1].append(center)
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
        """The devices a run measured, under the names the run gave them; `other_names`: what the
        same device (identity) was called in other runs (a renamed inventory entry)."""
        rows = self.db.execute(
            "SELECT DISTINCT d.*, c.device_name AS run_name FROM devices d JOIN cells c ON c.device_identity = d.identity "
            "WHERE c.run_id = ? ORDER BY c.device_name", (run_id,)).fetchall()
        out = []
        for r in rows:
            others = [n for (n,) in self.db.execute(
                "SELECT DISTINCT device_name FROM cells WHERE device_identity = ? AND device_name != ? "
                "ORDER BY device_name", (r["identity"], r["run_name"]))]
            out.append({**dict(r), "name": r["run_name"], "attributes": json.loads(r["attributes_json"]),
                        "other_names": others})
        return out

    def cells(self, run_id: str) -> list[dict[str, Any]]:
        """Every cell of a run with its metrics as a dict (units in the names), in plan order."""
        cells = [dict(r) for r in self.db.execute("SELECT * FROM cells WHERE run_id = ? ORDER BY position, id",
                                                   (run_id,))]
        metrics: dict[int, dict[str, float]] = {}
        for cell_id, name, value in self.db.execute(
                "SELECT m.cell_id, m.name, m.value FROM metrics m JOIN cells c ON c.id = m.cell_id WHERE c.run_id = ?",
                (run_id,)):
            metrics.setdefault(cell_id, {})[name] = value
        for cell in cells:
            cell["metrics"] = metrics.get(cell["id"], {})
        return cells

    def samples(self, cell_id: int) -> np.ndarray:
        """Every timed sample of a cell, launch after launch, each in run order (microseconds,
        float32); empty if none."""
        parts = self.launch_samples(cell_id)
        return np.concatenate(parts) if parts else np.empty(0, SAMPLE_DTYPE)

    def launch_samples(self, cell_id: int) -> list[np.ndarray]:
        """A cell's timings, one array per launch, in launch order."""
        rows = self.db.execute("SELECT latency_us FROM samples WHERE cell_id = ? ORDER BY launch", (cell_id,))
        return [np.frombuffer(r[0], dtype=SAMPLE_DTYPE) for r in rows]

    def launches(self, cell_id: int) -> list[dict[str, Any]]:
        """A cell's launches (index, order, start, summary), in launch order."""
        rows = self.db.execute("SELECT * FROM launches WHERE cell_id = ? ORDER BY launch", (cell_id,))
        return [dict(r) for r in rows]

    # -- confirmations (harness gate --confirm) -------------------------------------------------

    def add_confirmation(self, row: dict[str, Any], launches: list[dict[str, Any]]) -> int:
        """A confirmation's outcome and every launch it measured, in one transaction."""
        columns = ("baseline_run", "candidate_run", "device_identity", "device_name", "model", "variant", "delegate",
                   "threads", "baseline_sha256", "candidate_sha256", "started_at", "finished_at", "pairs",
                   "device_seconds", "outcome", "reason", "details_json")
        with self.lock, self.db:
            cur = self.db.execute(f"INSERT INTO confirmations ({', '.join(columns)}) VALUES "
                                  f"({', '.join('?' * len(columns))})", [row.get(c) for c in columns])
            self.db.executemany(
                "INSERT INTO confirmation_launches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(cur.lastrowid, i, l["arm"], l.get("started_at"), l["count"], l.get("median_us"), l.get("mean_us"),
                  l.get("seconds")) for i, l in enumerate(launches)])
        return cur.lastrowid

    def settle_confirmation(self, confirmation_id: int, outcome: str) -> None:
        """A confirmation's final outcome, once Holm over the night's confirmed cells decided it."""
        with self.lock, self.db:
            self.db.execute("UPDATE confirmations SET outcome = ? WHERE id = ?", (outcome, confirmation_id))

    def count(self, table: str, run_id: str | None = None) -> int:
        """Rows of a table (for `samples`: the samples themselves), optionally of one run only."""
        if table not in ("runs", "cells", "metrics", "samples", "devices", "launches"):
            raise ValueError(table)
        what = "SUM(t.count)" if table == "samples" else "COUNT(*)"
        if run_id is None or table in ("runs", "devices"):
            return self.db.execute(f"SELECT COALESCE({what}, 0) FROM {table} t").fetchone()[0]
        if table == "cells":
            return self.db.execute("SELECT COUNT(*) FROM cells WHERE run_id = ?", (run_id,)).fetchone()[0]
        return self.db.execute(f"SELECT COALESCE({what}, 0) FROM {table} t JOIN cells c ON c.id = t.cell_id "
                               "WHERE c.run_id = ?", (run_id,)).fetchone()[0]
