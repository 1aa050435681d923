"""A lab of two hosts on a real Ray cluster (tests/peers/ray_lab.py: `harness lab-host start` for a
head, lab-a, and a second node, lab-b, in a network namespace with only loopback), driven through
the real command line: a sweep across both, `lab-host status` while it runs, a lab host killed
mid-sweep and the resume, a coordinator killed mid-sweep, a device another coordinator holds.

Both lab hosts are this machine, so their devices are `transport: local` devices measured by the
agents on each node; each node has an artifact cache of its own, as separate machines would."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, harness_cli, inventory_yaml, write

pytestmark = pytest.mark.slow

PLAN = """name: lab-{name}
models:
  - model: digits_cnn
    variants: [fp32, int8]
targets:
  - device: pi-a
    delegates: [cpu]
    threads: [1]
  - device: pi-b
    delegates: [cpu, xnnpack]
    threads: [1]
protocol: {{warmup_runs: 1, warmup_min_secs: 0.05, num_runs: 10, min_secs: 0.05, max_secs: 2, repetitions: {reps}}}
"""
DEVICES = [{"name": "pi-a", "transport": "local", "lab_host": "lab-a", "delegates": ["cpu"]},
           {"name": "pi-b", "transport": "local", "lab_host": "lab-b", "delegates": ["cpu", "xnnpack"]}]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, digits_build):
    from tests.peers.ray_lab import RayLab
    from tests.peers.sshd import netns_supported

    reason = netns_supported()
    if reason:
        pytest.skip(f"the lab runs in a network namespace of its own: {reason}")
    pytest.importorskip("ray", reason="the lab extra is not installed (pip install -e '.[lab]')")
    work = tmp_path_factory.mktemp("lab")
    inventory = write(work / "inventory.yaml", inventory_yaml(DEVICES))
    ray_lab = RayLab(inventory)
    try:
        for name, head in (("lab-a", True), ("lab-b", False)):
            started = ray_lab.start_host(name, head=head)
            assert started.returncode == 0, started.stdout + started.stderr
            assert f"lab host {name} is up at 127.0.0.1" in started.stdout, started.stdout + started.stderr
        yield ray_lab, work
    finally:
        ray_lab.close()


def sweep_args(work, session_cache, name: str, reps: int = 2, db: str = "lab.sqlite") -> list[str]:
    plan = write(work / f"plan-{name}-{reps}.yaml", PLAN.format(name=name, reps=reps))
    return ["sweep", "--plan", str(plan), "--inventory", str(work / "inventory.yaml"), "--db", str(work / db),
            "--cache-dir", str(session_cache)]


def cells(db, run_id: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT device_name, variant, delegate, status, reason FROM cells WHERE run_id = ? "
                           "ORDER BY device_name, variant, delegate", (run_id,)).fetchall()


class Lines:
    """A running command's stderr, line by line, as it comes."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.lines, self.seen = proc, queue.Queue(), []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}:\n{''.join(self.seen)}")

    def rest(self) -> str:
        self.proc.wait(timeout=600)
        time.sleep(0.2)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)


