"""What the ADB transport costs, and whether the benchmark_model path reports what the runner
does, side by side in one run against the in-repo ADB peer on loopback (tests/peers/adbd.py; its
benchmark_model stand-in really runs LiteRT on this host):

- seconds per cell for the tiny digits model: the local runner against the ADB device (a
  benchmark_model repetition each, same protocol), rounds interleaved so a slow spell hits both;
- the mean latency each reports per run (runner: mean of its samples; ADB: the parsed `avg=`):
  both time `invoke()` on the same host, so their ratio checks the parse path and the link;
- milliseconds per shell command (`true`) over the one reused ADB connection.

Last line: `adb_s_per_cell=... local_s_per_cell=... ratio=... mean_ratio=... exec_ms=...`.

    python benchmarks/adb_transport.py [--rounds 7] [--cache-dir results/cache]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices.adb import ADBConfig, ADBDevice  # noqa: E402
from devices.base import Job, MeasurementProtocol  # noqa: E402
from devices.local import LocalConfig, LocalDevice  # noqa: E402
from harness.artifacts import Cache  # noqa: E402
from harness.build import build_models  # noqa: E402
from harness.config import load_inventory, load_plan  # noqa: E402
from tests.peers.adbd import start_adb_peer  # noqa: E402

PLAN = "models:\n  - model: digits_cnn\n    variants: [fp32]\n"
PROTOCOL = MeasurementProtocol(warmup_runs=1, warmup_min_secs=0.1, num_runs=50, min_secs=0.5, max_secs=5,
                               repetitions=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cache-dir", default=str(ROOT / "results" / "cache"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="adb-bench-"))
    plan_path = work / "plan.yaml"
    plan_path.write_text(PLAN)
    builds, _ = build_models(load_plan(plan_path, load_inventory(None)), Cache(args.cache_dir), print)
    model = builds["digits_cnn"].artifacts["fp32"].path
    with start_adb_peer(work / "peer") as peer:
        adb = ADBDevice(ADBConfig(name="bench-adb", host=peer.host, port=peer.port, adbkey=str(work / "adbkey"),
                                  benchmark_model=str(peer.benchmark_model_host_path)))
        local = LocalDevice(LocalConfig(name="bench-local", workdir=str(work / "local-work")))
        job = Job(model=model, delegate="xnnpack", num_threads=1, protocol=PROTOCOL, timeout_s=120)
        for device in (local, adb):  # first push and first import out of the timed rounds
            device.measure(job)
        seconds: dict[str, list[float]] = {"local": [], "adb": []}
        means: dict[str, list[float]] = {"local": [], "adb": []}
        for _ in range(args.rounds):
            for name, device in (("local", local), ("adb", adb)):
                started = time.perf_counter()
                report = device.measure(job)
                seconds[name].append(time.perf_counter() - started)
                means[name].append(statistics.fmean(report["samples_us"]))  # ADB: the one `avg=`
        execs = []
        for _ in range(50):
            started = time.perf_counter()
            adb.run(["true"], 10)
            execs.append((time.perf_counter() - started) * 1000)
        adb.close()
    ratios = [remote / here for remote, here in zip(seconds["adb"], seconds["local"])]
    mean_ratios = [remote / here for remote, here in zip(means["adb"], means["local"])]
    print(f"{'':8} {'s/cell (median)':>16} {'mean per run us':>16}")
    for name in ("local", "adb"):
        print(f"{name:8} {statistics.median(seconds[name]):16.3f} {statistics.median(means[name]):16.1f}")
    print(f"adb/local per-round ratio: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f}); mean-latency ratio median {statistics.median(mean_ratios):.3f} "
          f"(min {min(mean_ratios):.3f}, max {max(mean_ratios):.3f})")
    print(f"shell command over the reused connection: median {statistics.median(execs):.2f} ms "
          f"(p90 {sorted(execs)[int(0.9 * len(execs))]:.2f} ms)")
    print(f"adb_s_per_cell={statistics.median(seconds['adb']):.3f} "
          f"local_s_per_cell={statistics.median(seconds['local']):.3f} ratio={statistics.median(ratios):.3f} "
          f"mean_ratio={statistics.median(mean_ratios):.3f} exec_ms={statistics.median(execs):.2f}")


if __name__ == "__main__":
    main()
