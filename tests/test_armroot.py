"""The runner on a real aarch64 userland: an arm64 Debian root under qemu-user (tests/peers/armroot.py).
The first run builds the root into results/arm-root (a few minutes); later runs reuse it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.peers.armroot import arm_support, ensure_arm_root, mount_pseudo_fs, unmount_pseudo_fs

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.arm
def test_runner_probe_in_arm_root():
    reason = arm_support()
    if reason:
        pytest.skip(reason)
    root = ensure_arm_root(REPO / "results" / "arm-root")
    shutil.copyfile(REPO / "devices" / "runner.py", root / "tmp" / "runner.py")
    mount_pseudo_fs(root)
    try:
        done = subprocess.run(["chroot", str(root), "/usr/bin/python3", "/tmp/runner.py", "--probe"],
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    finally:
        unmount_pseudo_fs(root)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["fingerprint"]["machine"] == "aarch64"
    assert report["runtime"] is not None, report.get("runtime_error")
    assert report["runtime"]["name"] == "ai_edge_litert"


@pytest.mark.arm
def test_sweep_over_ssh_on_an_aarch64_board(tmp_path, tiny_tflite, session_cache, sshd_host):
    """The normal command line sweeps the tiny model on an aarch64 'board': sshd in its own network
    namespace, chrooted (ChrootDirectory) into the arm64 root, every command run under qemu-user."""
    import os

    from conftest import harness_cli, inventory_yaml, write
    from harness.store import Store
    from tests.peers.sshd import netns_supported, start_sshd

    reason = arm_support() or netns_supported()
    if reason:
        pytest.skip(reason)
    root = ensure_arm_root(REPO / "results" / "arm-root")
    # sshd wants every component of a ChrootDirectory root-owned and not group/other writable,
    # wherever the clone lives: serve the root through a bind mount under /run.
    served = Path(f"/run/harness-arm-{os.getpid()}")
    served.mkdir(mode=0o755)
    subprocess.run(["mount", "--bind", str(root), str(served)], check=True)
    host = None
    try:
        mount_pseudo_fs(served)
        host = start_sshd(tmp_path / "sshd-arm", name="arm", netns=True, chroot=served,
                          authorized_key=sshd_host.identity_file)
        inventory = write(tmp_path / "inventory.yaml", inventory_yaml([host.inventory_entry(
            "pi-arm64", python="/usr/bin/python3", run_timeout_s=600, connect_timeout_s=10)]))
        plan = write(tmp_path / "plan.yaml", f"name: arm\nmodels:\n  - path: {tiny_tflite}\n    name: tiny\n"
                     "targets:\n  - device: pi-arm64\n    delegates: [cpu, xnnpack]\n    threads: [1]\n"
                     "protocol: {warmup_runs: 1, warmup_min_secs: 0, num_runs: 3, min_secs: 0, max_secs: 30}\n")
        db = tmp_path / "results.sqlite"
        result = harness_cli("sweep", "--plan", str(plan), "--inventory", str(inventory), "--db", str(db),
                             "--cache-dir", str(session_cache), cwd=tmp_path, timeout=1800)
        assert result.returncode == 0, result.stderr
        store = Store.open_existing(db)
        run_id = store.resolve_run("latest")
        cells = store.cells(run_id)
        devices = store.devices_of_run(run_id)
        store.close()
        assert [(c["delegate"], c["status"]) for c in cells] == [("cpu", "ok"), ("xnnpack", "ok")], \
            [c["reason"] for c in cells]
        assert all(c["runtime_name"] == "ai_edge_litert" and c["metrics"]["samples_count"] >= 3 for c in cells)
        xnnpack = next(c for c in cells if c["delegate"] == "xnnpack")
        assert xnnpack["metrics"]["delegate_partitions"] >= 1  # XNNPACK really applied on aarch64
        board = devices[0]["attributes"]
        assert board["machine"] == "aarch64" and board["runtime"] == "ai_edge_litert" and "bookworm" in board["os"]
    finally:
        if host is not None:
            host.stop()
        unmount_pseudo_fs(served)
        subprocess.run(["umount", str(served)], check=True)
        served.rmdir()