def test_a_sweep_measures_each_device_on_its_lab_host_and_sends_each_artifact_once(lab, session_cache):
    ray_lab, work = lab
    first = ray_lab.harness(*sweep_args(work, session_cache, "both"), "--cluster", ray_lab.address)
    assert first.returncode == 0, first.stdout + first.stderr
    run_id = first.stdout.strip().splitlines()[-1]
    found = cells(work / "lab.sqlite", run_id)
    assert [(c[0], c[1], c[2], c[3]) for c in found] == [
        ("pi-a", "fp32", "cpu", "ok"), ("pi-a", "int8", "cpu", "ok"), ("pi-b", "fp32", "cpu", "ok"),
        ("pi-b", "fp32", "xnnpack", "ok"), ("pi-b", "int8", "cpu", "ok"), ("pi-b", "int8", "xnnpack", "ok")]
    # progress and the report say where each device is
    assert "on pi-b@lab-b xnnpack 1t" in first.stderr and "lab-a/local: round 1/2" in first.stderr
    with sqlite3.connect(work / "lab.sqlite") as con:  # each cell says which lab host measured it
        hosts = set(con.execute("SELECT device_name, json_extract(details_json, '$.lab_host') FROM cells "
                                "WHERE run_id = ?", (run_id,)))
        fingerprints = {json.loads(a).get("lab_host") for (a,) in con.execute("SELECT attributes_json FROM devices")}
    assert hosts == {("pi-a", "lab-a"), ("pi-b", "lab-b")}
    assert fingerprints <= {"lab-a", "lab-b"} and fingerprints  # both are this machine: one device row, renamed
    # each lab host received the two models and the eval set once, into its own cache
    for name in ("lab-a", "lab-b"):
        kept = sorted(p.name for p in (ray_lab.hosts[name]["cache"] / "artifacts").iterdir())
        assert len(kept) == 3, kept
        assert re.search(rf"lab: lab-./local: sent 3 file\(s\), [\d,]+ bytes; 0 already on lab host {name}",
                         first.stderr), first.stderr
    again = ray_lab.harness(*sweep_args(work, session_cache, "both"), "--cluster", ray_lab.address)
    assert again.returncode == 0, again.stderr
    for name in ("lab-a", "lab-b"):  # the next sweep finds them there
        assert re.search(rf"sent 0 file\(s\), 0 bytes; 3 already on lab host {name}", again.stderr), again.stderr


def test_a_lab_host_lost_mid_sweep_fails_its_cells_the_rest_finish_and_resume_completes(lab, session_cache):
    ray_lab, work = lab
    proc = ray_lab.popen(*sweep_args(work, session_cache, "lost", reps=4, db="lost.sqlite"),
                         "--cluster", ray_lab.address)
    out = Lines(proc)
    out.wait_for(r"lab-b/local: round 1/4 of launches done")
    killed = ray_lab.stop_host("lab-b")
    log = out.rest()
    stdout = proc.stdout.read()
    assert proc.returncode == 0, log + stdout  # partial: the run goes on without lab-b
    run_id = stdout.strip().splitlines()[-1]
    before = cells(work / "lost.sqlite", run_id)
    print(f"lab-b's raylet and {len(killed) - 1} processes under it killed; cells before the resume:")
    for row in before:
        print("  ", row)
    assert [c[3] for c in before if c[0] == "pi-a"] == ["ok", "ok"]  # the rest of the lab carried on
    lost = [c for c in before if c[0] == "pi-b"]
    assert len(lost) == 4 and all(c[3] == "failed" and c[4].startswith("lab host lost: lab-b (local)") for c in lost)
    assert "run partial" in stdout
    deadline = time.monotonic() + 120  # the cluster marks the node dead after its health checks fail
    while True:
        status = ray_lab.harness("lab-host", "status", "--cluster", ray_lab.address, timeout=120)
        assert status.returncode == 0, status.stderr
        if re.search(r"\| lab-b \| \S+ \| no \| \S+ \| lost \|", status.stdout) or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert re.search(r"\| lab-b \| \S+ \| no \| \S+ \| lost \|", status.stdout), status.stdout
    assert re.search(r"\| lab-a \| \S+ \| yes \| local \| idle \|", status.stdout), status.stdout

    restarted = ray_lab.start_host("lab-b")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    resumed = ray_lab.harness("sweep", "--resume", run_id, "--db", str(work / "lost.sqlite"),
                              "--cache-dir", str(session_cache))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming run" in resumed.stderr and "4 to measure" in resumed.stderr
    after = cells(work / "lost.sqlite", run_id)
    print("after `harness sweep --resume`:")
    for row in after:
        print("  ", row)
    assert [c[3] for c in after] == ["ok"] * 6


