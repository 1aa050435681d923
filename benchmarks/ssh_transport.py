"""What the SSH transport costs, measured side by side in one run against the local device, on a
real OpenSSH server on loopback (tests/peers/sshd.py; needs root and Debian's openssh-server):

- seconds per cell (push check, runner start, measurement, JSON back) for the tiny digits model,
  SSH against local, rounds interleaved so a slow spell hits both alike; and the on-device p50
  each reports (the link must not change what is measured on the device);
- milliseconds per remote command (`true`) over the one reused connection;
- bytes pushed by a first and a second `harness sweep` of the same plan to a fresh board (the
  second must push 0 bytes).

Last line: `ssh_s_per_cell=... local_s_per_cell=... ratio=... exec_ms=... first_push_bytes=...
second_push_bytes=...`.

    python benchmarks/ssh_transport.py [--rounds 7] [--cache-dir results/cache]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices.base import Job, MeasurementProtocol  # noqa: E402
from devices.local import LocalConfig, LocalDevice  # noqa: E402
from devices.ssh import SSHConfig, SSHDevice  # noqa: E402
from harness.artifacts import Cache  # noqa: E402
from harness.build import build_models  # noqa: E402
from harness.config import build, load_inventory, load_plan  # noqa: E402
from tests.peers.sshd import start_sshd  # noqa: E402

PLAN = "models:\n  - model: digits_cnn\n    variants: [fp32, int8]\n"
PROTOCOL = MeasurementProtocol(warmup_runs=1, warmup_min_secs=0.1, num_runs=50, min_secs=0.5, max_secs=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cache-dir", default=str(ROOT / "results" / "cache"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ssh-bench-"))
    plan_path = work / "plan.yaml"
    plan_path.write_text(PLAN)
    builds, _ = build_models(load_plan(plan_path, load_inventory(None)), Cache(args.cache_dir), print)
    digits = builds["digits_cnn"]
    host = start_sshd(work / "sshd", name="bench")
    try:
        entry = host.inventory_entry("bench-ssh", python=sys.executable, workdir=str(work / "ssh-work"))
        ssh = SSHDevice(build(SSHConfig, entry, "<bench>", "bench-ssh"))
        local = LocalDevice(LocalConfig(name="bench-local", workdir=str(work / "local-work")))
        job = Job(model=digits.artifacts["fp32"].path, delegate="xnnpack", num_threads=1, protocol=PROTOCOL,
                  timeout_s=120, inputs=digits.eval_path)
        for device in (local, ssh):  # first push and first import out of the timed rounds
            device.measure(job)
        seconds: dict[str, list[float]] = {"local": [], "ssh": []}
        p50: dict[str, list[float]] = {"local": [], "ssh": []}
        for _ in range(args.rounds):
            for name, device in (("local", local), ("ssh", ssh)):
                started = time.perf_counter()
                report = device.measure(job)
                seconds[name].append(time.perf_counter() - started)
                p50[name].append(statistics.median(report["samples_us"]))
        execs = []
        for _ in range(50):
            started = time.perf_counter()
            ssh.run(["true"], 10)
            execs.append((time.perf_counter() - started) * 1000)
        ssh.close()
        ratios = [remote / here for remote, here in zip(seconds["ssh"], seconds["local"])]
        print(f"{'':8} {'s/cell (median)':>16} {'on-device p50 us':>17}")
        for name in ("local", "ssh"):
            print(f"{name:8} {statistics.median(seconds[name]):16.3f} {statistics.median(p50[name]):17.1f}")
        print(f"ssh/local per-round ratio: median {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f}); p50 ratio "
              f"{statistics.median(p50['ssh']) / statistics.median(p50['local']):.3f}")
        print(f"remote command over the reused connection: median {statistics.median(execs):.2f} ms "
              f"(p90 {sorted(execs)[int(0.9 * len(execs))]:.2f} ms)")

        inventory = work / "inventory.yaml"
        inventory.write_text("devices:\n  - " + "\n    ".join(
            f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in
            host.inventory_entry("board", python=sys.executable, workdir=str(work / "sweep-work")).items()) + "\n")
        pushed = []
        for attempt in (1, 2):
            result = subprocess.run([sys.executable, "-m", "harness", "sweep", "--plan", str(plan_path),
                                     "--inventory", str(inventory), "--db", str(work / "r.sqlite"),
                                     "--cache-dir", args.cache_dir], capture_output=True, text=True, cwd=work)
            line = next(m for m in result.stderr.splitlines() if "board: pushed" in m)
            print(f"sweep {attempt}: {line.split('harness: ')[-1]}")
            pushed.append(int(re.search(r"([\d,]+) bytes", line).group(1).replace(",", "")))
        print(f"ssh_s_per_cell={statistics.median(seconds['ssh']):.3f} "
              f"local_s_per_cell={statistics.median(seconds['local']):.3f} ratio={statistics.median(ratios):.3f} "
              f"exec_ms={statistics.median(execs):.2f} first_push_bytes={pushed[0]} second_push_bytes={pushed[1]}")
    finally:
        host.stop()


if __name__ == "__main__":
    main()
