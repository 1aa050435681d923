"""Android devices over ADB: TFLite's `benchmark_model` measures, the harness parses.

The device composes three parts (devices/android/): the transport (`ADBTransport`: connection,
keys, push by sha256, pull, run with an exit marker and orphan kill, retries), the measuring
driver (`BenchmarkModel`: one launch = one run of `taskset <cpu_mask> benchmark_model …`, its
average the launch's sample) and the Android output parsers (fingerprint, telemetry).

Accuracy: every delegate's outputs of the evaluation set come from that delegate on the phone.
With `python:` in the inventory the Python runner computes them; otherwise benchmark_model does,
from input files to an output file (devices/android/outputs.py). Only when the phone cannot (a
build without --output_filepath, a delegate that fails, a model whose fixed batch would need too
many runs) the outputs come from this host's reference kernels: `accuracy_source: host` and a
warning saying why.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from devices.android.benchmark_model import DELEGATES, ON_DEVICE, BenchmarkModel
from devices.android.outputs import PhoneOutputs, Unavailable
from devices.android.parsers import (PLAUSIBLE_C, THERMAL_STATUS, cpu_count, parse_getprop, parse_thermal_zones,
                                     parse_thermalservice, sections)
from devices.android.transport import ADBTransport
from devices.base import (RUNNER_PATH, Cooldown, ExecResult, Health, Job, fingerprint_id, parse_runner_json,
                          score_on_host)
from harness.errors import ConfigError, DeviceError, RuntimeMissing


@dataclass(frozen=True)
class ADBConfig:
    """Inventory keys of a `transport: adb` device."""

    name: str
    transport: str = "adb"
    serial: str | None = None  # USB serial number (as `adb devices` lists it)
    host: str | None = None  # ADB over TCP
    port: int = 5555
    adbkey: str = "~/.android/adbkey"
    benchmark_model: str | None = None  # host path of the Android binary, or on_device:/path
    cpu_mask: str | None = None  # hex mask for taskset, e.g. f0 for the big cores
    python: str | None = None  # a Python on the phone, for accuracy with the runner
    workdir: str = "/data/local/tmp/harness"
    delegates: tuple[str, ...] = DELEGATES
    cooldown: Cooldown | None = None
    connect_timeout_s: float = 10.0
    auth_timeout_s: float = 30.0  # how long the phone's "Allow USB debugging?" prompt is waited for
    run_timeout_s: float | None = None  # default: the plan's timeouts.run_timeout_s
    link_timeout_s: float = 20.0
    keepalive_s: float = 5.0
    retries: int = 2
    retry_backoff_s: float = 1.0
    description: str | None = None

    def check(self, source: str, where: str) -> None:
        """What the generic parser cannot see: one address, a hex mask, the binary's file."""
        if (self.serial is None) == (self.host is None):
            raise ConfigError(source, where, "give exactly one of `serial` (USB) or `host` (ADB over TCP)")
        for delegate in self.delegates:
            if delegate not in DELEGATES:
                raise ConfigError(source, f"{where}.delegates", f"{delegate!r} is not a benchmark_model delegate "
                                  f"on Android (known: {', '.join(DELEGATES)})")
        if self.cpu_mask is not None and (not re.fullmatch(r"(0x)?[0-9a-fA-F]+", self.cpu_mask)
                                          or int(self.cpu_mask, 16) == 0):
            raise ConfigError(source, f"{where}.cpu_mask", f"expected a non-zero hex CPU mask such as f0, "
                              f"got {self.cpu_mask!r}")
        if self.benchmark_model and not self.benchmark_model.startswith(ON_DEVICE):
            path = Path(self.benchmark_model).expanduser()
            if not path.is_file():
                raise ConfigError(source, f"{where}.benchmark_model", f"no such file: {path} (for a binary "
                                  f"already on the phone write {ON_DEVICE}/data/local/tmp/benchmark_model)")
        if not self.workdir.startswith("/"):
            raise ConfigError(source, f"{where}.workdir", f"expected an absolute path on the device, got {self.workdir!r}")


