"""What the coordinator costs when a sweep is wide: a sweep over `--devices` (100) simulated
devices (devices/sim.py: each launch sleeps `--launch-s` and returns a valid report), measured

- `process`: every device measured from this process (one machine worker thread per device);
- `ray`: the same devices attached to lab hosts (`lab_host:`) of a local Ray cluster, measured by
  one agent per device there (lab/dispatch.py), this process only coordinating.

Goals, per mode:

- wall_ratio = the sweep's wall seconds / the slowest device's own time (cells per device x
  repetitions x launch_s): <= 1.2. The devices are independent, so a coordinator that keeps up
  finishes about when the busiest device does;
- coordinator_cpu = the coordinator process's CPU seconds (time.process_time: every thread of this
  process, Ray's driver threads included; not the lab hosts' agents) / the sweep's wall seconds:
  <= 0.05;
- rss_mb_per_1000_cells = the coordinator's resident memory growth over the sweep (VmRSS of
  /proc/self/status, before and after) per 1000 cells: reported, no goal.

Only `run_sweep` is timed. Before it: the model (digits_cnn fp32 from the zoo, as `make sweep`
builds it) is built into `--cache-dir` by `build_models`, so no conversion falls in the timed part
(`run_sweep` then finds it in the cache); in `ray` mode, joining the cluster and starting the
agents (`Lab.acquire`: a Ray worker process per device) are timed apart and printed on a line of
their own. After it, the run is checked: every cell stored `ok` with all its launches, and the
markdown report renders. Device locks (`harness sweep` takes them around run_sweep) are not taken.
In `process` mode the simulated devices run in the coordinator's process, so its CPU includes
their own work (building each launch's report, tens of microseconds a launch); in `ray` mode that
work is the agents'. Also printed: the coordinator's CPU split into user and system time and by
thread (Ray's C++ threads name themselves; the machine workers have ended by then and are the
remainder), and, in `ray` mode, the agents' memory (RSS, PSS) and what the coordinator and the
lab side burn idle for a few seconds with the agents up. `--profile PREFIX` runs cProfile in
every thread of the sweep (each thread's CPU time) and writes PREFIX-<mode>.prof and a text
summary; the figures of a profiled run are inflated by the profiler.

On a single machine the lab side (Ray's node and one worker process per agent) runs on the same
cores as the coordinator: its load is printed, since on a small machine it slows the coordinator
(and the wall ratio) in a way a lab with hosts of their own would not.

The cluster of `ray` mode lives in a network namespace of its own (needs root and `ip`): Ray
replaces a loopback node address with the host's and listens on every interface, so the head
node (`harness lab-host start`, one node per `--lab-hosts`) and the coordinator (this script,
re-run inside the namespace) see nothing but that namespace's loopback. Everything started in it
is killed and the namespace deleted at the end; `ray stop` is never run.

Output: a line per mode with its figures (and, for `ray`, a line for the agents' start and their
memory on the lab host); the last line is `wall_ratio=... coordinator_cpu=... rss_mb_per_1000_cells=...`
with the figures of the `ray` mode when it ran (the issue's question: does the lab's coordinator
keep up), else those of `process`; the `process` figures are then on the line before.

    python benchmarks/scale.py [--devices 100] [--launch-s 1.0] [--cells-per-device 4] [--repetitions 5]
                               [--num-runs 20] [--mode process|ray|both] [--lab-hosts 1]
                               [--cache-dir results/cache] [--profile PREFIX] [--keep]

`--lab-hosts N` deals the devices round-robin to N lab hosts (lab-a is the head; each is a Ray
node of its own in the same namespace).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.artifacts import Cache  # noqa: E402
from harness.build import build_models  # noqa: E402
from harness.config import load_inventory, load_plan  # noqa: E402

MODEL = "digits_cnn"
RAY_PORT = 6379  # inside the namespace of our own: nothing else listens there
LAB_HOSTS = ("lab-a", "lab-b", "lab-c", "lab-d")
RESULT = "scale-result: "  # the line the `ray` child hands its figures back on
IDLE_S = 5.0  # ray mode: seconds with the agents up and idle, before the sweep: Ray's own background cost


# -- the sweep's files -------------------------------------------------------------------------

def write_inventory(path: Path, devices: int, launch_s: float, lab_hosts: int) -> None:
    """`devices` sim devices; with `lab_hosts`, dealt round-robin to lab-a, lab-b, ..."""
    lines = ["devices:"]
    for i in range(devices):
        lines += [f"  - name: sim{i:03d}", "    transport: sim", f"    launch_s: {launch_s!r}",
                  "    delegates: [cpu]"]
        if lab_hosts:
            lines.append(f"    lab_host: {LAB_HOSTS[i % lab_hosts]}")
    path.write_text("\n".join(lines) + "\n")


def write_plan(path: Path, cells_per_device: int, repetitions: int, num_runs: int) -> None:
    """One model, one variant, one delegate: a cell per thread count, so `cells_per_device` cells on
    every device (the thread count means nothing to a simulated device)."""
    threads = ", ".join(str(t) for t in range(1, cells_per_device + 1))
    path.write_text(f"name: scale\nmodels:\n  - model: {MODEL}\n    variants: [fp32]\nthreads: [{threads}]\n"
                    f"protocol:\n  warmup_runs: 0\n  warmup_min_secs: 0\n  num_runs: {num_runs}\n  min_secs: 0\n"
                    f"  max_secs: 10\n  repetitions: {repetitions}\n")


# -- measuring ---------------------------------------------------------------------------------

def _proc_kb(pid: str, file: str, key: str) -> float:
    """A `key: N kB` line of /proc/<pid>/<file>, in MB (0 for a process that is gone or has none)."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def rss_mb(pid: str = "self") -> float:
    """VmRSS of a process, MB (0 for one that is gone or has no memory: a kernel thread)."""
    return _proc_kb(pid, "status", "VmRSS")


