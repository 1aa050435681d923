"""One machine's part of a sweep: every cell of every inventory entry that is that machine, as
interleaved launches (harness/schedule.py), one at a time.

A cell is `protocol.repetitions` launches of the runner (or of benchmark_model), each a fresh
process with its own warm-up: invokes inside one process share its allocation, cache layout and
thread placement, so they are not independent samples; launches are. Its first launch also runs
the evaluation set for accuracy. A cell is stored when its last launch is in, in one
transaction; one that failed is stored at once with the reason, and its remaining launches are
dropped. An interrupted sweep stores no half-measured cell: `--resume` measures it again.

Entries that are one machine (`local` and a Coral stick on it; two SSH entries to one address)
share this worker, so that machine never measures two things at once. Launches on the
coordinating host itself hold `host_work` while they run; host-side work of other machines'
workers (scoring, reference kernels, storing) takes it too, so it never overlaps them."""

from __future__ import annotations

import contextlib
import threading
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import devices
from devices.base import DeviceError, Job, device_identity
from harness.accuracy import score
from harness.build import ModelBuild
from harness.config import Plan
from harness.edgetpu import NEEDS_FULL_INTEGER, Compiled
from harness.metrics import runner_metrics
from harness.progress import Progress
from harness.schedule import rounds
from harness.store import CellRecord, LaunchRecord, Store, now

Log = Callable[[str], None]
# what a launch's report carries that describes the cell, not the launch (taken from its first launch)
CELL_DETAILS = ("coverage", "inputs", "outputs", "python", "numpy", "model", "argv", "edgetpu")


@dataclass
class Pending:
    """A cell being measured: its record so far and the launches that are in."""

    cell: Any  # harness.sweep.Cell
    device: Any
    build: ModelBuild
    record: CellRecord
    job: Job | None = None  # None: settled without measuring
    reports: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0  # launches tried, failed ones included
    settled: bool = False


