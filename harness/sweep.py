"""The sweep: plan -> cells (model x variant x device x delegate x threads) -> artifacts -> one
worker per device, devices in parallel, cells on a device serially -> health, cool-down, push,
run, parse -> stored rows.

A failure is data: a variant that did not convert, a delegate a device does not offer, a runner
that failed or timed out, a device that does not answer, each becomes a stored cell with its
status and reason, and the sweep goes on."""

from __future__ import annotations

import json
import platform
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import devices
from devices.base import Cooldown, DeviceError, Job
from harness import __version__
from harness.accuracy import score
from harness.artifacts import Cache
from harness.build import ModelBuild, build_models
from harness.config import Inventory, Plan, Target
from harness.edgetpu import NEEDS_FULL_INTEGER, Compiled, compile_for_cells
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
    # the NNAPI accelerator a `nnapi` cell asks for (the plan's), the TPU an `edgetpu` cell opens (the inventory's)
    accelerator: str | None = None

    def label(self) -> str:
        delegate = f"{self.delegate}({self.accelerator})" if self.accelerator else self.delegate
        return f"{self.model} {self.variant} on {self.device} {delegate} {self.threads}t"


def plan_cells(plan: Plan, targets: Sequence[Target], inventory: Inventory) -> list[Cell]:
    """Cells in measuring order. A model's variants run back to back on each (delegate, threads):
    the ratios the report shows (speed-up over fp32 on the same target) then compare cells taken
    close in time, so a slow spell of a noisy machine does not fall between fp32 and the rest."""
    cells = []
    for target in targets:
        config = inventory.get(target.device)
        delegates = target.delegates or config.delegates
        for entry in plan.models:
            for delegate in delegates:
                accelerator = {"nnapi": target.nnapi_accelerator_name,
                               "edgetpu": getattr(config, "edgetpu_device", None)}.get(delegate)
                for threads in target.threads or plan.threads:
                    cells += [Cell(entry.name, v, target.device, delegate, threads, accelerator)
                              for v in entry.variants]
    return cells


def run_sweep(inventory: Inventory, plan: Plan, targets: Sequence[Target], store: Store, cache: Cache,
              log: Log, argv: Sequence[str] = (), progress_stream=None, resume: str | None = None) -> str:
    """Build, measure and store every cell of the plan; returns the run id. With `resume`, the cells
    of that run that did not succeed (failed, or never reached) are measured again, in that run."""
    cells = plan_cells(plan, targets, inventory)
    if resume is not None:
        settled = store.settled_cells(resume)
        cells = [c for c in cells if (c.device, c.model, c.variant, c.delegate, c.threads) not in settled]
        log(f"resuming run {resume}: {len(settled)} cells settled, {len(cells)} to measure")
    builds, summary = build_models(plan, cache, log)
    log(f"artifacts: {summary.cached} from cache, {summary.converted} converted, {summary.failed} failed "
        f"({summary.worker_runs} build worker run{'s' * (summary.worker_runs != 1)})")
    edgetpu_cells = [(c.model, c.variant) for c in cells if c.delegate == "edgetpu"]
    if edgetpu_cells:
        counts = compile_for_cells(plan.edgetpu_compiler, cache.root, edgetpu_cells, builds, log)
        log(f"Edge TPU: {counts['cached']} compiled models from cache, {counts['compiled']} compiled, "
            f"{counts['failed']} failed")
    if resume is not None:
        run_id = resume
        store.reopen_run(run_id)
    else:
        commit, dirty = git_commit()
        run_id = store.create_run(
            harness_version=__version__, git_commit=commit, git_dirty=int(dirty), plan_name=plan.name,
            plan_path=plan.source, plan_sha256=plan.sha256, inventory_path=inventory.source, host=platform.node(),
            versions_json=json.dumps(library_versions()), argv_json=json.dumps(list(argv)))
    by_device = {name: [c for c in cells if c.device == name] for name in dict.fromkeys(c.device for c in cells)}
    log(f"run {run_id}: {len(cells)} cells on {len(by_device)} device(s), one worker per device")
    progress = Progress(len(cells), progress_stream or sys.stderr)
    stop = threading.Event()
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(by_device)), thread_name_prefix="device") as pool:
            futures = [pool.submit(_sweep_device, inventory.get(name), device_cells, builds, plan, store, run_id,
                                   progress, log, stop, resume is not None)
                       for name, device_cells in by_device.items()]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                stop.set()  # the workers finish the cell in hand and stop
                raise
    except BaseException as exc:  # the run row says how it ended; the cells stored so far stay
        store.finish_run(run_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "error")
        raise
    counts = store.status_counts(run_id)
    failed, total = counts.get("failed", 0), sum(counts.values())
    store.finish_run(run_id, "ok" if not failed else "failed" if failed == total else "partial")
    return run_id


