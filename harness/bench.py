"""The devices a confirmation measures on: `harness gate --confirm`'s bench (harness/confirm.py
decides what to measure; this opens, launches and stores).

A cell is measured from the content-addressed cache (`<cache>/measured/<sha256>.tflite`, kept by
every sweep) on the device of its inventory name, after checking that the device is still the
identity and runs the runtime the runs measured; every launch is stored with the confirmation
(`confirmations`, `confirmation_launches`)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any, Callable

import numpy as np

import devices
from devices.base import DeviceError, Job, MeasurementProtocol, device_identity
from harness.gate import Verdict
from harness.schema import launch_center, launch_summary
from harness.store import now


class DeviceBench:
    def __init__(self, store: Any, inventory: Any, cache: Any, baseline_run: str, candidate_run: str,
                 log: Callable[[str], None]):
        self.store, self.inventory, self.cache, self.log = store, inventory, cache, log
        self.runs = (baseline_run, candidate_run)
        self.devices: dict[str, Any] = {}
        self.broken: dict[str, str] = {}  # device name -> why it cannot measure anything now
        self.rows: list[dict] = []  # launches since the last `keep`
        self.started: str | None = None
        self.kept: dict[int, int] = {}  # id(verdict) -> its last confirmation row

    def open(self, v: Verdict) -> str | None:
        for arm, side in (("baseline", v.baseline), ("candidate", v.candidate)):
            if self.cache.measured(side.artifact or "") is None:
                return (f"the {arm}'s artifact {(side.artifact or '?')[:12]} is not in {self.cache.root / 'measured'} "
                        "(the cache was cleaned, or another cache)")
        if self._device(v) is None:
            return self.broken[v.device]
        self.rows, self.started = [], now()
        return None

    def launch(self, v: Verdict, arm: str) -> tuple[float, float]:
        device = self.devices[v.device]
        side = v.baseline if arm == "A" else v.candidate
        protocol = MeasurementProtocol(**json.loads(side.protocol)) if side.protocol else MeasurementProtocol()
        job = Job(model=self.cache.measured(side.artifact), delegate=v.delegate, num_threads=v.threads,
                  protocol=replace(protocol, repetitions=1), timeout_s=device.run_timeout_s or 600.0,
                  delegate_options=dict(side.options or {}))
        started, t0 = now(), time.monotonic()
        self.started = self.started or started
        try:
            report = device.measure(job)
        except DeviceError as exc:
            self.broken[v.device] = f"{v.device} failed while confirming: {exc}"
            raise
        seconds = time.monotonic() - t0
        if report.get("error"):
            raise DeviceError(f"{report['error']['stage']} failed: {report['error']['message']}")
        summary = launch_summary(np.asarray(report["samples_us"]),
                                 median_known=(report.get("runtime") or {}).get("name") != "benchmark_model")
        center = launch_center(summary)
        self.rows.append({"arm": "baseline" if arm == "A" else "candidate", "started_at": started,
                          "count": summary["count"], "median_us": summary["median_us"],
                          "mean_us": summary["mean_us"], "seconds": seconds})
        return center, seconds

    def keep(self, v: Verdict, outcome: str, reason: str | None, pairs: int) -> None:
        self.kept[id(v)] = self.store.add_confirmation({
            "baseline_run": self.runs[0], "candidate_run": self.runs[1], "device_identity": v.identity,
            "device_name": v.device, "model": v.model, "variant": v.variant, "delegate": v.delegate,
            "threads": v.threads, "baseline_sha256": v.baseline.artifact, "candidate_sha256": v.candidate.artifact,
            "started_at": self.started or now(), "finished_at": now(), "pairs": pairs,
            "device_seconds": sum(r["seconds"] for r in self.rows), "outcome": outcome, "reason": reason,
            "details_json": json.dumps({"first_pass": v.verdict})}, self.rows)
        self.rows, self.started = [], None

    def settle(self, v: Verdict, outcome: str) -> None:
        if id(v) in self.kept:
            self.store.settle_confirmation(self.kept[id(v)], outcome)

    def _device(self, v: Verdict) -> Any | None:
        """The open device of the cell, checked to be the same identity and runtime as then."""
        if v.device in self.broken:
            return None
        if v.device in self.devices:
            return self.devices[v.device]
        try:
            config = self.inventory.get(v.device)
        except KeyError:
            self.broken[v.device] = f"no device {v.device!r} in {self.inventory.source}"
            return None
        if v.device in self.inventory.lab_hosts:  # reached through a lab's cluster: not confirmed from here
            self.broken[v.device] = (f"{v.device} is attached to lab host {self.inventory.lab_hosts[v.device]}; "
                                     "--confirm measures only devices this host reaches itself (docs/lab.md)")
            return None
        device = devices.open_device(config, self.log)
        try:
            info = device.fingerprint()
        except DeviceError as exc:
            device.close()
            self.broken[v.device] = f"{v.device} is unreachable: {exc}"
            return None
        identity = device_identity(info, v.device)
        runtime = " ".join(x for x in (info.get("runtime"), info.get("runtime_version")) if x) or None
        if identity != v.identity:
            self.broken[v.device] = (f"{v.device} is now device {identity}, not {v.identity} that the runs "
                                     "measured (another board, OS or settings)")
        elif runtime != v.candidate.runtime:
            self.broken[v.device] = f"the runtime changed: {v.candidate.runtime} then, {runtime} now"
        if v.device in self.broken:
            device.close()
            return None
        self.devices[v.device] = device
        return device

    def close(self) -> None:
        for device in self.devices.values():
            device.close()
