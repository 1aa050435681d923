"""The sweep: plan -> cells (model x variant x device x delegate x threads) -> artifacts -> one
device at a time (cells on a device run serially) -> health, push, run, parse -> stored rows.

A failure is data: a variant that did not convert, a delegate a device does not offer, a runner
that failed or timed out, a device that does not answer, each becomes a stored cell with its
status and reason, and the sweep goes on."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import devices
from devices.base import DeviceError, Job
from harness import __version__
from harness.accuracy import score
from harness.artifacts import Cache
from harness.build import ModelBuild, build_models
from harness.config import Inventory, Plan, Target
from harness.metrics import runner_metrics
from harness.progress import Progress
from harness.provenance import git_commit, library_versions
from harness.store import CellRecord, Store, now

Log = Callable[[str], None]


@dataclass(frozen=True)
class Cell:
    model: str
    variant: str
    device: str
    delegate: str
    threads: int

    def label(self) -> str:
        return f"{self.model} {self.variant} on {self.device} {self.delegate} {self.threads}t"


def plan_cells(plan: Plan, targets: Sequence[Target], inventory: Inventory) -> list[Cell]:
    """Cells in measuring order. A model's variants run back to back on each (delegate, threads):
    the ratios the report shows (speed-up over fp32 on the same target) then compare cells taken
    close in time, so a slow spell of a noisy machine does not fall between fp32 and the rest."""
    cells = []
    for target in targets:
        delegates = target.delegates or inventory.get(target.device).delegates
        for entry in plan.models:
            for delegate in delegates:
                for threads in target.threads or plan.threads:
                    cells += [Cell(entry.name, v, target.device, delegate, threads) for v in entry.variants]
    return cells


def run_sweep(inventory: Inventory, plan: Plan, targets: Sequence[Target], store: Store, cache: Cache,
              log: Log, argv: Sequence[str] = (), progress_stream=None) -> str:
    """Build, measure and store every cell of the plan; returns the run id."""
    cells = plan_cells(plan, targets, inventory)
    builds, summary = build_models(plan, cache, log)
    log(f"artifacts: {summary.cached} from cache, {summary.converted} converted, {summary.failed} failed "
        f"({summary.worker_runs} build worker run{'s' * (summary.worker_runs != 1)})")
    commit, dirty = git_commit()
    run_id = store.create_run(
        harness_version=__version__, git_commit=commit, git_dirty=int(dirty), plan_name=plan.name,
        plan_path=plan.source, plan_sha256=plan.sha256, inventory_path=inventory.source, host=platform.node(),
        versions_json=json.dumps(library_versions()), argv_json=json.dumps(list(argv)))
    log(f"run {run_id}: {len(cells)} cells on {len({c.device for c in cells})} device(s)")
    progress = Progress(len(cells), progress_stream or sys.stderr)
    outcomes: list[str] = []
    try:
        for name in dict.fromkeys(c.device for c in cells):
            device_cells = [c for c in cells if c.device == name]
            outcomes += _sweep_device(inventory.get(name), device_cells, builds, plan, store, run_id, progress)
    except BaseException as exc:  # the run row says how it ended; the cells stored so far stay
        store.finish_run(run_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "error")
        raise
    failed = outcomes.count("failed")
    store.finish_run(run_id, "ok" if not failed else "failed" if failed == len(outcomes) else "partial")
    return run_id


def _sweep_device(config: Any, cells: list[Cell], builds: dict[str, ModelBuild], plan: Plan, store: Store,
                  run_id: str, progress: Progress) -> list[str]:
    device = devices.open_device(config)
    outcomes = []
    try:
        try:
            fingerprint = device.fingerprint()
        except DeviceError as exc:
            fingerprint, unreachable = None, f"device did not answer: {exc}"
        else:
            unreachable = None
            store.upsert_device(fingerprint["fingerprint_id"], device.name, device.transport, fingerprint)
        for cell in cells:
            progress.start(cell.label())
            record = _measure(device, fingerprint, cell, builds[cell.model], plan, unreachable)
            store.add_cell(run_id, record)
            progress.done(cell.label(), _outcome(record, builds[cell.model].labeled))
            outcomes.append(record.status)
    finally:
        device.close()
    return outcomes


def _measure(device: Any, fingerprint: dict | None, cell: Cell, build: ModelBuild, plan: Plan,
             unreachable: str | None) -> CellRecord:
    artifact = build.artifacts[cell.variant]
    record = CellRecord(device_name=cell.device, model=cell.model, variant=cell.variant, delegate=cell.delegate,
                        threads=cell.threads, status="failed", artifact_sha256=artifact.sha256,
                        device_fingerprint=fingerprint["fingerprint_id"] if fingerprint else None,
                        protocol_json=plan.protocol.to_json(), started_at=now(), warnings=list(build.notes))
    for metric, value in (("model_bytes", artifact.bytes), ("model_gzip_bytes", artifact.gzip_bytes),
                          ("sparsity", artifact.sparsity)):
        if value is not None:
            record.metrics[metric] = float(value)
    if artifact.status != "ok":
        record.reason = f"conversion failed: {artifact.reason}"
    elif unreachable:
        record.reason = unreachable
    elif cell.delegate not in device.delegates:
        record.status = "skipped"
        record.reason = f"{cell.device} does not offer the {cell.delegate} delegate (it has: {', '.join(device.delegates)})"
    else:
        job = Job(model=artifact.path, delegate=cell.delegate, num_threads=cell.threads, protocol=plan.protocol,
                  timeout_s=plan.timeouts.run_timeout_s, inputs=build.eval_path)
        try:
            report = device.measure(job)
        except DeviceError as exc:
            record.reason = str(exc)
        else:
            _record_report(record, report, build)
    record.finished_at = now()
    return record


def _record_report(record: CellRecord, report: dict[str, Any], build: ModelBuild) -> None:
    runtime = report.get("runtime") or {}
    record.runtime_name, record.runtime_version = runtime.get("name"), runtime.get("version")
    telemetry = report.get("telemetry") or {}
    for when in ("before", "after"):
        t = telemetry.get(when) or {}
        setattr(record, f"temp_{when}_c", t.get("temp_c"))
        freqs = t.get("freq_khz") or []
        setattr(record, f"freq_{when}_khz", sum(freqs) / len(freqs) if freqs else None)
    record.warnings += report.get("warnings") or []
    record.details = {k: report.get(k) for k in ("coverage", "inputs", "outputs", "warmup", "timed_seconds",
                                                 "python", "numpy", "model", "telemetry", "error")}
    if report.get("error"):
        error = report["error"]
        record.reason = f"{error['stage']} failed: {error['message']}"
        return
    record.status = "ok"
    record.metrics.update(runner_metrics(report))
    record.samples_us = list(report["samples_us"])
    accuracy = report.get("accuracy")
    if accuracy is None:
        return
    if "error" in accuracy:
        record.warnings.append(f"accuracy not measured: {accuracy['error']}")
        return
    try:
        record.metrics.update(score(accuracy, build.labels, build.reference))
        record.accuracy_source = "device"
    except ValueError as exc:
        record.warnings.append(f"accuracy not scored: {exc}")


def _outcome(record: CellRecord, labeled: bool) -> str:
    if record.status != "ok":
        return f"{record.status.upper()}: {record.reason}"
    m = record.metrics
    text = f"p50 {m['latency_p50_us'] / 1000:.3f} ms ({int(m['samples_count'])} runs)"
    if labeled and "top1_accuracy" in m:
        text += f", top-1 {100 * m['top1_accuracy']:.2f} %"
    elif "top1_agreement" in m:
        text += f", agreement {100 * m['top1_agreement']:.0f} %"
    return text
