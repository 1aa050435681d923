"""Where the harness writes what a command produces: a symbolic link keeps pointing where it did, a
device or a pipe given as the output is written, not replaced by a file, standard output that
fails (a full disk, a reader that went away) is one line, not a traceback; a store the user may
only read is read without a file left beside it, and writing into it is refused with exit 2.
(Outputs that are the command's own inputs, or directories, are rows of docs/errors.md.)"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ROOT, harness_cli  # noqa: E402
from test_errors import DB, _finished_run  # noqa: E402


@pytest.fixture
def store(tmp_path) -> Path:
    _finished_run(tmp_path)
    return tmp_path / DB


def test_an_output_that_is_a_symbolic_link_is_written_through_it(store, tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "latest.md").write_text("last week's\n")
    (tmp_path / "report.md").symlink_to("reports/latest.md")
    done = harness_cli("report", "--db", str(store), "--out", "report.md", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report.md").is_symlink() and os.readlink(tmp_path / "report.md") == "reports/latest.md"
    text = (tmp_path / "reports" / "latest.md").read_text()
    assert text.startswith("## Run 20260301-221500-3fa9c2") and "### net on local" in text
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["latest.md"]  # no temporary left


def test_an_output_that_is_a_pipe_or_standard_output_is_written_in_place(store, tmp_path):
    (tmp_path / "stdout").symlink_to("/proc/self/fd/1")  # what /dev/stdout is
    done = harness_cli("export", "--db", str(store), "--format", "csv", "--out", "stdout", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()  # the CSV, and only the CSV, came out on stdout
    assert lines[0].startswith("run_id,") and len(lines) == 2 and lines[1].endswith(",latency_p50_us,100.0,us")
    assert (tmp_path / "stdout").is_symlink()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    done = harness_cli("report", "--db", str(store), "--out", str(fifo), cwd=tmp_path)
    got, _ = reader.communicate(timeout=60)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and "### net" in got


def test_standard_output_on_a_full_disk_or_a_closed_pipe_is_one_line(store, tmp_path):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "harness", "report", "--db", str(store), "--format", "json"],
                              stdout=full, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "harness: error: standard output: cannot write: No space left on device"
    # a reader that went away (`| head -1` after its line): no traceback, the status of a command SIGPIPE ends
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "harness", "report", "--db", str(store), "--format", "json"],
                              stdout=write, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root's setpriv to drop "
                                                                             "the permission override")
def test_a_store_the_user_may_only_read(store, tmp_path):
    """As a user without write permission on the store (root without CAP_DAC_OVERRIDE)."""
    store.chmod(0o444)
    as_reader = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", sys.executable, "-m", "harness"]
    before = sorted(p.name for p in tmp_path.iterdir())
    done = subprocess.run([*as_reader, "report", "--db", str(store)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and "### net" in done.stdout, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no -wal or -shm left beside it
    done = subprocess.run([*as_reader, "baseline", "set", "latest", "--tag", "nightly", "--db", str(store)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"harness: error: {store}: the store is read-only here (its file or its "
                                   "directory): pass --db a writable copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_parse_says_when_nothing_reads_as_the_tools_output(tmp_path):
    (tmp_path / "plan.yaml").write_text("models:\n  - model: digits_cnn\n")
    done = harness_cli("parse", "benchmark_model", str(tmp_path / "plan.yaml"))
    assert done.returncode == 1 and json.loads(done.stdout)["runs_in_output"] == 0
    assert done.stderr.strip() == f"harness: parse: nothing in {tmp_path / 'plan.yaml'} reads as benchmark_model output"


@pytest.mark.parametrize("extra, message", [
    (["--head", "--port", "0"], "--port: 0: not a port number (1 to 65535)"),
    (["--address", "10.0.0.6:abc"], "--address: 10.0.0.6:abc: the port 'abc' is not a port number (1 to 65535)"),
    (["--head", "--address", "10.0.0.6:6379"], "lab-host start: give either --head (start a cluster) or --address "
                                               "(join one)"),
    (["--address", "10.0.0.6:6379", "--temp-dir", "/tmp/ray-x"], "--temp-dir: /tmp/ray-x: is for the head (--head); "
                                                                "a joining node uses the head's"),
])
def test_lab_host_start_refuses_options_that_do_not_go_together(tmp_path, extra, message):
    (tmp_path / "lab.yaml").write_text("devices:\n  - {name: a, transport: sim, launch_s: 0.1, lab_host: lab-a}\n")
    done = harness_cli("lab-host", "start", "--name", "lab-a", "--node-ip-address", "10.0.0.5", *extra,
                       "--inventory", "lab.yaml", "--dry-run", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == f"harness: error: {message}", done.stderr