def pss_mb(pid: str) -> float:
    """Proportional set size (shared pages split between their users), MB; 0 when unreadable."""
    return _proc_kb(pid, "smaps_rollup", "Pss")


def cpu_s(pid: str) -> float:
    """utime + stime of a process, seconds (0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def namespace_peers() -> list[str]:
    """Every other process in this process's network namespace (run inside ours: the Ray nodes and
    the agents they started)."""
    mine, me, peers = os.readlink("/proc/self/ns/net"), str(os.getpid()), []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != me:
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == mine:
                    peers.append(entry)
            except OSError:
                continue
    return peers


def lab_side() -> dict[str, float]:
    pids = namespace_peers()
    return {"processes": len(pids), "rss_mb": sum(rss_mb(p) for p in pids), "pss_mb": sum(pss_mb(p) for p in pids),
            "cpu_s": sum(cpu_s(p) for p in pids)}


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's live threads, summed by thread name (Python's own threads are
    all `python` here; Ray's C++ threads name themselves)."""
    found: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        except OSError:
            continue
        found[name] = found.get(name, 0.0) + cpu_s(f"self/task/{tid}")
    return found


class ThreadProfiles:
    """cProfile in every thread started while it is on (the machine workers) and in this one, each
    timing its thread's CPU (time.thread_time); merged into one pstats file, its top functions
    written beside it as text."""

    def __init__(self, path: str | None):
        self.path, self.profiles = path, []

    def _start_here(self, frame, event, arg) -> None:
        import cProfile

        sys.setprofile(None)
        profile = cProfile.Profile(time.thread_time)  # each thread's own CPU, not wall time spent waiting
        self.profiles.append(profile)  # list.append is atomic
        profile.enable()

    def __enter__(self) -> "ThreadProfiles":
        if self.path:
            import threading

            threading.setprofile(self._start_here)
            self._start_here(None, None, None)
        return self

    def __exit__(self, *exc) -> None:
        if not self.path:
            return
        import io
        import pstats
        import threading

        threading.setprofile(None)
        self.profiles[0].disable()
        stats = pstats.Stats(*self.profiles)
        stats.dump_stats(self.path)
        text = io.StringIO()
        for key in ("tottime", "cumulative"):
            pstats.Stats(self.path, stream=text).sort_stats(key).print_stats(40)
        Path(self.path + ".txt").write_text(text.getvalue())
        print(f"profile ({len(self.profiles)} threads): {self.path} and {self.path}.txt", file=sys.stderr)


