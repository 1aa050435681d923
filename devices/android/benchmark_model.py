"""TFLite's `benchmark_model` as the driver that measures on a phone.

One launch = one run of `taskset <cpu_mask> benchmark_model --graph=…` with the plan's protocol
and the cell's delegate; its average is the launch's one sample, its parsed output is kept. A cell
is `repetitions` launches, interleaved with other cells' by the sweep. The tool's own error lines
are the reason of a failed cell. The binary is pushed by sha256 from the host, or named
`on_device:/path` when it is already on the phone; its hash is the runtime's version.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Mapping

from devices.base import ExecResult, Job
from harness.errors import DeviceError, RuntimeMissing

DELEGATES = ("cpu", "xnnpack", "gpu", "nnapi")
ON_DEVICE = "on_device:"
EXIT_NOT_FOUND = 127  # the shell could not find the command
BENCHMARK_MODEL_HINT = (
    "download TFLite's prebuilt benchmark tool for the phone's ABI (android_aarch64_benchmark_model, "
    "linked from https://ai.google.dev/edge/litert/models/measurement) or build "
    "//tensorflow/lite/tools/benchmark:benchmark_model with --config=android_arm64, then set "
    "`benchmark_model: PATH` (pushed by the harness) or `benchmark_model: on_device:/data/local/tmp/benchmark_model`")
# Delegate names as benchmark_model's "Replacing … with delegate (NAME)" line prints them.
DELEGATE_NAMES = {"xnnpack": ("TfLiteXNNPackDelegate",), "gpu": ("TfLiteGpuDelegate", "TfLiteGpuDelegateV2"),
                  "nnapi": ("TfLiteNnapiDelegate",)}


def taskset(cpu_mask: str | None) -> list[str]:
    """The `taskset MASK` prefix of a command (toybox's taskset takes bare hex), or nothing."""
    return ["taskset", cpu_mask.lower().removeprefix("0x")] if cpu_mask else []


def delegate_flags(job: Job) -> list[str]:
    """benchmark_model's flags choosing the cell's delegate (and its options)."""
    if job.delegate == "cpu":
        return ["--use_xnnpack=false"]  # built-in kernels: the default XNNPACK delegate off
    if job.delegate == "xnnpack":
        return ["--use_xnnpack=true"]
    if job.delegate == "gpu":
        return ["--use_gpu=true"]
    if job.delegate == "nnapi":
        accelerator = job.delegate_options.get("nnapi_accelerator_name")
        return ["--use_nnapi=true"] + ([f"--nnapi_accelerator_name={accelerator}"] if accelerator else [])
    raise DeviceError(f"benchmark_model has no {job.delegate!r} delegate (it has: {', '.join(DELEGATES)})")


def benchmark_argv(binary: str, graph: str, job: Job, cpu_mask: str | None) -> list[str]:
    """The benchmark_model command line of one repetition of a cell."""
    p = job.protocol
    return taskset(cpu_mask) + [
        binary, f"--graph={graph}", f"--num_threads={job.num_threads}", f"--warmup_runs={p.warmup_runs}",
        f"--warmup_min_secs={p.warmup_min_secs:g}", f"--num_runs={p.num_runs}", f"--min_secs={p.min_secs:g}",
        f"--max_secs={p.max_secs:g}", "--report_peak_memory_footprint=true", *delegate_flags(job)]


def report_from_runs(runs: list[dict[str, Any]], delegate: str) -> dict[str, Any]:
    """The runner-schema report of a cell from its repetitions' parsed outputs: each repetition's
    average is one sample; init, first inference and warm-up are medians over the repetitions."""

    def median(key: str) -> float | None:
        values = [r[key] for r in runs if r.get(key) is not None]
        return statistics.median(values) if values else None

    samples = [r["avg_us"] if r.get("avg_us") is not None else r["inference_avg_us"] for r in runs]
    report: dict[str, Any] = {
        "samples_us": samples, "init_us": median("init_us"), "first_inference_us": median("first_inference_us"),
        "warmup": {"avg_us": median("warmup_avg_us")}, "warnings": [], "error": None,
        "benchmark_model": runs}
    peaks = [r["peak_memory_mb"] for r in runs if r.get("peak_memory_mb") is not None]
    if peaks:
        report["peak_rss_mb"] = max(peaks)
    lines = runs[0].get("delegates") or []
    if delegate in DELEGATE_NAMES:
        applied = [d for d in lines if d["name"] in DELEGATE_NAMES[delegate]]
        if applied:
            report["coverage"] = {"nodes_delegated": sum(d["nodes_delegated"] for d in applied),
                                  "nodes_total": sum(d["nodes_total"] for d in applied),
                                  "partitions": sum(d["partitions"] or 0 for d in applied)}
        else:
            report["coverage"] = None
            report["warnings"].append(f"{delegate} was requested but benchmark_model reported no node replaced "
                                      f"by it (the model ran on the CPU)")
    return report


def tool_failure(result: ExecResult, parsed: Mapping[str, Any]) -> str:
    """Why a benchmark_model run failed, in the tool's own words."""
    errors = list(parsed.get("errors") or [])
    if not errors:
        tail = [line.strip() for line in result.stdout.splitlines() if line.strip()][-5:]
        errors = tail or ["(no output)"]
    return f"benchmark_model exited {result.exit_code}: " + " | ".join(errors)


class BenchmarkModel:
    """The tool on one phone: where its binary is, and one launch's argv and report. It runs
    nothing itself but through `transport` (push / run), which the device shares with it."""

    def __init__(self, transport: Any, configured: str | None, cpu_mask: str | None, probe_timeout_s: float):
        self.transport = transport
        self.name = transport.name
        self.configured, self.cpu_mask, self.probe_timeout_s = configured, cpu_mask, probe_timeout_s
        self._binary: tuple[str, str | None] | None = None  # (path on the phone, sha256)

    def binary(self) -> tuple[str, str | None]:
        """(path on the phone, sha256) of benchmark_model, pushed by hash when it comes from the host;
        RuntimeMissing with the way to get it when there is none."""
        if self._binary is not None:
            return self._binary
        if not self.configured:
            raise RuntimeMissing(f"{self.name}: no benchmark_model configured", BENCHMARK_MODEL_HINT)
        if self.configured.startswith(ON_DEVICE):
            path = self.configured[len(ON_DEVICE):]
            result = self.transport.run(["sha256sum", path], self.probe_timeout_s)
            if result.exit_code != 0:
                raise RuntimeMissing(f"{self.name}: no benchmark_model at {path} on the phone "
                                     f"({result.stdout.strip() or 'exit ' + str(result.exit_code)})",
                                     BENCHMARK_MODEL_HINT)
            digest = result.stdout.split()[0] if result.stdout.split() else None
            self._binary = (path, digest)
        else:
            local = Path(self.configured).expanduser()
            self._binary = (self.transport.push(local, executable=True), self.transport.sha256(local))
        return self._binary

    def runtime(self) -> dict[str, Any]:
        digest = self.binary()[1]
        return {"name": "benchmark_model", "version": f"sha256:{digest[:12]}" if digest else None}

    def launch_argv(self, job: Job) -> list[str]:
        """One launch's command line, the binary and the model pushed."""
        return benchmark_argv(self.binary()[0], self.transport.push(job.model), job, self.cpu_mask)

    def launch_report(self, job: Job, argv: list[str], result: ExecResult) -> dict[str, Any]:
        """The launch's report from the tool's output: its average as the one sample, or its
        error lines as the error; RuntimeMissing when the phone could not start it."""
        from harness.parsers.benchmark_model import parse

        parsed = parse(result.stdout)
        digest = self.binary()[1]
        if result.exit_code == EXIT_NOT_FOUND:
            raise RuntimeMissing(f"{self.name}: cannot run {argv[len(taskset(self.cpu_mask))]}: "
                                 f"{result.stdout.strip()}", BENCHMARK_MODEL_HINT)
        if result.exit_code != 0 or (parsed.get("avg_us") is None and parsed.get("inference_avg_us") is None):
            return {"error": {"stage": "benchmark_model", "message": tool_failure(result, parsed)},
                    "benchmark_model": [parsed], "runtime": self.runtime(), "runner_sha256": digest, "warnings": []}
        report = report_from_runs([parsed], job.delegate)
        report["runtime"] = self.runtime()
        report["runner_sha256"] = digest
        report["argv"] = argv
        return report