class ADBDevice:
    """A phone: the device protocol (devices/base.py `Device`) over a transport and a driver."""

    transport = "adb"
    accelerator = None

    TELEMETRY_SCRIPT = (
        "for z in /sys/class/thermal/thermal_zone*; do "
        "echo \"$z|$(cat $z/type 2>/dev/null)|$(cat $z/temp 2>/dev/null)\"; done; "
        "echo '@@ freq'; cat /sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq 2>/dev/null; "
        "echo '@@ thermalservice'; dumpsys thermalservice 2>/dev/null; true")
    FINGERPRINT_SCRIPT = (
        "getprop; echo '@@ uname'; uname -m; uname -r; echo '@@ possible'; "
        "cat /sys/devices/system/cpu/possible 2>/dev/null; echo '@@ governor'; "
        "cat /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor 2>/dev/null; true")

    def __init__(self, config: ADBConfig, log: Callable[[str], None] | None = None):
        self.adb = ADBTransport(config, log)
        self.config, self.name, self.log = config, config.name, self.adb.log
        self.delegates, self.cooldown, self.run_timeout_s = self.adb.delegates, config.cooldown, config.run_timeout_s
        self.probe_timeout_s = self.adb.probe_timeout_s
        self.tool = BenchmarkModel(self.adb, config.benchmark_model, config.cpu_mask, self.probe_timeout_s)
        self.outputs = PhoneOutputs(self.adb, self.tool, config.cpu_mask)
        # held while this host does work for the device (the sweep sets a lock shared with the
        # launches timed on this host, so that work never runs beside them)
        self.host_work: Any = contextlib.nullcontext()
        self._host_outputs: dict[str, dict] = {}

    # -- the transport's, as the protocol names them ----------------------------------------------

    @property
    def address(self) -> str:
        return self.adb.address

    @property
    def bytes_pushed(self) -> int:
        return self.adb.bytes_pushed

    @property
    def files_pushed(self) -> int:
        return self.adb.files_pushed

    @property
    def files_reused(self) -> int:
        return self.adb.files_reused

    def push(self, local: Path, executable: bool = False) -> str:
        return self.adb.push(local, executable)

    def run(self, argv, timeout_s: float) -> ExecResult:
        return self.adb.run(argv, timeout_s)

    def close(self) -> None:
        self.adb.close()

    def benchmark_binary(self) -> tuple[str, str | None]:
        return self.tool.binary()

    # -- measuring --------------------------------------------------------------------------------

    def measure(self, job: Job) -> dict[str, Any]:
        """One launch: one run of benchmark_model, whose average is the launch's one sample; with
        job.inputs, then the evaluation set's outputs on the same delegate (outside the timed run)."""
        argv = self.tool.launch_argv(job)
        before = self.telemetry()
        report = self.tool.launch_report(job, argv, self.run(argv, job.timeout_s))
        report["telemetry"] = {"before": before, "after": None}
        if report["error"]:
            return report
        report["telemetry"]["after"] = self.telemetry()
        status = before.get("thermal_status")
        if status:
            report["warnings"].append(f"Android thermal status was {THERMAL_STATUS[min(status, 6)]} ({status}) "
                                      "before measuring: the phone may have been throttling")
        if job.inputs is not None:
            self._accuracy(job, report)
        return report

    def _accuracy(self, job: Job, report: dict[str, Any]) -> None:
        """Outputs of the evaluation set from this delegate on the phone: its Python runner when
        the inventory names one, else benchmark_model's input and output files; from this host's
        reference kernels only when the phone cannot (accuracy_source host, with the reason)."""
        try:
            block = self._runner_outputs(job) if self.config.python else self.outputs.run(job, self.host_work)
        except Unavailable as exc:
            tool = "Python runner" if self.config.python else "benchmark_model"
            report["warnings"].append(f"accuracy scored on the host: the phone's {tool} could not: {exc}")
        else:
            report["accuracy"], report["accuracy_source"] = block, "device"
            return
        key = self.adb.sha256(job.model)
        if key not in self._host_outputs:
            with self.host_work:  # the reference kernels run on this host: never beside a launch timed here
                self._host_outputs[key] = score_on_host(job.model, job.inputs, job.timeout_s)
        report["accuracy"], report["accuracy_source"] = self._host_outputs[key], "host"

    def _runner_outputs(self, job: Job) -> dict[str, Any]:
        """The accuracy block from devices/runner.py run by the phone's Python; Unavailable why not."""
        argv = [self.config.python, self.push(RUNNER_PATH), "--graph", self.push(job.model),
                f"--delegate={job.delegate}", f"--num_threads={job.num_threads}", "--warmup_runs=0",
                "--warmup_min_secs=0", "--num_runs=1", "--min_secs=0", "--inputs", self.push(job.inputs)]
        try:
            runner = parse_runner_json(self.run(argv, job.timeout_s))
        except DeviceError as exc:
            raise Unavailable(str(exc)) from None
        accuracy = runner.get("accuracy")
        if accuracy and "error" not in accuracy:
            return accuracy
        raise Unavailable((runner.get("error") or {}).get("message") or (accuracy or {}).get("error") or "no outputs")

    # -- fingerprint, telemetry, health -----------------------------------------------------------

    def telemetry(self) -> dict[str, Any]:
        result = self.run(["sh", "-c", self.TELEMETRY_SCRIPT], self.probe_timeout_s)
        parts = sections(result.stdout, "@@ ")
        zones = parse_thermal_zones(parts.get("", ""))
        thermal = parse_thermalservice(parts.get("thermalservice", ""))
        if not zones:  # no readable zone: the HAL's CPU and skin temperatures
            zones = {f"hal:{name}": t["value_c"] for name, t in thermal["hal_temperatures"].items()
                     if t["type"] in (0, 3) and PLAUSIBLE_C[0] <= t["value_c"] <= PLAUSIBLE_C[1]}
        freqs = [int(x) for x in parts.get("freq", "").split() if x.isdigit()]
        return {"temp_c": max(zones.values()) if zones else None, "zones": zones, "freq_khz": freqs,
                "thermal_status": thermal["status"], "thermal_status_name": thermal["status_name"],
                "time_unix": time.time()}

    def fingerprint(self) -> dict[str, Any]:
        result = self.run(["sh", "-c", self.FINGERPRINT_SCRIPT], self.probe_timeout_s)
        parts = sections(result.stdout, "@@ ")
        props = parse_getprop(parts.get("", ""))
        uname = parts.get("uname", "").split()
        governors = list(dict.fromkeys(parts.get("governor", "").split()))
        soc = " ".join(x for x in (props.get("ro.soc.manufacturer"), props.get("ro.soc.model")) if x) \
            or props.get("ro.board.platform") or props.get("ro.hardware")
        release, sdk = props.get("ro.build.version.release"), props.get("ro.build.version.sdk")
        build = props.get("ro.build.fingerprint")
        info: dict[str, Any] = {
            "machine": uname[0] if uname else None, "system": "Android",
            "kernel": uname[1] if len(uname) > 1 else None,
            "os": f"Android {release} (SDK {sdk}; {build})" if release else None,
            "cpu_model": soc, "cores": cpu_count(parts.get("possible", "")),
            "device_model": " ".join(x for x in (props.get("ro.product.manufacturer"), props.get("ro.product.model")) if x)
            or None, "governor": "/".join(governors) or None, "build_fingerprint": build, "sdk": sdk,
            "abi": props.get("ro.product.cpu.abi"), "serial": props.get("ro.serialno") or props.get("ro.boot.serialno"),
            "adb_address": self.address,
            "board_platform": props.get("ro.board.platform"), "python": None}
        try:
            runtime = self.tool.runtime()
        except RuntimeMissing as exc:
            runtime, info["runtime_error"] = {"name": None, "version": None}, str(exc)
        info["runtime"], info["runtime_version"] = runtime["name"], runtime["version"]
        info["fingerprint_id"] = fingerprint_id(info)
        return info

    def health(self) -> Health:
        try:
            info = self.fingerprint()
            temp = self.telemetry().get("temp_c")
        except DeviceError as exc:
            return Health(reachable=False, detail=str(exc))
        return Health(reachable=True, runtime=info["runtime"], runtime_version=info["runtime_version"],
                      temperature_c=temp, detail=info.get("runtime_error", ""), fingerprint=info)