def timed_sweep(inventory, plan, store, cache, log, progress, lab=None, profile: str | None = None) -> dict:
    """run_sweep, timed: wall, this process's CPU, RSS growth; then the run checked."""
    from harness.report import render
    from harness.sweep import run_sweep

    threads0 = thread_cpu()
    rss0, cpu0, wall0, times0 = rss_mb(), time.process_time(), time.perf_counter(), os.times()
    with ThreadProfiles(profile):
        run_id = run_sweep(inventory, plan, plan.targets, store, cache, log, argv=["scale"], progress_stream=progress,
                           lab=lab)
    wall, cpu, rss1 = time.perf_counter() - wall0, time.process_time() - cpu0, rss_mb()
    times1, threads1 = os.times(), thread_cpu()
    by_thread = {name: t - threads0.get(name, 0.0) for name, t in threads1.items()}
    by_thread = {name: t for name, t in sorted(by_thread.items(), key=lambda kv: -kv[1]) if t >= 0.01}
    by_thread["(threads ended: the machine workers)"] = cpu - sum(by_thread.values())
    counts = store.status_counts(run_id)
    cells = sum(counts.values())
    launches = store.count("launches", run_id)
    run = store.run(run_id)
    text = render("markdown", store.cells(run_id), run, store.devices_of_run(run_id))
    return {"run": run_id, "status": run["status"], "counts": counts, "cells": cells, "launches": launches,
            "wall_s": wall, "cpu_s": cpu, "user_s": times1.user - times0.user,
            "system_s": times1.system - times0.system, "by_thread": by_thread, "rss_before_mb": rss0, "rss_after_mb": rss1, "report_chars": len(text)}


def sweep_here(workdir: Path, inventory_path: Path, plan_path: Path, cache_dir: str, lab=None, tag="process",
               profile: str | None = None) -> dict:
    from harness.store import Store

    inventory = load_inventory(inventory_path)
    plan = load_plan(plan_path, inventory)
    store = Store(workdir / f"{tag}.sqlite")
    log_file = open(workdir / f"{tag}.log", "w")  # the sweep's log and progress, as a CI log would get them

    def log(message: str) -> None:
        log_file.write(f"harness: {message}\n")
        log_file.flush()

    try:
        return timed_sweep(inventory, plan, store, Cache(cache_dir), log, log_file, lab,
                           f"{profile}-{tag}.prof" if profile else None)
    finally:
        store.close()
        log_file.close()


# -- ray mode ----------------------------------------------------------------------------------

def ray_child(args: argparse.Namespace) -> int:
    """Inside the namespace: join the cluster, start the agents, sweep, hand the figures back."""
    from harness.store import Store  # noqa: F401 - imported before timing, as the process mode has it
    from lab.cluster import connect
    from lab.dispatch import Lab

    workdir = Path(args.child)
    inventory = load_inventory(workdir / "inventory-ray.yaml")
    messages: list[str] = []
    t0 = time.perf_counter()
    ray = connect(f"127.0.0.1:{RAY_PORT}", False, messages.append)
    connected = time.perf_counter() - t0
    before = lab_side()
    t0, c0 = time.perf_counter(), time.process_time()
    lab = Lab(ray, inventory, [d.name for d in inventory.devices], 0.0, messages.append).acquire()
    acquire_s, acquire_cpu = time.perf_counter() - t0, time.process_time() - c0
    started = lab_side()
    # idle: the agents up, nothing asked of them; what Ray costs on either side before any launch
    c0, idle0 = time.process_time(), started
    time.sleep(IDLE_S)
    idle = {"coordinator_cpu_s": time.process_time() - c0, "lab_cpu_s": lab_side()["cpu_s"] - idle0["cpu_s"]}
    started = lab_side()
    agent_pids = [str(link.call("ready")["pid"]) for link in lab.links.values()]
    agents_mem = {"rss_mb": sum(rss_mb(p) for p in agent_pids), "pss_mb": sum(pss_mb(p) for p in agent_pids)}
    try:
        figures = sweep_here(workdir, workdir / "inventory-ray.yaml", workdir / "plan.yaml", args.cache_dir, lab,
                             tag="ray", profile=args.profile)
        after = lab_side()
    finally:
        lab.close()
        ray.shutdown()
        (workdir / "lab.log").write_text("".join(f"{m}\n" for m in messages))
    figures.update(connect_s=connected, acquire_s=acquire_s, acquire_cpu_s=acquire_cpu, agents=len(lab.machines),
                   agents_up=len(lab.machines) - len(lab.missing), missing=sorted(lab.missing.values())[:3],
                   lab_before=before, lab_started=started, lab_after=after,
                   agents_mem=agents_mem, idle=idle)
    print(RESULT + json.dumps(figures), flush=True)
    return 0