def cool_down(read_temp: Callable[[], float | None], cooldown: Cooldown,
              sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic) -> tuple[float, str | None]:
    """Wait until `read_temp()` is under the limit. Returns (seconds waited, warning or None); a
    device without a sensor, or still hot after `timeout_s`, is measured anyway with a warning."""
    started = clock()
    while True:
        temp = read_temp()
        waited = clock() - started
        if temp is None:
            return waited, "cool-down not possible: the device reports no temperature"
        if temp < cooldown.max_temp_c:
            return waited, None
        if waited >= cooldown.timeout_s:
            return waited, (f"cool-down timed out after {waited:.0f} s at {temp:.1f} C "
                            f"(limit {cooldown.max_temp_c:g} C); measured anyway")
        sleep(min(cooldown.poll_s, max(cooldown.timeout_s - waited, 0.0)))


def _sweep_device(config: Any, cells: list[Cell], builds: dict[str, ModelBuild], plan: Plan, store: Store,
                  run_id: str, progress: Progress, log: Log, stop: threading.Event, resumed: bool) -> None:
    """One device's cells, serially, in this worker thread. A device that fails `quarantine_after`
    cells in a row (unreachable, timed out) is quarantined: its remaining cells fail at once."""
    device = devices.open_device(config, log)
    try:
        try:
            fingerprint = device.fingerprint()
        except DeviceError as exc:
            fingerprint, unavailable = None, f"device did not answer: {exc}"
        else:
            unavailable = None
            store.upsert_device(fingerprint["fingerprint_id"], device.name, device.transport, fingerprint)
        strikes, last_fault = 0, ""
        for cell in cells:
            if stop.is_set():
                return
            progress.start(cell.label())
            record, fault = _measure(device, fingerprint, cell, builds[cell.model], plan, unavailable)
            if resumed:
                record.warnings.append(f"measured by `harness sweep --resume` at {record.started_at}")
            store.add_cell(run_id, record, replace=resumed)
            progress.done(cell.label(), _outcome(record, builds[cell.model].labeled))
            strikes, last_fault = (strikes + 1, fault) if fault else (0, "")
            if strikes == plan.quarantine_after and unavailable is None:
                unavailable = (f"{cell.device} quarantined after {strikes} consecutive device failures "
                               f"(last: {last_fault})")
                log(unavailable)
    finally:
        device.close()
        log(f"{device.name}: pushed {device.files_pushed} file(s), {device.bytes_pushed:,} bytes; "
            f"{device.files_reused} already on the device")


