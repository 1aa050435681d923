"""What the harness adds to a measurement, measured side by side in one run (LoadGen's "null
backend" question): the median latency the harness reports through the local device (runner in a
subprocess, pushed by hash) against

- a bare `invoke()` loop in this one process, same model, delegate and threads (goal: ratio <= 1.03);
- LiteRT's own `litert-benchmark` (CompiledModel API) on the same model and threads (goal 0.97-1.03);

and the time added per invoke on the tiny digits model (goal <= 10 us). The measurements are
interleaved round by round, so a slow spell of a noisy machine hits one round's pair alike; each
headline figure is the median over rounds of the per-round (paired) ratio or difference. The last
line is `ratio=... litert_ratio=... added_us_per_invoke=...`.

    python benchmarks/overhead.py [--threads 2] [--rounds 5] [--cache-dir results/cache]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices.base import Job, MeasurementProtocol  # noqa: E402
from devices.local import LocalConfig, LocalDevice  # noqa: E402
from harness.artifacts import Cache  # noqa: E402
from harness.build import build_models  # noqa: E402
from harness.config import load_inventory, load_plan  # noqa: E402

PLAN = "models:\n  - model: mobilenet_v2\n    variants: [fp32]\n  - model: digits_cnn\n    variants: [fp32]\n"


def bare_median_us(model: Path, threads: int, protocol: MeasurementProtocol) -> float:
    """The plainest measurement: one process, one interpreter, a timed invoke() loop."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model), num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.random.default_rng(0).random(detail["shape"]).astype(np.float32))
    deadline = time.perf_counter() + protocol.warmup_min_secs
    for i in range(10**9):
        interpreter.invoke()
        if i + 1 >= protocol.warmup_runs and time.perf_counter() >= deadline:
            break
    samples, start = [], time.perf_counter()
    while len(samples) < protocol.num_runs or time.perf_counter() - start < protocol.min_secs:
        t0 = time.perf_counter_ns()
        interpreter.invoke()
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return statistics.median(samples)


def harness_median_us(device: LocalDevice, model: Path, threads: int, protocol: MeasurementProtocol) -> float:
    report = device.measure(Job(model, "xnnpack", threads, protocol, timeout_s=600))
    if report["error"]:
        raise SystemExit(f"runner failed: {report['error']}")
    return statistics.median(report["samples_us"])


def litert_median_us(tool: str, model: Path, threads: int, protocol: MeasurementProtocol, out: Path) -> float:
    subprocess.run([tool, "--model", str(model), "--num_threads", str(threads), "--num_runs", str(protocol.num_runs),
                    "--warmup_runs", str(protocol.warmup_runs), "--result_json", str(out)],
                   check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.read_text())["latency"]["median_ms"] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache-dir", default=str(ROOT / "results/cache"))
    args = parser.parse_args()
    tool = shutil.which("litert-benchmark") or shutil.which("litert-benchmark", path=str(Path(sys.executable).parent))
    if tool is None:
        raise SystemExit("litert-benchmark not found (it ships with ai-edge-litert)")

    with tempfile.TemporaryDirectory() as tmp:
        plan_path = Path(tmp) / "overhead.yaml"
        plan_path.write_text(PLAN)
        builds, _ = build_models(load_plan(plan_path, load_inventory(None)), Cache(args.cache_dir),
                                 lambda m: print(f"build: {m}", file=sys.stderr))
        mobilenet = builds["mobilenet_v2"].artifacts["fp32"].path
        digits = builds["digits_cnn"].artifacts["fp32"].path
        device = LocalDevice(LocalConfig(name="local", workdir=str(Path(tmp) / "device")))
        big = MeasurementProtocol(warmup_runs=5, warmup_min_secs=0.5, num_runs=100, min_secs=2.0, max_secs=60)
        tiny = MeasurementProtocol(warmup_runs=100, warmup_min_secs=0.5, num_runs=2000, min_secs=1.0, max_secs=30)
        rows: dict[str, list[float]] = {k: [] for k in ("harness", "bare", "litert", "tiny_harness", "tiny_bare")}
        for r in range(args.rounds):
            rows["harness"].append(harness_median_us(device, mobilenet, args.threads, big))
            rows["bare"].append(bare_median_us(mobilenet, args.threads, big))
            rows["litert"].append(litert_median_us(tool, mobilenet, args.threads, big, Path(tmp) / "lb.json"))
            rows["tiny_harness"].append(harness_median_us(device, digits, 1, tiny))
            rows["tiny_bare"].append(bare_median_us(digits, 1, tiny))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.1f} us" for k, v in rows.items()),
                  file=sys.stderr)

    med = {k: statistics.median(v) for k, v in rows.items()}

    def paired(a: str, b: str, op) -> float:
        return statistics.median(op(x, y) for x, y in zip(rows[a], rows[b]))

    ratio = paired("harness", "bare", lambda x, y: x / y)
    litert_ratio = paired("harness", "litert", lambda x, y: x / y)
    added = paired("tiny_harness", "tiny_bare", lambda x, y: x - y)
    print(f"MobileNetV2 fp32, XNNPACK, {args.threads} threads; medians over {args.rounds} interleaved rounds")
    print(f"  harness (runner via local device) {med['harness'] / 1000:8.3f} ms")
    print(f"  bare invoke() loop, one process    {med['bare'] / 1000:8.3f} ms   paired ratio {ratio:.3f} (goal <= 1.03)")
    print(f"  litert-benchmark (CompiledModel)   {med['litert'] / 1000:8.3f} ms   paired ratio {litert_ratio:.3f} "
          f"(goal 0.97-1.03)")
    print(f"digits_cnn fp32, XNNPACK, 1 thread: harness {med['tiny_harness']:.2f} us, bare {med['tiny_bare']:.2f} us, "
          f"paired difference {added:+.2f} us per invoke (goal <= 10)")
    print(f"ratio={ratio:.3f} litert_ratio={litert_ratio:.3f} added_us_per_invoke={added:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