class Namespace:
    """A network namespace of our own with only loopback, and everything started in it."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> "Namespace":
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"], check=True)
        return self

    def argv(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *command]

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def __exit__(self, *exc) -> None:
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while pids and self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
        left = self.pids()
        if left:
            print(f"warning: still running in namespace {self.name}: {left}", file=sys.stderr)
        subprocess.run(["ip", "netns", "del", self.name], check=False)


def sweep_on_ray(args: argparse.Namespace, workdir: Path) -> dict:
    if os.geteuid() != 0 or not shutil.which("ip"):
        raise SystemExit("ray mode needs root and `ip` (iproute2): its cluster runs in a network namespace of its own")
    venv_bin = Path(sys.executable).parent
    harness = str(venv_bin / "harness") if (venv_bin / "harness").exists() else shutil.which("harness")
    token = workdir / "ray-token"  # the cluster's own token (Ray's token authentication), not ~/.ray's
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HARNESS_LAB_CACHE": str(workdir / "lab-cache"),
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    inventory = str(workdir / "inventory-ray.yaml")
    with Namespace(f"hscale{os.getpid()}") as ns:
        t0 = time.perf_counter()
        for i in range(args.lab_hosts):
            where = (["--head", f"--port={RAY_PORT}", f"--temp-dir={workdir / 'ray'}"] if i == 0
                     else [f"--address=127.0.0.1:{RAY_PORT}"])
            start = subprocess.run(ns.argv(harness, "lab-host", "start", "--name", LAB_HOSTS[i], "--node-ip-address",
                                           "127.0.0.1", "--inventory", inventory, *where),
                                   capture_output=True, text=True, env=env)
            if start.returncode != 0:
                raise SystemExit(f"lab host {LAB_HOSTS[i]} did not start:\n{start.stdout}{start.stderr}")
        nodes_s = time.perf_counter() - t0
        child = subprocess.run(ns.argv(sys.executable, str(Path(__file__).resolve()), "--child", str(workdir),
                                       "--cache-dir", args.cache_dir,
                                       *(["--profile", args.profile] if args.profile else [])),
                               stdout=subprocess.PIPE, text=True, env=env)
        found = [line for line in child.stdout.splitlines() if line.startswith(RESULT)]
        if child.returncode != 0 or not found:
            raise SystemExit(f"the ray-mode coordinator failed (exit {child.returncode}); its log: "
                             f"{workdir / 'ray.log'}\n{child.stdout}")
    figures = json.loads(found[-1][len(RESULT):])
    figures["nodes_s"] = nodes_s
    return figures


# -- the command -------------------------------------------------------------------------------

def summary(mode: str, f: dict, device_s: float) -> tuple[str, dict[str, float]]:
    key = {"wall_ratio": f["wall_s"] / device_s, "coordinator_cpu": f["cpu_s"] / f["wall_s"],
           "rss_mb_per_1000_cells": (f["rss_after_mb"] - f["rss_before_mb"]) / f["cells"] * 1000}
    line = (f"{mode:7s}: {f['cells']} cells, {f['launches']} launches in {f['wall_s']:.1f} s wall "
            f"(slowest device {device_s:.1f} s: ratio {key['wall_ratio']:.3f}, goal <= 1.2); coordinator "
            f"{f['cpu_s']:.2f} CPU s = {key['coordinator_cpu']:.3f} of wall (goal <= 0.05), "
            f"{f['cpu_s'] / max(f['launches'], 1) * 1e3:.2f} ms per launch; RSS {f['rss_before_mb']:.0f} -> "
            f"{f['rss_after_mb']:.0f} MB ({key['rss_mb_per_1000_cells']:+.1f} MB per 1000 cells); "
            f"report {f['report_chars']:,} chars\n         coordinator CPU: user {f['user_s']:.2f} s, system "
            f"{f['system_s']:.2f} s; by thread: "
            + ", ".join(f"{name} {t:.2f}" for name, t in f["by_thread"].items()))
    return line, key


def check(mode: str, f: dict, cells: int, launches: int) -> None:
    if f["counts"] != {"ok": cells} or f["launches"] != launches or f["status"] != "ok":
        raise SystemExit(f"{mode}: the run is not whole: run {f['run']} {f['status']}, cells {f['counts']} "
                         f"(expected {cells} ok), {f['launches']} launches (expected {launches})"
                         + (f"; lab: {f['missing']}" if f.get("missing") else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--launch-s", type=float, default=1.0, help="wall time of one simulated launch")
    parser.add_argument("--cells-per-device", type=int, default=4)
    parser.add_argument("--repetitions", type=int, default=5, help="launches per cell")
    parser.add_argument("--num-runs", type=int, default=20, help="timings in each launch's report")
    parser.add_argument("--mode", choices=("process", "ray", "both"), default="both")
    parser.add_argument("--lab-hosts", type=int, default=1, choices=range(1, len(LAB_HOSTS) + 1),
                        help="ray mode: Ray nodes (lab hosts) the devices are dealt to")
    parser.add_argument("--cache-dir", default=str(ROOT / "results/cache"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory (stores, logs)")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="cProfile every thread of the coordinator's sweep into PREFIX-<mode>.prof (and .txt); "
                             "the figures are then the profiled ones, inflated")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the ray mode's coordinator, inside the namespace
    args = parser.parse_args()
    if args.child:
        return ray_child(args)

    workdir = Path(tempfile.mkdtemp(prefix="hs", dir="/tmp"))  # short: Ray's socket paths live under it
    try:
        write_inventory(workdir / "inventory.yaml", args.devices, args.launch_s, 0)
        write_inventory(workdir / "inventory-ray.yaml", args.devices, args.launch_s, args.lab_hosts)
        write_plan(workdir / "plan.yaml", args.cells_per_device, args.repetitions, args.num_runs)
        t0 = time.perf_counter()
        _, built = build_models(load_plan(workdir / "plan.yaml", load_inventory(workdir / "inventory.yaml")),
                                Cache(args.cache_dir), lambda m: print(f"build: {m}", file=sys.stderr))
        print(f"model {MODEL} fp32 in {args.cache_dir}: {built.cached} from cache, {built.converted} converted "
              f"({time.perf_counter() - t0:.1f} s, before any timing)", file=sys.stderr)
        cells = args.devices * args.cells_per_device
        launches = cells * args.repetitions
        device_s = args.cells_per_device * args.repetitions * args.launch_s
        print(f"{args.devices} simulated devices x {args.cells_per_device} cells x {args.repetitions} launches of "
              f"{args.launch_s:g} s: {cells} cells, {launches} launches; each device's own time {device_s:g} s")
        results = {}
        if args.mode in ("process", "both"):
            f = sweep_here(workdir, workdir / "inventory.yaml", workdir / "plan.yaml", args.cache_dir,
                           profile=args.profile)
            check("process", f, cells, launches)
            line, results["process"] = summary("process", f, device_s)
            print(line, flush=True)
        if args.mode in ("ray", "both"):
            f = sweep_on_ray(args, workdir)
            started, before, after = f["lab_started"], f["lab_before"], f["lab_after"]
            up, mem = max(f["agents_up"], 1), f["agents_mem"]
            print(f"ray    : {args.lab_hosts} lab host node(s) up in {f['nodes_s']:.1f} s; joined in "
                  f"{f['connect_s']:.1f} s; {f['agents_up']}/{f['agents']} agents started in {f['acquire_s']:.1f} s "
                  f"({f['acquire_cpu_s']:.2f} coordinator CPU s), each {mem['rss_mb'] / up:.0f} MB RSS, "
                  f"{mem['pss_mb'] / up:.0f} MB PSS; idle for {IDLE_S:g} s: coordinator "
                  f"{f['idle']['coordinator_cpu_s'] / IDLE_S:.3f} CPU, lab side {f['idle']['lab_cpu_s'] / IDLE_S:.2f} CPU; "
                  f"lab side (Ray nodes and workers) {before['processes']} -> "
                  f"{started['processes']} processes, PSS {before['pss_mb']:.0f} -> {started['pss_mb']:.0f} MB; "
                  f"its CPU over the sweep {after['cpu_s'] - started['cpu_s']:.1f} s "
                  f"({(after['cpu_s'] - started['cpu_s']) / f['wall_s']:.2f} of wall)", flush=True)
            check("ray", f, cells, launches)
            line, results["ray"] = summary("ray", f, device_s)
            print(line, flush=True)
        last = results.get("ray") or results["process"]
        if "ray" in results and "process" in results:
            p = results["process"]
            print(f"process: wall_ratio={p['wall_ratio']:.3f} coordinator_cpu={p['coordinator_cpu']:.4f} "
                  f"rss_mb_per_1000_cells={p['rss_mb_per_1000_cells']:.1f}")
        print(f"wall_ratio={last['wall_ratio']:.3f} coordinator_cpu={last['coordinator_cpu']:.4f} "
              f"rss_mb_per_1000_cells={last['rss_mb_per_1000_cells']:.1f}")
        return 0
    finally:
        if args.keep:
            print(f"kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
