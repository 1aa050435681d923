"""The device protocol on the local device: push by content hash, run with exit codes and stderr,
timeouts that kill what they started, and the fingerprint. (The SSH transport will run the same
contract.)"""

from __future__ import annotations

import os
import sys
import time

import pytest

from devices.base import IDENTITY_KEYS
from harness.errors import DeviceTimeout, DeviceUnreachable


def test_push_is_idempotent_by_content(local_device, tmp_path):
    src = tmp_path / "model.tflite"
    src.write_bytes(b"some model bytes")
    first = local_device.push(src)
    pushed = local_device.bytes_pushed
    assert pushed == len(b"some model bytes")
    assert local_device.push(src) == first and local_device.bytes_pushed == pushed
    copy = tmp_path / "elsewhere.tflite"
    copy.write_bytes(src.read_bytes())
    assert local_device.push(copy) == first and local_device.bytes_pushed == pushed
    src.write_bytes(b"other bytes")
    assert local_device.push(src) != first and local_device.bytes_pushed > pushed
    assert open(first, "rb").read() == b"some model bytes"
    assert first.endswith(".tflite") and os.path.basename(first)[:-7].isalnum()


def test_run_returns_exit_code_stdout_and_stderr(local_device):
    result = local_device.run([sys.executable, "-c", "import sys; print('out'); sys.stderr.write('err'); sys.exit(3)"], 30)
    assert (result.exit_code, result.stdout.strip(), result.stderr) == (3, "out", "err")
    assert result.seconds > 0


def test_run_timeout_kills_the_process_group(local_device, tmp_path):
    marker = tmp_path / "child.pid"
    script = (f"import os, subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
              f" open({str(marker)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    started = time.monotonic()
    with pytest.raises(DeviceTimeout, match="timeout"):
        local_device.run([sys.executable, "-c", script], 2)
    assert time.monotonic() - started < 20
    child = int(marker.read_text())
    for _ in range(50):  # the grandchild is gone too (killed with the session's process group)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"process {child} outlived the timeout")


def test_missing_program_is_unreachable(local_device):
    with pytest.raises(DeviceUnreachable):
        local_device.run(["/nonexistent/python"], 5)


def test_fingerprint_keys(local_device):
    fp = local_device.fingerprint()
    assert set(IDENTITY_KEYS) <= set(fp)
    assert fp["machine"] and fp["kernel"] and fp["cores"] >= 1 and fp["runtime"] == "ai_edge_litert"
    assert len(fp["fingerprint_id"]) == 16 and fp["fingerprint_id"] == local_device.fingerprint()["fingerprint_id"]
    health = local_device.health()
    assert health.reachable and health.runtime == "ai_edge_litert" and health.runtime_version


def test_default_workdir_is_safe_for_any_device_name():
    from pathlib import Path

    from devices.local import LocalConfig, LocalDevice

    root = Path("~/.cache/harness/devices").expanduser()
    odd = LocalDevice(LocalConfig(name="lab/pi 4; rm -rf $(id)"))
    assert odd.workdir.parent == root and "/" not in odd.workdir.name and "$" not in odd.workdir.name
    assert odd.workdir != LocalDevice(LocalConfig(name="lab/pi 4; rm -rf $(id) ")).workdir
    assert LocalDevice(LocalConfig(name="local")).workdir == root / "local"
