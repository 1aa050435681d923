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
import sqlite3
import threading
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import devices
from devices.base import DeviceError, Job, device_identity
from harness.build import ModelBuild
from harness.config import Plan
from harness.errors import DeviceTimeout, MachineLost
from harness.edgetpu import NEEDS_FULL_INTEGER, Compiled
from harness.launch_reports import outcome, record_reports
from harness.progress import Progress
from harness.schedule import rounds
from harness.store import CellRecord, LaunchRecord, Store, now

Log = Callable[[str], None]


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
                 resumed: bool, host_work: threading.RLock, on_host: bool, cache: Any = None,
                 opener: Callable[[Any, Log], Any] = devices.open_device):
        self.machine, self.configs, self.cells, self.builds, self.plan = machine, configs, cells, builds, plan
        self.store, self.run_id, self.seed, self.progress, self.log = store, run_id, seed, progress, log
        self.stop, self.resumed, self.host_work, self.on_host, self.cache = stop, resumed, host_work, on_host, cache
        self.opener = opener  # devices.open_device, or a lab machine's agent (lab/dispatch.py)
        self.devices: dict[str, Any] = {}
        self.fingerprints: dict[str, dict | None] = {}
        self.unavailable: dict[str, str | None] = {}
        self.strikes: dict[str, tuple[int, str]] = {}

    # -- the machine's devices ------------------------------------------------------------------

    def _open(self) -> None:
        for config in self.configs:
            self.fingerprints[config.name], self.unavailable[config.name] = None, None
            try:
                device = self.opener(config, self.log)
            except Exception as exc:  # noqa: BLE001 - a transport's bug costs its device's cells, not the sweep
                self._raised(f"{config.name}: opening the device", exc)
                self.unavailable[config.name] = f"device could not be opened: {_what(exc)}"
                continue
            device.host_work = self.host_work
            self.devices[config.name] = device
            try:
                fingerprint = device.fingerprint()
            except DeviceError as exc:
                self.unavailable[config.name] = f"device did not answer: {exc}"
                continue
            except Exception as exc:  # noqa: BLE001
                self._raised(f"{config.name}: reading its fingerprint", exc)
                self.unavailable[config.name] = f"device fingerprint failed: {_what(exc)}"
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
            try:
                device.close()
            except Exception as exc:  # noqa: BLE001 - every device is closed, whatever one of them raises
                self._raised(f"{device.name}: closing", exc)
                continue
            self.log(f"{device.name}: pushed {device.files_pushed} file(s), {device.bytes_pushed:,} bytes; "
                     f"{device.files_reused} already on the device")

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._open()
            pending = []
            for cell in self.cells:
                item = self._guarded(cell, "preparing", self._prepare)
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

    def _raised(self, what: str, exc: BaseException) -> None:
        self.log(f"{what} raised {type(exc).__name__}:\n{''.join(traceback.format_exception(exc))}")

    def _guarded(self, cell: Any, step: str, action: Callable[[Any], Pending]) -> Pending:
        """`action(cell)`; when it raises anything but an interrupt, the cell is a failed record
        naming the step and the exception (the traceback goes to the log), and the sweep goes on."""
        try:
            return action(cell)
        except Exception as exc:  # noqa: BLE001 - one cell's bug must not end every device's work
            self._raised(f"{cell.label()}: {step}", exc)
            record = CellRecord(device_name=cell.device, model=cell.model, variant=cell.variant,
                                delegate=cell.delegate, threads=cell.threads, status="failed",
                                reason=f"{step} raised {_what(exc)}", protocol_json=self.plan.protocol.to_json(),
                                started_at=now(), position=cell.position)
            return Pending(cell, self.devices.get(cell.device), self.builds.get(cell.model), record, settled=True)

    def _prepare(self, cell: Any) -> Pending:
        """The cell's record, settled at once when it cannot be measured (no artifact, device
        unavailable, delegate missing, not for the Edge TPU)."""
        build = self.builds[cell.model]
        device = self.devices.get(cell.device)  # None when it could not be opened (then unavailable)
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
                              ("sparsity", artifact.sparsity), ("calibration_examples", artifact.calibration_examples),
                              ("fine_tune_examples", artifact.fine_tune_examples)):
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
            if getattr(device, "lab_host", None):  # measured by an agent on that lab host (lab/)
                record.details = {**(record.details or {}), "lab_host": device.lab_host}
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
            self._fault(item, exc)
            return
        except Exception as exc:  # noqa: BLE001 - one cell's bug must not end every device's work
            self.progress.launch_done()
            self._raised(f"{label}: launch {launch + 1}", exc)
            item.record.reason = f"launch {launch + 1} raised {_what(exc)}"
            self._settle(item)
            return
        self.progress.launch_done()
        self.strikes[item.cell.device] = (0, "")
        report["_launch"] = LaunchRecord(launch, list(report.get("samples_us") or []), seq, started,
                                         median_known=report.get("runtime", {}).get("name") != "benchmark_model")
        item.reports.append(report)
        if report.get("error") or len(item.reports) == self.plan.protocol.repetitions:
            self._settle(item)

    def _fault(self, item: Pending, exc: DeviceError) -> None:
        """A device error fails the cell, whatever launches it had. Device faults in a row
        (`quarantine_after`) quarantine the device for the rest of the sweep. A timeout is a fault
        only when the device then fails a health probe: a slow model on a healthy board is the
        model's failure, and a few of them in a row must not take the board out of the sweep."""
        name = item.cell.device
        reason = str(exc)
        done = f" (after {len(item.reports)} of {self.plan.protocol.repetitions} launches)" if item.reports else ""
        if isinstance(exc, MachineLost):  # the whole machine is gone: its other cells fail with the same reason
            item.record.reason = reason + done
            self._settle(item)
            for device in self.unavailable:
                self.unavailable[device] = reason
            self.log(f"{self.machine}: {reason}")
            return
        if isinstance(exc, DeviceTimeout):
            healthy, detail = self._probe(item.device)
            if healthy:
                item.record.reason = (reason + done + "; the device answered a health probe right after, so the "
                                      "model was too slow, not the device: not counted toward quarantine")
                self._settle(item)
                return
            reason += f"; then the device failed a health probe: {detail}"
        strikes = self.strikes.get(name, (0, ""))[0] + 1
        self.strikes[name] = (strikes, reason)
        item.record.reason = reason + done
        self._settle(item)
        if strikes == self.plan.quarantine_after and self.unavailable[name] is None:
            self.unavailable[name] = (f"{name} quarantined after {strikes} consecutive device failures "
                                      f"(last: {reason})")
            self.log(self.unavailable[name])

    def _probe(self, device: Any) -> tuple[bool, str]:
        """(whether the device answers a health probe, what it said)."""
        try:
            health = device.health()
        except Exception as exc:  # noqa: BLE001 - a probe that raises is a device that did not answer
            return False, _what(exc)
        return bool(health.reachable), health.detail or ("answered" if health.reachable else "no answer")

    def _settle(self, item: Pending) -> None:
        item.settled = True
        self.progress.skip_launches(self.plan.protocol.repetitions - item.attempts)  # those it will not need
        if item.reports:
            with self.host_work:
                kept = dict(item.record.metrics)
                try:
                    record_reports(item.record, item.reports, item.build)
                except Exception as exc:  # noqa: BLE001 - a parser's or scorer's bug fails this cell only
                    self._raised(f"{item.cell.label()}: reading its reports", exc)
                    _fail(item.record, f"reading the launches' reports raised {_what(exc)}", kept)
        self._store(item)

    def _store(self, item: Pending) -> None:
        """The cell's rows, in one transaction. A record the store refuses (a value it cannot hold)
        is stored again as a failed cell saying why; a store that cannot be written at all (disk
        full, locked past the busy timeout) is the coordinator's failure, and ends the run."""
        record = item.record
        record.finished_at = now()
        with self.host_work:
            try:
                self.store.add_cell(self.run_id, record, replace=self.resumed)
            except (sqlite3.IntegrityError, sqlite3.InterfaceError, TypeError, ValueError, OverflowError) as exc:
                self._refused(item, exc)  # a value json or SQLite cannot hold; other sqlite3 errors end the run
        labeled = bool(item.build and item.build.labeled)
        self.progress.cell_done(item.cell.label(), outcome(record, labeled))

    def _refused(self, item: Pending, exc: BaseException) -> None:
        self._raised(f"{item.cell.label()}: storing", exc)
        _fail(item.record, f"storing the cell raised {_what(exc)}", {})
        item.record.details, item.record.warnings = None, []
        self.store.add_cell(self.run_id, item.record, replace=self.resumed)


def _what(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _fail(record: CellRecord, reason: str, metrics: dict[str, float]) -> None:
    """Turn a record into a failed one with `reason`, keeping only `metrics` (what was known before)."""
    record.status, record.reason, record.launches = "failed", reason, []
    record.metrics = dict(metrics)
    record.accuracy_source = None


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
