"""The sweep: plan -> cells (model x variant x device x delegate x threads) -> artifacts -> one
worker per machine, machines in parallel; on a machine, every cell's launches interleaved, one at
a time (harness/measure.py) -> cool-down, push, run, parse -> stored rows.

A failure is data: a variant that did not convert, a delegate a device does not offer, a runner
that failed or timed out, a device that does not answer, each becomes a stored cell with its
status and reason, and the sweep goes on."""

from __future__ import annotations

import json
import platform
import secrets
import sqlite3
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import devices
from devices.base import Cooldown
from harness import __version__
from harness.artifacts import Cache
from harness.build import build_models
from harness.config import Inventory, Plan, Target
from harness.edgetpu import compile_for_cells
from harness.errors import SweepInterrupted
from harness.lock import LOCAL_MACHINE
from harness.measure import MachineWorker
from harness.progress import Progress
from harness.provenance import git_commit, library_versions
from harness.store import Store

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
    position: int = 0  # its place in the plan's order
    lab_host: str | None = None  # the lab host the device is attached to (inventory `lab_host:`), if any

    def label(self) -> str:
        delegate = f"{self.delegate}({self.accelerator})" if self.accelerator else self.delegate
        where = f"{self.device}@{self.lab_host}" if self.lab_host else self.device
        return f"{self.model} {self.variant} on {where} {delegate} {self.threads}t"


def plan_cells(plan: Plan, targets: Sequence[Target], inventory: Inventory) -> list[Cell]:
    """Cells in plan order (the report's order). They are not measured in it: on each machine the
    launches of all its cells are interleaved (harness/schedule.py), so the ratios the report shows
    (speed-up over fp32 on the same target) compare cells measured across the same spell of time."""
    cells = []
    for target in targets:
        config = inventory.get(target.device)
        delegates = target.delegates or config.delegates
        for entry in plan.models:
            for delegate in delegates:
                accelerator = {"nnapi": target.nnapi_accelerator_name,
                               "edgetpu": getattr(config, "edgetpu_device", None)}.get(delegate)
                for threads in target.threads or plan.threads:
                    cells += [Cell(entry.name, v, target.device, delegate, threads, accelerator, len(cells) + i,
                                   inventory.lab_hosts.get(target.device))
                              for i, v in enumerate(entry.variants)]
    return cells


def run_sweep(inventory: Inventory, plan: Plan, targets: Sequence[Target], store: Store, cache: Cache,
              log: Log, argv: Sequence[str] = (), progress_stream=None, resume: str | None = None,
              lab: Any = None) -> str:
    """Build, measure and store every cell of the plan; returns the run id. With `resume`, the cells
    of that run that did not succeed (failed, or never reached) are measured again, in that run.
    With `lab` (lab.dispatch.Lab), the machines on lab hosts are measured by their agents there;
    their workers stay here, so scheduling, scoring and the store are the same as in process."""
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
        seed = store.run(run_id)["seed"] or 0
    else:
        commit, dirty = git_commit()
        seed = secrets.randbelow(2 ** 31)
        run_id = store.create_run(
            harness_version=__version__, git_commit=commit, git_dirty=int(dirty), plan_name=plan.name,
            plan_path=plan.source, plan_sha256=plan.sha256, inventory_path=inventory.source, host=platform.node(),
            versions_json=json.dumps(library_versions()), argv_json=json.dumps(list(argv)), seed=seed)
    by_machine: dict[str, list[str]] = {}
    for name in dict.fromkeys(c.device for c in cells):
        by_machine.setdefault(inventory.machine(name), []).append(name)
    for machine, names in by_machine.items():
        if len(names) > 1:
            log(f"{', '.join(names)} are one machine ({machine}): one worker measures them, one launch at a time")
    repetitions = plan.protocol.repetitions
    log(f"run {run_id}: {len(cells)} cells x {repetitions} launches on {len(by_machine)} machine(s), "
        f"launches interleaved in a random order (seed {seed})")
    progress = Progress(len(cells), progress_stream or sys.stderr, launches=len(cells) * repetitions)
    stop = threading.Event()
    host_work = threading.RLock()  # launches on this host vs host-side work of the other workers
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(by_machine)), thread_name_prefix="machine") as pool:
            futures = [pool.submit(MachineWorker(machine, [inventory.get(n) for n in names],
                                                 [c for c in cells if c.device in names], builds, plan, store, run_id,
                                                 seed, progress, log, stop, resume is not None, host_work,
                                                 on_host=machine == LOCAL_MACHINE, cache=cache,
                                                 opener=lab.opener(machine) if lab and machine in lab.machines
                                                 else devices.open_device).run)
                       for machine, names in by_machine.items()]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                stop.set()  # the workers finish the launch in hand and stop
                raise
    except KeyboardInterrupt:  # the run row says how it ended; the cells stored so far stay
        store.finish_run(run_id, "interrupted")
        raise
    except Exception as exc:  # the coordinator itself failed (a cell's failure never reaches here)
        log(f"run {run_id} ended by {type(exc).__name__}:\n{''.join(traceback.format_exception(exc))}")
        try:
            store.finish_run(run_id, "interrupted")
        except sqlite3.Error as again:  # the store that failed may not take the status either
            log(f"run {run_id}: could not mark it interrupted: {again}")
        raise SweepInterrupted(run_id, exc) from exc
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