def test_a_coordinator_killed_mid_sweep_leaves_no_device_locked(lab, session_cache):
    ray_lab, work = lab
    args = sweep_args(work, session_cache, "killed", reps=6, db="killed.sqlite")
    proc = ray_lab.popen(*args, "--cluster", ray_lab.address, "--devices", "pi-a")
    out = Lines(proc)
    out.wait_for(r"lab-a/local: round 1/6 of launches done")
    # while it measures: lab-host status shows who holds pi-a, and a second coordinator is refused
    status = ray_lab.harness("lab-host", "status", "--cluster", ray_lab.address, timeout=120)
    assert status.returncode == 0, status.stderr
    row = next(line for line in status.stdout.splitlines() if line.startswith("| lab-a "))
    assert "| local | busy |" in row and f"pid {proc.pid})" in row, status.stdout
    second = ray_lab.harness(*args, "--cluster", ray_lab.address, "--devices", "pi-a")
    assert second.returncode == 2, second.stdout + second.stderr
    assert "device 'pi-a' is being measured by another coordinator" in second.stderr
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # Ray ends the dead driver's agents; the device is free again without anyone unlocking it
    third = ray_lab.harness(*sweep_args(work, session_cache, "killed", reps=2, db="killed.sqlite"),
                            "--cluster", ray_lab.address, "--devices", "pi-a", "--lock-wait", "120")
    assert third.returncode == 0, third.stdout + third.stderr
    assert [c[3] for c in cells(work / "killed.sqlite", third.stdout.strip().splitlines()[-1])] == ["ok", "ok"]


def test_a_lab_host_missing_from_the_cluster_fails_only_its_cells(lab, session_cache, tmp_path):
    ray_lab, work = lab
    inventory = write(tmp_path / "inventory.yaml", inventory_yaml(
        DEVICES + [{"name": "pi-c", "transport": "local", "lab_host": "lab-c", "delegates": ["cpu"]}]))
    plan = write(tmp_path / "plan.yaml", PLAN.format(name="missing", reps=2).replace(
        "targets:\n", "targets:\n  - device: pi-c\n    threads: [1]\n"))
    result = ray_lab.harness("sweep", "--plan", str(plan), "--inventory", str(inventory), "--db",
                             str(tmp_path / "m.sqlite"), "--cache-dir", str(session_cache), "--cluster",
                             ray_lab.address, "--devices", "pi-a,pi-c")
    assert result.returncode == 0, result.stdout + result.stderr
    found = cells(tmp_path / "m.sqlite", result.stdout.strip().splitlines()[-1])
    assert [c[3] for c in found if c[0] == "pi-a"] == ["ok", "ok"]
    missing = [c for c in found if c[0] == "pi-c"]
    assert len(missing) == 2 and all(
        c[3] == "failed" and "lab host lab-c is not in the Ray cluster: no node offers device:lab-c/local" in c[4]
        for c in missing), missing


# -- without a cluster -------------------------------------------------------------------------