class MachineWorker:
    def __init__(self, machine: str, configs: list[Any], cells: list[Any], builds: dict[str, ModelBuild], plan: Plan,
                 store: Store, run_id: str, seed: int, progress: Progress, log: Log, stop: threading.Event,
                 resumed: bool, host_work: threading.RLock, on_host: bool, cache: Any = None):
        self.machine, self.configs, self.cells, self.builds, self.plan = machine, configs, cells, builds, plan
        self.store, self.run_id, self.seed, self.progress, self.log = store, run_id, seed, progress, log
        self.stop, self.resumed, self.host_work, self.on_host, self.cache = stop, resumed, host_work, on_host, cache
        self.devices: dict[str, Any] = {}
        self.fingerprints: dict[str, dict | None] = {}
        self.unavailable: dict[str, str | None] = {}
        self.strikes: dict[str, tuple[int, str]] = {}

    # -- the machine's devices ------------------------------------------------------------------

    def _open(self) -> None:
        for config in self.configs:
            device = devices.open_device(config, self.log)
            device.host_work = self.host_work
            self.devices[config.name] = device
            try:
                fingerprint = device.fingerprint()
            except DeviceError as exc:
                self.fingerprints[config.name], self.unavailable[config.name] = None, f"device did not answer: {exc}"
                continue
            fingerprint["identity"] = identity = device_identity(fingerprint, config.name)
            self.fingerprints[config.name], self.unavailable[config.name] = fingerprint, None
            with self.host_work:
                renamed = self.store.upsert_device(identity, fingerprint["fingerprint_id"], config.name,
                                                   device.transport, fingerprint.get("serial"), fingerprint)
            if renamed:
                self.log(f"{config.name}: the same device as {renamed!r} before (identity {identity}); "
                         "its history carries over")

    def _close(self) -> None:
        for device in self.devices.values():
            device.close()
            self.log(f"{device.name}: pushed {device.files_pushed} file(s), {device.bytes_pushed:,} bytes; "
                     f"{device.files_reused} already on the device")

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._open()
            pending = []
            for cell in self.cells:
                item = self._prepare(cell)
                if item.settled:
                    self._settle(item)
                else:
                    pending.append(item)
            repetitions = self.plan.protocol.repetitions
            for seq, (item, launch) in enumerate(rounds(pending, repetitions, self.seed, self.machine)):
                if self.stop.is_set():
                    return
                if launch and seq % len(pending) == 0:  # a long sweep says how far it is between cells
                    self.progress.note(f"{self.machine}: round {launch}/{repetitions} of launches done")
                if item.settled:
                    continue
                blocked = self.unavailable[item.cell.device]
                if blocked:
                    item.record.reason = blocked
                    self._settle(item)
                    continue
                self._launch(item, launch, seq)
        finally:
            self._close()

    def _prepare(self, cell: Any) -> Pending:
        """The cell's record, settled at once when it cannot be measured (no artifact, device
        unavailable, delegate missing, not for the Edge TPU)."""
        build = self.builds[cell.model]
        device = self.devices[cell.device]
        fingerprint = self.fingerprints[cell.device]
        artifact = build.artifacts[cell.variant]
        record = CellRecord(device_name=cell.device, model=cell.model, variant=cell.variant, delegate=cell.delegate,
                            threads=cell.threads, status="failed", artifact_sha256=artifact.sha256,
                            device_fingerprint=fingerprint["fingerprint_id"] if fingerprint else None,
                            device_identity=fingerprint["identity"] if fingerprint else None,
                            protocol_json=self.plan.protocol.to_json(), started_at=now(), warnings=list(build.notes),
                            position=cell.position)
        if self.resumed:
            record.warnings.append(f"measured by `harness sweep --resume` at {record.started_at}")
        for metric, value in (("model_bytes", artifact.bytes), ("model_gzip_bytes", artifact.gzip_bytes),
                              ("sparsity", artifact.sparsity)):
            if value is not None:
                record.metrics[metric] = float(value)
        item = Pending(cell, device, build, record, settled=True)
        if artifact.status != "ok":
            record.reason = f"conversion failed: {artifact.reason}"
        elif self.unavailable[cell.device]:
            record.reason = self.unavailable[cell.device]
        elif cell.delegate not in device.delegates:
            record.status = "skipped"
            record.reason = (f"{cell.device} does not offer the {cell.delegate} delegate "
                             f"(it has: {', '.join(device.delegates)})")
        elif cell.delegate == "edgetpu" and not _compiled_for_edgetpu(record, artifact, build.compiled.get(cell.variant)):
            pass  # skipped or failed, with the reason
        else:
            model = build.compiled[cell.variant].path if cell.delegate == "edgetpu" else artifact.path
            if self.cache is not None:  # a copy by content hash, for `harness gate --confirm` to measure again
                try:
                    model = self.cache.keep_measured(model, record.artifact_sha256)
                except OSError as exc:  # a full or read-only cache costs the confirmation, not the cell
                    record.warnings.append(f"not kept for `gate --confirm`: {exc}")
            key = {"nnapi": "nnapi_accelerator_name", "edgetpu": "device"}.get(cell.delegate)
            options = {key: cell.accelerator} if key and cell.accelerator else {}
            item.job = Job(model=model, delegate=cell.delegate, num_threads=cell.threads, protocol=self.plan.protocol,
                           timeout_s=device.run_timeout_s or self.plan.timeouts.run_timeout_s,
                           inputs=build.eval_path, delegate_options=options)
            if options:
                record.details = {**(record.details or {}), "delegate_options": options}
            item.settled = False
        return item

    def _launch(self, item: Pending, launch: int, seq: int) -> None:
        """One launch of a cell; the cell is settled when it fails or when its last launch is in."""
        device, label = item.device, item.cell.label()
        self.progress.start(f"{label} launch {launch + 1}/{self.plan.protocol.repetitions}")
        job = item.job if not item.reports else replace(item.job, inputs=None)  # accuracy once, in the first
        started = now()
        item.attempts += 1
        if item.attempts == 1:  # a cell starts with its first launch, whenever the order reaches it
            item.record.started_at = started
        try:
            if device.cooldown is not None:
                _cool(device, item.record)
            with self.host_work if self.on_host else contextlib.nullcontext():
                report = device.measure(job)
        except DeviceError as exc:
            self.progress.launch_done()
            self._fault(item, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - one cell's bug must not end every device's work
            self.progress.launch_done()
            self.log(f"{label}: launch {launch + 1} raised {type(exc).__name__}:\n{traceback.format_exc()}")
            item.record.reason = f"launch {launch + 1} raised {type(exc).__name__}: {exc}"
            self._settle(item)
            return
        self.progress.launch_done()
        self.strikes[item.cell.device] = (0, "")
        report["_launch"] = LaunchRecord(launch, list(report.get("samples_us") or []), seq, started,
                                         median_known=report.get("runtime", {}).get("name") != "benchmark_model")
        item.reports.append(report)
        if report.get("error") or len(item.reports) == self.plan.protocol.repetitions:
            self._settle(item)

    def _fault(self, item: Pending, reason: str) -> None:
        """A device fault (unreachable, timed out) fails the cell, whatever launches it had; faults in
        a row (`quarantine_after`) quarantine the device for the rest of the sweep."""
        name = item.cell.device
        strikes = self.strikes.get(name, (0, ""))[0] + 1
        self.strikes[name] = (strikes, reason)
        done = f" (after {len(item.reports)} of {self.plan.protocol.repetitions} launches)" if item.reports else ""
        item.record.reason = reason + done
        self._settle(item)
        if strikes == self.plan.quarantine_after and self.unavailable[name] is None:
            self.unavailable[name] = (f"{name} quarantined after {strikes} consecutive device failures "
                                      f"(last: {reason})")
            self.log(self.unavailable[name])

    def _settle(self, item: Pending) -> None:
        item.settled = True
        self.progress.skip_launches(self.plan.protocol.repetitions - item.attempts)  # those it will not need
        if item.reports:
            with self.host_work:
                _record_reports(item.record, item.reports, item.build)
        self._store(item)

    def _store(self, item: Pending) -> None:
        item.record.finished_at = now()
        with self.host_work:
            self.store.add_cell(self.run_id, item.record, replace=self.resumed)
        self.progress.cell_done(item.cell.label(), _outcome(item.record, item.build.labeled))


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
    from harness.sweep import cool_down

    def read_temp() -> float | None:
        return device.telemetry().get("temp_c")

    try:
        waited, warning = cool_down(read_temp, device.cooldown)
    except DeviceError as exc:
        waited, warning = 0.0, f"cool-down skipped: cannot read the temperature: {exc}"
    record.metrics["cooldown_wait_s"] = record.metrics.get("cooldown_wait_s", 0.0) + waited
    if warning and warning not in record.warnings:
        record.warnings.append(warning)


def _record_reports(record: CellRecord, reports: list[dict[str, Any]], build: ModelBuild) -> None:
    """The cell's record from its launches' reports: runtime, telemetry before the first and after
    the last, the first launch's description of the model, every launch's timings, and accuracy
    from the launch that ran the evaluation set. A launch that reported an error fails the cell; a
    cell that already has its reason (a device fault) keeps it and stays failed."""
    first, last = reports[0], reports[-1]
    runtime = first.get("runtime") or {}
    record.runtime_name, record.runtime_version = runtime.get("name"), runtime.get("version")
    record.runner_sha256 = first.get("runner_sha256")
    for when, report in (("before", first), ("after", last)):
        t = (report.get("telemetry") or {}).get(when) or {}
        setattr(record, f"temp_{when}_c", t.get("temp_c"))
        freqs = t.get("freq_khz") or []
        setattr(record, f"freq_{when}_khz", sum(freqs) / len(freqs) if freqs else None)
    for report in reports:
        record.warnings += [w for w in report.get("warnings") or [] if w not in record.warnings]
    details = {k: first.get(k) for k in CELL_DETAILS if first.get(k) is not None}
    details["telemetry"] = {"before": (first.get("telemetry") or {}).get("before"),
                            "after": (last.get("telemetry") or {}).get("after")}
    details["launches"] = [{k: r.get(k) for k in ("init_us", "first_inference_us", "timed_seconds", "warmup")}
                           for r in reports]
    if any(r.get("benchmark_model") is not None for r in reports):  # each run's parsed benchmark_model output
        details["benchmark_model"] = [run for r in reports for run in r.get("benchmark_model") or []]
    record.details = {**(record.details or {}), **details}
    if record.reason is not None:  # failed by a fault after some good launches: stays failed
        return
    failed = next((i for i, r in enumerate(reports) if r.get("error")), None)
    if failed is not None:  # a launch after good ones failed: say which
        error = reports[failed]["error"]
        record.reason = f"{error['stage']} failed: {error['message']}" + (f" (launch {failed + 1})" if failed else "")
        record.details["error"] = error
        return
    record.status = "ok"
    record.launches = [r["_launch"] for r in reports]
    record.metrics.update(_metrics(reports))
    accuracy = next((r["accuracy"] for r in reports if r.get("accuracy") is not None), None)
    source = next((r.get("accuracy_source") for r in reports if r.get("accuracy") is not None), None)
    if accuracy is None:
        return
    if "error" in accuracy:
        record.warnings.append(f"accuracy not measured: {accuracy['error']}")
        return
    try:
        record.metrics.update(score(accuracy, build.labels, build.reference))
        record.accuracy_source = source or "device"
    except ValueError as exc:
        record.warnings.append(f"accuracy not scored: {exc}")


def _metrics(reports: list[dict[str, Any]]) -> dict[str, float]:
    """Latency over every launch's timings; init and first inference as the median launch's;
    peak memory the largest; coverage from the first launch; the spread of the launch medians."""
    import numpy as np

    pooled = {**reports[0], "samples_us": [x for r in reports for x in r["samples_us"]]}
    for name in ("init_us", "first_inference_us", "rss_before_mb", "rss_after_init_mb"):
        values = [r[name] for r in reports if r.get(name) is not None]
        pooled[name] = float(np.median(values)) if values else None
    peaks = [r["peak_rss_mb"] for r in reports if r.get("peak_rss_mb") is not None]
    pooled["peak_rss_mb"] = max(peaks) if peaks else None
    metrics = runner_metrics(pooled)
    centers = [float(np.median(r["samples_us"])) for r in reports if r["samples_us"]]
    metrics["launches"] = float(len(reports))
    if len(centers) > 1 and min(centers) > 0:
        metrics["launch_cv"] = float(np.std(np.log(centers), ddof=1))
    return metrics


def _outcome(record: CellRecord, labeled: bool) -> str:
    if record.status != "ok":
        return f"{record.status.upper()}: {record.reason}"
    m = record.metrics
    text = f"p50 {m['latency_p50_us'] / 1000:.3f} ms ({int(m['samples_count'])} runs in {int(m['launches'])} launches)"
    if labeled and "top1_accuracy" in m:
        text += f", top-1 {100 * m['top1_accuracy']:.2f} %"
    elif "top1_agreement" in m:
        text += f", agreement {100 * m['top1_agreement']:.0f} %"
    return text