def _measure(device: Any, fingerprint: dict | None, cell: Cell, build: ModelBuild, plan: Plan,
             unavailable: str | None) -> tuple[CellRecord, str | None]:
    """The cell's record, and the device fault (unreachable, timed out) that failed it, if any."""
    artifact = build.artifacts[cell.variant]
    record = CellRecord(device_name=cell.device, model=cell.model, variant=cell.variant, delegate=cell.delegate,
                        threads=cell.threads, status="failed", artifact_sha256=artifact.sha256,
                        device_fingerprint=fingerprint["fingerprint_id"] if fingerprint else None,
                        protocol_json=plan.protocol.to_json(), started_at=now(), warnings=list(build.notes))
    for metric, value in (("model_bytes", artifact.bytes), ("model_gzip_bytes", artifact.gzip_bytes),
                          ("sparsity", artifact.sparsity)):
        if value is not None:
            record.metrics[metric] = float(value)
    fault = None
    if artifact.status != "ok":
        record.reason = f"conversion failed: {artifact.reason}"
    elif unavailable:
        record.reason = unavailable
    elif cell.delegate not in device.delegates:
        record.status = "skipped"
        record.reason = f"{cell.device} does not offer the {cell.delegate} delegate (it has: {', '.join(device.delegates)})"
    elif cell.delegate == "edgetpu" and not _compiled_for_edgetpu(record, artifact, build.compiled.get(cell.variant)):
        pass  # skipped or failed, with the reason
    else:
        if device.cooldown is not None:
            _cool(device, record)
        model = build.compiled[cell.variant].path if cell.delegate == "edgetpu" else artifact.path
        key = {"nnapi": "nnapi_accelerator_name", "edgetpu": "device"}.get(cell.delegate)
        options = {key: cell.accelerator} if key and cell.accelerator else {}
        job = Job(model=model, delegate=cell.delegate, num_threads=cell.threads, protocol=plan.protocol,
                  timeout_s=device.run_timeout_s or plan.timeouts.run_timeout_s, inputs=build.eval_path,
                  delegate_options=options)
        try:
            report = device.measure(job)
        except DeviceError as exc:
            record.reason = str(exc)
            fault = record.reason
        else:
            _record_report(record, report, build)
            if options:
                record.details = {**(record.details or {}), "delegate_options": options}
    record.finished_at = now()
    return record, fault


def _compiled_for_edgetpu(record: CellRecord, artifact: Any, compiled: Compiled | None) -> bool:
    """Whether an `edgetpu` cell has a compiled model to measure; if not, the record says why. What
    the compiler said (ops on the TPU, memory) is recorded either way."""
    if not artifact.full_integer:
        record.status, record.reason = "skipped", NEEDS_FULL_INTEGER
        return False
    if compiled is None:  # compile_for_cells saw every edgetpu cell; only a bug leads here
        record.reason = "not compiled for the Edge TPU"
        return False
    record.metrics.update(compiled.metrics())
    record.details = {**(record.details or {}), "edgetpu_compiler": compiled.details()}
    if compiled.status == "segmented":
        record.status, record.reason = "skipped", compiled.reason
    elif compiled.status != "ok":
        record.reason = f"Edge TPU compilation failed: {compiled.reason}"
    else:
        record.artifact_sha256 = compiled.sha256  # what ran: the compiled model
        return True
    return False


def _cool(device: Any, record: CellRecord) -> None:
    def read_temp() -> float | None:
        return device.telemetry().get("temp_c")

    try:
        waited, warning = cool_down(read_temp, device.cooldown)
    except DeviceError as exc:
        waited, warning = 0.0, f"cool-down skipped: cannot read the temperature: {exc}"
    record.metrics["cooldown_wait_s"] = waited
    if warning:
        record.warnings.append(warning)


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
    record.details = {**(record.details or {}),
                      **{k: report.get(k) for k in ("coverage", "inputs", "outputs", "warmup", "timed_seconds",
                                                    "python", "numpy", "model", "telemetry", "error", "argv")}}
    if report.get("edgetpu") is not None:  # which Edge TPU API opened which TPU
        record.details["edgetpu"] = report["edgetpu"]
    if report.get("benchmark_model") is not None:  # each repetition's parsed benchmark_model output
        record.details["benchmark_model"] = report["benchmark_model"]
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
        record.accuracy_source = report.get("accuracy_source", "device")
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
