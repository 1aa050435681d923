"""`harness export`: the store as tidy tables for pandas, one row per observation.

- metrics: one row per cell and metric (cells x metrics), with the provenance of the run, the
  device and the cell on every row; a cell with no metric at all (a failed conversion) still has
  one row, its metric empty, so that its status and reason are not lost;
- samples: one row per timed run: the cell's keys, `launch` (which runner launch of the cell),
  `seq` (run order within the launch) and `latency_us`.

CSV for anything, Parquet (pyarrow) for size and types: a quick sweep's samples are ~10^6 rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

RUN_COLUMNS = ("run_id", "run_started_at", "plan_name", "plan_sha256", "git_commit", "git_dirty", "harness_version",
               "host")
CELL_COLUMNS = ("device", "device_identity", "device_fingerprint", "model", "variant", "delegate", "threads", "status", "reason",
                "runtime_name", "runtime_version", "artifact_sha256", "accuracy_source", "temp_before_c",
                "temp_after_c", "started_at", "finished_at")
METRIC_COLUMNS = RUN_COLUMNS + CELL_COLUMNS + ("metric", "value", "unit")
SAMPLE_COLUMNS = ("run_id", "device", "device_identity", "device_fingerprint", "model", "variant", "delegate",
                  "threads", "launch", "seq", "latency_us")
FORMATS = ("csv", "parquet")


def _run_values(run: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": run["id"], "run_started_at": run["started_at"], "plan_name": run.get("plan_name"),
            "plan_sha256": run.get("plan_sha256"), "git_commit": run.get("git_commit"),
            "git_dirty": bool(run.get("git_dirty")), "harness_version": run.get("harness_version"),
            "host": run.get("host")}


def _cell_values(cell: dict[str, Any]) -> dict[str, Any]:
    return {"device": cell["device_name"], **{k: cell.get(k) for k in CELL_COLUMNS if k != "device"}}


def metric_rows(runs: Sequence[tuple[dict[str, Any], list[dict[str, Any]]]], units: dict[str, str]):
    """A DataFrame of every (cell, metric) of the given (run, cells) pairs."""
    import pandas as pd

    rows = []
    for run, cells in runs:
        base = _run_values(run)
        for cell in cells:
            head = {**base, **_cell_values(cell)}
            metrics = cell["metrics"] or {None: None}
            for name, value in metrics.items():
                rows.append({**head, "metric": name, "value": value, "unit": units.get(name, "") if name else None})
    frame = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    frame["value"] = frame["value"].astype("float64")
    frame["threads"] = frame["threads"].astype("int64")
    return frame


def sample_rows(runs: Sequence[tuple[dict[str, Any], list[dict[str, Any]]]], launch_samples_of):
    """A DataFrame of every timed run of the given (run, cells) pairs; `launch_samples_of(cell_id)`
    gives a cell's timings, one array per launch, in launch order."""
    import pandas as pd

    parts = []
    for run, cells in runs:
        for cell in cells:
            per_launch = [np.asarray(x, dtype=np.float64) for x in launch_samples_of(cell["id"])]
            if not sum(x.size for x in per_launch):
                continue
            part = pd.DataFrame({
                "launch": np.concatenate([np.full(x.size, i, dtype=np.int64) for i, x in enumerate(per_launch)]),
                "seq": np.concatenate([np.arange(x.size, dtype=np.int64) for x in per_launch]),
                "latency_us": np.concatenate(per_launch)})
            for key, value in (("run_id", run["id"]), ("device", cell["device_name"]),
                               ("device_identity", cell.get("device_identity")),
                               ("device_fingerprint", cell["device_fingerprint"]), ("model", cell["model"]),
                               ("variant", cell["variant"]), ("delegate", cell["delegate"]),
                               ("threads", int(cell["threads"]))):
                part[key] = value
            parts.append(part[list(SAMPLE_COLUMNS)])
    if not parts:
        return pd.DataFrame({c: [] for c in SAMPLE_COLUMNS})
    frame = pd.concat(parts, ignore_index=True)
    for key in ("run_id", "device", "device_identity", "device_fingerprint", "model", "variant", "delegate"):
        frame[key] = frame[key].astype("category")  # a million rows repeat a few hundred cells' keys
    return frame


def write(frame, fmt: str, out: Path) -> Path:
    """Write atomically: a reader never sees half a file."""
    from harness.files import atomic_path

    if fmt not in FORMATS:
        raise ValueError(fmt)
    with atomic_path(out) as tmp:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False, engine="pyarrow")
    return out