def test_without_a_lab_host_the_harness_never_imports_ray(tmp_path, session_cache, digits_build):
    plan = write(tmp_path / "plan.yaml", "name: plain\nmodels:\n  - model: digits_cnn\n    variants: [fp32]\n"
                 "targets:\n  - device: local\n    delegates: [cpu]\n    threads: [1]\n"
                 "protocol: {warmup_runs: 1, warmup_min_secs: 0.01, num_runs: 5, min_secs: 0.01, max_secs: 1, "
                 "repetitions: 1}\n")
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness", "sweep", "--plan", str(plan),
                             "--db", str(tmp_path / "r.sqlite"), "--cache-dir", str(session_cache)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = [line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert "harness.sweep" in imported and "lab.placement" in imported  # the inventory's lab_host parsing
    assert not [m for m in imported if m == "ray" or m.startswith("ray.")]


def test_lab_options_are_checked_before_anything_runs(tmp_path):
    inventory = write(tmp_path / "inventory.yaml", inventory_yaml(DEVICES))
    plan = write(tmp_path / "plan.yaml", PLAN.format(name="x", reps=1))
    db = tmp_path / "r.sqlite"
    base = ["sweep", "--plan", str(plan), "--inventory", str(inventory), "--db", str(db)]
    no_cluster = harness_cli(*base)
    assert no_cluster.returncode == 2 and (
        f"{inventory}: devices[0].lab_host: device 'pi-a' is attached to lab host lab-a: pass --cluster"
        in no_cluster.stderr), no_cluster.stderr
    public = harness_cli(*base, "--cluster", "8.8.8.8:6379")
    assert public.returncode == 2 and "--cluster: 8.8.8.8:6379: 8.8.8.8 is a public address" in public.stderr
    assert "--allow-public-cluster" in public.stderr
    nonsense = harness_cli(*base, "--cluster", "ray://")
    assert nonsense.returncode == 2 and "--cluster: ray://: expected auto, HOST:PORT" in nonsense.stderr
    bad = write(tmp_path / "bad.yaml", inventory_yaml([{**DEVICES[0], "lab_host": "lab a/1"}]))
    refused = harness_cli(*base[:3], "--inventory", str(bad), "--db", str(db))
    assert refused.returncode == 2 and f"{bad}: devices[0].lab_host: expected a lab host's name" in refused.stderr
    assert not db.exists()
    dry = harness_cli("lab-host", "start", "--name", "lab-b", "--address", "10.0.0.5:6379", "--node-ip-address",
                      "10.0.0.7", "--inventory", str(inventory), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    argv = dry.stdout.split()
    assert argv[1:3] == ["start", "--node-ip-address=10.0.0.7"] and "--address=10.0.0.5:6379" in argv
    assert '--resources={"device:lab-b/local":' in dry.stdout and '"lab-host:lab-b": 1000.0}' in dry.stdout
    nowhere = harness_cli("lab-host", "start", "--name", "lab-z", "--head", "--node-ip-address", "10.0.0.7",
                          "--inventory", str(inventory), "--dry-run")
    assert nowhere.returncode == 2 and "no device is attached to lab host 'lab-z'" in nowhere.stderr
    exposed = harness_cli("lab-host", "start", "--name", "lab-a", "--head", "--node-ip-address", "8.8.4.4",
                          "--inventory", str(inventory), "--dry-run")
    assert exposed.returncode == 2 and "--node-ip-address: 8.8.4.4: 8.8.4.4 is a public address" in exposed.stderr


def test_a_loopback_node_is_refused_where_ray_would_not_stay_on_loopback(tmp_path):
    """Ray 2.60 puts a node given 127.0.0.1 on the host's own address (and listens on every
    interface) unless the node has a network namespace of its own: refused there, accepted here."""
    from tests.peers.sshd import netns_supported

    inventory = write(tmp_path / "inventory.yaml", inventory_yaml(DEVICES))
    args = ["lab-host", "start", "--name", "lab-a", "--head", "--node-ip-address", "127.0.0.1", "--inventory",
            str(inventory), "--dry-run"]
    shown = subprocess.run(["ip", "-o", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True)
    others = re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", shown.stdout)
    if shown.returncode == 0 and others:
        here = harness_cli(*args)
        assert here.returncode == 2 and "--node-ip-address: 127.0.0.1: Ray 2.60 replaces a loopback node address" \
            in here.stderr and others[0] in here.stderr, here.stderr
    reason = netns_supported()
    if reason:
        pytest.skip(reason)
    ns = f"harness-lo-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        alone = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "harness", *args], cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    assert alone.returncode == 0 and "--node-ip-address=127.0.0.1" in alone.stdout, alone.stderr


def test_a_coordinator_without_the_clusters_token_is_refused(lab, tmp_path):
    ray_lab, work = lab
    wrong = write(tmp_path / "token", "0" * 64)
    started = time.monotonic()
    status = ray_lab.harness("lab-host", "status", "--cluster", ray_lab.address, timeout=300,
                             RAY_AUTH_TOKEN_PATH=str(wrong))
    print(f"refused after {time.monotonic() - started:.1f} s: {status.stderr.splitlines()[-1]}")
    assert status.returncode == 2, status.stdout + status.stderr
    assert (f"harness: error: --cluster: {ray_lab.address}: no Ray cluster answers there, or it refused this "
            "coordinator's token") in status.stderr
