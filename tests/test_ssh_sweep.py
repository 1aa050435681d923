"""SSH devices in whole sweeps, through the command line, against real OpenSSH servers: faults
end as failed cells with their reasons while the other devices go on, and `sweep --resume`
completes the run without losing or duplicating a row. Names that would be shell syntax if
pasted into a command line run as plain names."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import FAST_PROTOCOL, harness_cli, inventory_yaml, write
from harness.store import Store

KEY = ("device_name", "model", "variant", "delegate", "threads")


def _cells(db: Path, run_id: str) -> dict[tuple, dict]:
    store = Store.open_existing(db)
    try:
        return {tuple(c[k] for k in KEY): {**c, "samples": store.samples(c["id"]).tobytes()}
                for c in store.cells(run_id)}
    finally:
        store.close()


def _by_device(cells: dict[tuple, dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for key, cell in sorted(cells.items(), key=lambda kv: kv[1]["id"]):
        out.setdefault(key[0], []).append(cell)
    return out


def _fault_table(before: dict[tuple, dict], after: dict[tuple, dict]) -> None:
    """Print (shown with `pytest -s`) what each device recorded, and the rows before and after."""
    for name, cells in _by_device(before).items():
        failed = [c for c in cells if c["status"] == "failed"]
        first = failed[0]["reason"] if failed else ""
        print(f"| {name} | {len(cells) - len(failed)} ok, {len(failed)} failed | {first[:160]} | "
              f"{len(cells)} -> {sum(1 for k in after if k[0] == name)} rows, "
              f"{sum(1 for k in after if k[0] == name and after[k]['status'] == 'ok')} ok |")


def _assert_resumed(before: dict[tuple, dict], after: dict[tuple, dict], db: Path, run_id: str) -> None:
    """Same cells, each once; ok cells untouched (same row, same samples); the rest now ok."""
    _fault_table(before, after)
    assert set(after) == set(before)
    with sqlite3.connect(db) as con:
        per_key = con.execute("SELECT COUNT(*) FROM cells WHERE run_id = ? GROUP BY device_name, model, variant, "
                              "delegate, threads HAVING COUNT(*) > 1", (run_id,)).fetchall()
        runs = con.execute("SELECT COUNT(*), MAX(status) FROM runs").fetchone()
    assert per_key == [] and runs == (1, "ok")
    for key, cell in before.items():
        if cell["status"] == "ok":
            assert (after[key]["id"], after[key]["samples"], after[key]["finished_at"]) == \
                   (cell["id"], cell["samples"], cell["finished_at"])
        else:
            assert after[key]["status"] == "ok", (key, after[key]["reason"])
            assert any("--resume" in w for w in json.loads(after[key]["warnings_json"]))
            assert len(after[key]["samples"]) > 0


@pytest.fixture
def other_key(tmp_path) -> Path:
    key = tmp_path / "not_authorized"
    subprocess.run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-f", str(key)], check=True)
    return key


def test_configuration_faults_fail_their_cells_and_resume_completes(sshd_host, tiny_tflite, other_key,
                                                                    session_cache, tmp_path):
    hang = write(tmp_path / "hanging-python", f"#!/bin/sh\n# a board whose runner never answers a measurement\n"
                 f"case \"$*\" in *--probe*|*--telemetry*) exec {sys.executable} \"$@\";; esac\nexec sleep 600\n")
    hang.chmod(0o755)
    empty_known_hosts = write(tmp_path / "known_hosts_empty", "")

    def entry(name, **extra):
        settings = {"python": sys.executable, "workdir": str(tmp_path / "w" / name), "connect_timeout_s": 5,
                    "retry_backoff_s": 0.2, **extra}
        return sshd_host.inventory_entry(name, **settings)

    healthy = [{"name": "local", "transport": "local", "workdir": str(tmp_path / "w" / "local"),
                "cooldown": {"max_temp_c": -273, "timeout_s": 1, "poll_s": 0.5}},
               entry("good")]
    broken = [entry("stranger", known_hosts=str(empty_known_hosts)),
              entry("wrong-key", identity_file=str(other_key)),
              entry("no-runtime", python="/usr/bin/python3"),
              entry("hangs", python=str(hang), run_timeout_s=2)]
    fixed = [entry("stranger", known_hosts=str(empty_known_hosts)), entry("wrong-key"), entry("no-runtime"),
             entry("hangs")]
    inventory = write(tmp_path / "inventory.yaml", inventory_yaml(healthy + broken))
    plan = write(tmp_path / "plan.yaml", f"name: faults\nmodels:\n  - path: {tiny_tflite}\n    name: tiny\n"
                 "threads: [1, 2]\nquarantine_after: 2\n" + FAST_PROTOCOL)
    db = tmp_path / "results.sqlite"
    common = ("--db", str(db), "--cache-dir", str(session_cache))

    first = harness_cli("sweep", "--plan", str(plan), "--inventory", str(inventory), *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr  # partial: some devices failed, the sweep did not
    run_id = first.stdout.strip().splitlines()[-1]
    before = _cells(db, run_id)
    devices = _by_device(before)
    assert len(before) == 6 * 4  # six devices x (cpu, xnnpack) x (1, 2 threads), every cell a row
    for name in ("local", "good"):
        assert [c["status"] for c in devices[name]] == ["ok"] * 4, devices[name][0]["reason"]
    reasons = {name: [c["reason"] for c in devices[name]] for name in ("stranger", "wrong-key", "no-runtime", "hangs")}
    assert all(c["status"] == "failed" for name in reasons for c in devices[name])
    assert all("unknown host key" in r and "harness devices --trust stranger" in r for r in reasons["stranger"])
    assert all("authentication failed" in r and "not_authorized" in r for r in reasons["wrong-key"])
    assert "does not import" in reasons["no-runtime"][0]
    assert f"ssh -p {sshd_host.port}" in reasons["no-runtime"][0] and "pip install numpy ai-edge-litert" in reasons["no-runtime"][0]
    assert all("quarantined after 2 consecutive device failures" in r for r in reasons["no-runtime"][2:])
    # its runner hangs but its probe answers: slow models, not a device fault, so never quarantined
    assert all("ran past its 2 s timeout" in r and "not counted toward quarantine" in r for r in reasons["hangs"])
    warnings = json.loads(devices["local"][0]["warnings_json"])
    assert any(w.startswith(("cool-down not possible", "cool-down timed out")) for w in warnings)
    assert "cooldown_wait_s" in devices["local"][0]["metrics"]

    trusted = harness_cli("devices", "--inventory", str(inventory), "--trust", "stranger", cwd=tmp_path)
    assert trusted.returncode == 0 and "SHA256:" in trusted.stdout and "recorded in" in trusted.stdout
    write(inventory, inventory_yaml(healthy + fixed))
    resumed = harness_cli("sweep", "--resume", run_id, "--inventory", str(inventory), *common, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == run_id
    assert "16 cells to measure" in resumed.stderr or "8 cells settled, 16 to measure" in resumed.stderr
    _assert_resumed(before, _cells(db, run_id), db, run_id)


def test_sshd_killed_and_link_cut_mid_sweep(tmp_path, tiny_tflite, session_cache, sshd_host):
    """Two boards lose their connection in the middle of a sweep: one's sshd is killed (as a board
    losing power), the other's network link goes down during a run. The local device goes on.

    pi-a's sshd listens on loopback: it is this machine, so the local worker measures it, one
    launch at a time with `local`; pi-b is in a network namespace: a machine of its own, measured
    beside them. The faults come after every cell's first launch, so no board cell is complete:
    every one of them fails (a cell is stored whole or not at all) and resume measures it again."""
    from tests.peers.sshd import netns_supported, start_sshd

    reason = netns_supported()
    if reason:
        pytest.skip(reason)
    killed = start_sshd(tmp_path / "sshd-a", name="a", authorized_key=sshd_host.identity_file)
    cut = start_sshd(tmp_path / "sshd-b", name="b", netns=True, authorized_key=sshd_host.identity_file)
    try:
        fast_fail = {"python": sys.executable, "connect_timeout_s": 2, "link_timeout_s": 3, "keepalive_s": 1,
                     "retries": 1, "retry_backoff_s": 0.5}
        inventory = write(tmp_path / "inventory.yaml", inventory_yaml([
            {"name": "local", "transport": "local", "workdir": str(tmp_path / "w" / "local")},
            killed.inventory_entry("pi-a", workdir=str(tmp_path / "w" / "a"), **fast_fail),
            cut.inventory_entry("pi-b", workdir=str(tmp_path / "w" / "b"), **fast_fail)]))
        plan = write(tmp_path / "plan.yaml", f"name: midrun\nmodels:\n  - path: {tiny_tflite}\n    name: tiny\n"
                     "threads: [1, 2, 3]\nquarantine_after: 2\nprotocol: {warmup_runs: 1, warmup_min_secs: 0.05, "
                     "num_runs: 10, min_secs: 0.5, max_secs: 5, repetitions: 3}\n")
        db = tmp_path / "results.sqlite"
        common = ("--db", str(db), "--cache-dir", str(session_cache))
        sweep = subprocess.Popen([sys.executable, "-m", "harness", "sweep", "--plan", str(plan), "--inventory",
                                  str(inventory), *common], cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(sweep.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 300
        faults = {"local": killed.kill, f"ssh:{cut.host}:{cut.port}": cut.link_down}
        while faults and time.monotonic() < deadline:  # each machine's fault once it is through round 1
            time.sleep(0.1)
            done = " ".join(line for line in list(lines) if "round 1/3 of launches done" in line)
            for machine in [m for m in faults if f"{m}: round 1/3" in done]:
                faults.pop(machine)()
            assert sweep.poll() is None, "".join(lines)
        out = sweep.stdout.read()
        sweep.wait(timeout=300)
        reader.join(timeout=10)
        assert sweep.returncode == 0, "".join(lines)
        assert "local, pi-a are one machine (local)" in "".join(lines)
        run_id = out.strip().splitlines()[-1]
        before = _cells(db, run_id)
        devices = _by_device(before)
        assert len(before) == 3 * 6
        assert [c["status"] for c in devices["local"]] == ["ok"] * 6
        for name, words in (("pi-a", ("cannot connect", "Connection refused", "connection lost")),
                            ("pi-b", ("connection lost", "cannot connect", "timed out"))):
            assert {c["status"] for c in devices[name]} == {"failed"}, (name, "".join(lines)[-3000:])
            failed = [c["reason"] for c in devices[name]]
            assert all(any(w in r for w in words) or "quarantined" in r for r in failed), (name, failed)
        # pi-b was measured beside the local worker (timestamps are to the second)
        assert min(c["started_at"] for c in devices["pi-b"]) <= max(c["finished_at"] for c in devices["local"])
        assert min(c["started_at"] for c in devices["local"]) <= max(c["finished_at"] for c in devices["pi-b"])

        killed.restart()
        cut.link_up()
        resumed = harness_cli("sweep", "--resume", run_id, *common, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        _assert_resumed(before, _cells(db, run_id), db, run_id)
    finally:
        killed.stop()
        cut.stop()


def test_names_that_look_like_shell_syntax_run_as_names(sshd_host, tiny_tflite, session_cache, tmp_path):
    token = os.urandom(4).hex()
    canaries = [f"pwned-{token}-{i}" for i in range(4)]  # relative: a pasted name would create them in a cwd
    model = tmp_path / f"m; touch {canaries[0]} $(touch {canaries[1]}) 'q\" x.tflite"
    model.write_bytes(tiny_tflite.read_bytes())
    workdir = tmp_path / f"w; touch {canaries[2]}\n$(touch {canaries[3]}) `id` dir"
    device = f"pi \"4\"; $(touch {canaries[1]})"
    inventory = write(tmp_path / "inventory.yaml", inventory_yaml([sshd_host.inventory_entry(
        device, python=sys.executable, workdir=str(workdir))]))
    plan = write(tmp_path / "plan.yaml", "models:\n" + f"  - path: {json.dumps(model.name)}\n"
                 f"    name: {json.dumps('tiny; $(id) ' + chr(39))}\n" + "threads: [1]\n" + FAST_PROTOCOL)
    db = tmp_path / "results.sqlite"
    result = harness_cli("sweep", "--plan", str(plan), "--inventory", str(inventory), "--db", str(db),
                         "--cache-dir", str(session_cache), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cells = list(_cells(db, result.stdout.strip().splitlines()[-1]).values())
    assert [c["status"] for c in cells] == ["ok", "ok"] and {c["device_name"] for c in cells} == {device}
    assert {c["model"] for c in cells} == {"tiny; $(id) '"}
    places = {tmp_path, workdir.parent, Path.home(), Path.cwd(), Path("/")}
    assert not [p / c for p in places for c in canaries if (p / c).exists()], "a name was run as a command"
    assert sorted(p.suffix for p in workdir.iterdir()) == [".py", ".tflite"]  # runner and model, by hash
    assert f"{device}: pushed 2 file(s), " in result.stderr
    again = harness_cli("sweep", "--plan", str(plan), "--inventory", str(inventory), "--db", str(db),
                        "--cache-dir", str(session_cache), cwd=tmp_path)
    assert again.returncode == 0 and f"{device}: pushed 0 file(s), 0 bytes; 2 already on the device" in again.stderr


def test_devices_table_reports_each_board_and_why(sshd_host, tmp_path):
    inventory = write(tmp_path / "inventory.yaml", inventory_yaml([
        sshd_host.inventory_entry("pi-ok", python=sys.executable),
        sshd_host.inventory_entry("pi-bare", python="/usr/bin/python3"),
        sshd_host.inventory_entry("pi-new", python=sys.executable, known_hosts=str(tmp_path / "kh"))]))
    shown = harness_cli("devices", "--inventory", str(inventory), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: line for line in shown.stdout.splitlines()[2:] if line.startswith("pi-")}
    assert "yes" in rows["pi-ok"] and "ai_edge_litert 2.3.0" in rows["pi-ok"] and "x86_64" in rows["pi-ok"]
    assert "MISSING (1)" in rows["pi-bare"] and "NO (2)" in rows["pi-new"]
    notes = [line for line in shown.stdout.splitlines() if line.startswith("(")]
    assert notes[0].startswith("(1) pi-bare: no TFLite runtime imports") and f"ssh -p {sshd_host.port}" in notes[0]
    assert notes[1].startswith("(2) pi-new: unknown host key") and "--trust pi-new" in notes[1]
    assert not (tmp_path / "kh").exists()  # looking is not trusting
