"""The Android device peer tests/peers/adbd.py, checked with two independent real ADB clients:
adb-shell (the harness's library) and Google's `adb` (the platform-tools binary bundled by
adbutils, and Debian's older one), each against the real wire protocol over TCP."""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from adb_shell import adb_device  # a dependency of the harness: its absence is a failure, not a skip
from adb_shell.auth.keygen import keygen
from adb_shell.auth.sign_pythonrsa import PythonRSASigner

from tests.peers.adbd import (A_CNXN, A_VERSION, AUTH_TOKEN, HEADER, MAX_PAYLOAD, AndroidProfile, adb_public_key,
                              start_adb_peer)

TIMEOUT = 10


@pytest.fixture
def adbkey(tmp_path) -> Path:
    path = tmp_path / "keys" / "adbkey"
    path.parent.mkdir()
    keygen(str(path))
    return path


@pytest.fixture
def peer(tmp_path, adbkey):
    """A Pixel 7 that already trusts `adbkey` (as after an earlier "Always allow")."""
    with start_adb_peer(tmp_path / "phone", authorized_keys=[adb_public_key(adbkey)],
                        accept_new_keys=False) as device:
        yield device


def connect(peer, adbkey: Path, auth_timeout_s: float = 5):
    device = adb_device.AdbDeviceTcp(peer.host, peer.port, default_transport_timeout_s=TIMEOUT)
    device.connect(rsa_keys=[PythonRSASigner.FromRSAKeyPath(str(adbkey))], auth_timeout_s=auth_timeout_s)
    return device


def shell(device, command: str, timeout: float = TIMEOUT) -> str:
    return device.shell(command, transport_timeout_s=timeout, read_timeout_s=timeout, timeout_s=timeout)


def key_blob(line: str) -> str:
    return line.split()[0]


# -- adb-shell ----------------------------------------------------------------------------------------


def test_a_new_key_is_allowed_at_the_prompt_then_accepted_by_its_signature(tmp_path, adbkey):
    with start_adb_peer(tmp_path / "phone") as peer:
        assert peer.accepted_keys == [] and peer.authorized_keys == []
        device = connect(peer, adbkey)
        assert shell(device, "echo ok") == "ok\n"
        device.close()
        pub = (adbkey.parent / "adbkey.pub").read_text()
        assert [key_blob(k) for k in peer.accepted_keys] == [key_blob(pub)] == [key_blob(adb_public_key(adbkey))]
        assert "answered Allow" in peer.log_text() and "signature verified" not in peer.log_text()

        peer.accept_new_keys = False  # a second prompt would now never be answered
        device = connect(peer, adbkey, auth_timeout_s=2)
        assert shell(device, "getprop ro.product.model") == "Pixel 7\n"
        device.close()
        assert "signature verified" in peer.log_text()
        assert len(peer.accepted_keys) == 1


def test_a_refused_key_never_gets_a_connection(tmp_path, adbkey):
    with start_adb_peer(tmp_path / "phone", accept_new_keys=False) as peer:
        started = time.monotonic()
        with pytest.raises(Exception):
            connect(peer, adbkey, auth_timeout_s=1)
        assert time.monotonic() - started < 5
        assert peer.accepted_keys == [] and peer.commands == []
        assert "not answered" in peer.log_text()


def test_shell_v1_passes_odd_characters_and_merges_stderr(peer, adbkey):
    device = connect(peer, adbkey)
    out = shell(device, "printf '%s|' 'two  spaces' \"dq'sq\" '$HOME' 'tab\there' 'ümlaut €'; echo; "
                        "echo to-stderr >&2; echo \"$HOME $USER\"")
    assert out == "two  spaces|dq'sq|$HOME|tab\there|ümlaut €|\nto-stderr\n/ shell\n"
    assert peer.commands[-1].startswith("printf '%s|' 'two  spaces'")
    device.close()


def test_exit_status_through_an_appended_marker(peer, adbkey):
    device = connect(peer, adbkey)
    # the form the harness uses: the command's output, an empty echo, then the marker and status
    out = shell(device, "sh -c 'echo partial; exit 7' 2>&1; rc=$?; echo; echo harness-exit-abc:$rc")
    head, _, tail = out.rpartition("harness-exit-abc:")
    assert head == "partial\n\n" and tail.strip() == "7"
    assert shell(device, "kill -9 $$; echo unreachable") == ""  # a killed shell: no output, stream closed
    device.close()


def test_each_command_is_a_session_its_group_can_be_killed_from_another_connection(peer, adbkey):
    device, killer = connect(peer, adbkey), connect(peer, adbkey)
    pidfile = peer.device_path_to_host("/data/local/tmp/run.pid")
    result = {}
    worker = threading.Thread(target=lambda: result.update(out=shell(
        device, "echo $$ > /data/local/tmp/run.pid; sleep 30 & sleep 30; echo never")))
    worker.start()
    deadline = time.monotonic() + 5
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = int(pidfile.read_text())
    assert os.getpgid(pid) == os.getsid(pid) == pid  # a session leader, as adbd makes every shell
    started = time.monotonic()
    assert shell(killer, "kill -9 -$(cat /data/local/tmp/run.pid); echo rc=$?") == "rc=0\n"
    worker.join(TIMEOUT)
    assert result == {"out": ""} and time.monotonic() - started < 3
    device.close()
    killer.close()


def test_push_stat_pull_and_list(peer, adbkey, tmp_path):
    device = connect(peer, adbkey)
    local = tmp_path / "blob.bin"
    local.write_bytes(os.urandom(200_000))  # several 64 KiB sync DATA chunks
    device.push(str(local), "/data/local/tmp/harness/blob.bin", st_mode=0o100644, mtime=1_700_000_000)
    on_host = peer.device_path_to_host("/data/local/tmp/harness/blob.bin")
    assert on_host == peer.root / "data/local/tmp/harness/blob.bin"
    assert on_host.read_bytes() == local.read_bytes()
    mode, size, mtime = device.stat("/data/local/tmp/harness/blob.bin")
    assert (size, mtime) == (200_000, 1_700_000_000)
    assert mode == 0o100666  # adbd copies the owner's bits to group and other
    assert device.stat("/data/local/tmp/nothing-here") == (0, 0, 0)
    back = tmp_path / "back.bin"
    device.pull("/data/local/tmp/harness/blob.bin", str(back))
    assert back.read_bytes() == local.read_bytes()
    listing = {bytes(f.filename).decode(): (f.mode, f.size) for f in device.list("/data/local/tmp/harness")}
    assert listing["blob.bin"] == (0o100666, 200_000) and {".", ".."} <= set(listing)
    with pytest.raises(Exception, match="open failed: No such file or directory"):
        device.pull("/data/local/tmp/nothing-here", str(tmp_path / "none"))
    with pytest.raises(Exception, match="couldn.+t create file: Not a directory"):
        device.push(str(local), "/data/local/tmp/harness/blob.bin/inside")
    assert shell(device, "cat /data/local/tmp/harness/blob.bin | wc -c").strip() == "200000"
    device.close()


def test_device_files_and_commands_see_device_paths(peer, adbkey):
    device = connect(peer, adbkey)
    props = shell(device, "getprop")
    assert "[ro.product.model]: [Pixel 7]\n" in props and "[ro.soc.model]: [GS201]\n" in props
    assert re.search(r"^\[ro\.build\.fingerprint\]: \[google/panther/panther:14/\S+:user/release-keys\]$", props, re.M)
    assert shell(device, "getprop ro.build.version.sdk; getprop no.such.prop; uname -m") == "34\n\naarch64\n"
    assert shell(device, "cat /sys/devices/system/cpu/possible; cat /sys/devices/system/cpu/cpu7/cpufreq/"
                         "scaling_governor; cd /data/local/tmp && pwd; ls -d /sys/class/thermal/thermal_zone0") == \
        "0-7\nsched_pixel\n/data/local/tmp\n/sys/class/thermal/thermal_zone0\n"
    peer.set_temperature(47.25, "BIG")
    peer.thermal_status = 3
    zones = shell(device, "for z in /sys/class/thermal/thermal_zone*; do echo \"$z|$(cat $z/type)|$(cat $z/temp)\"; done")
    assert "/sys/class/thermal/thermal_zone0|BIG|47250\n" in zones and "|TPU|" in zones
    dump = shell(device, "dumpsys thermalservice")
    assert "\nThermal Status: 3\n" in dump and "\nHAL Ready: true\n" in dump
    current = dump.split("Current temperatures from HAL:\n", 1)[1]
    assert "\tTemperature{mValue=47.25, mType=0, mName=BIG, mStatus=0}\n" in current
    assert "mName=VIRTUAL-SKIN, mStatus=3}" in current
    peer.set_temperature(30)
    assert shell(device, "cat /sys/class/thermal/thermal_zone5/temp") == "30000\n"
    device.close()


def test_taskset_folds_a_pixel_mask_onto_this_host_and_rejects_bad_masks(peer, adbkey):
    device = connect(peer, adbkey)
    allowed = sorted(os.sched_getaffinity(0))
    out = shell(device, "taskset f0 sh -c 'grep Cpus_allowed_list /proc/self/status'")
    expected = {allowed[k % len(allowed)] for k in range(4, 8)}
    listed = out.split(":", 1)[1].strip()
    cpus = set()
    for part in listed.split(","):
        lo, _, hi = part.partition("-")
        cpus |= set(range(int(lo), int(hi or lo) + 1))
    assert cpus == expected
    assert shell(device, "taskset 0xf0 true; echo rc=$?") == "taskset: bad mask '0xf0'\nrc=1\n"
    assert shell(device, "taskset f0; echo rc=$?") == "taskset: Needs 2 args\nrc=1\n"
    device.close()


def test_streams_run_side_by_side_on_one_connection_and_on_two(peer, adbkey, tmp_path):
    device = connect(peer, adbkey)
    other = connect(peer, adbkey)
    local = tmp_path / "during.bin"
    local.write_bytes(b"x" * 100_000)
    slow = device.streaming_shell("echo first; sleep 1; echo slow-done", transport_timeout_s=TIMEOUT,
                                  read_timeout_s=TIMEOUT)
    assert next(slow) == "first\n"
    started = time.monotonic()
    device.push(str(local), "/data/local/tmp/during.bin")  # the same connection, the shell stream still open
    assert shell(other, "echo other") == "other\n"  # and a second connection
    assert time.monotonic() - started < 0.9  # both done while the shell sleeps
    assert "".join(slow) == "slow-done\n"
    assert peer.device_path_to_host("/data/local/tmp/during.bin").stat().st_size == 100_000
    device.close()
    other.close()


def test_drop_during_cuts_the_connection_and_kills_the_command(peer, adbkey):
    device = connect(peer, adbkey)
    pidfile = peer.device_path_to_host("/data/local/tmp/shell.pid")
    peer.drop_during("sleep 30", 0.3)
    started = time.monotonic()
    with pytest.raises(Exception):
        shell(device, "echo $$ > /data/local/tmp/shell.pid; sleep 30; echo never")
    assert time.monotonic() - started < 5
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}")
    assert "dropping the connection" in peer.log_text()
    device.close()
    # one shot: the next connection runs the same command to its end
    device = connect(peer, adbkey)
    assert shell(device, "sleep 0.1; echo 'sleep 30 is fine now'") == "sleep 30 is fine now\n"
    peer.drop_connections()
    with pytest.raises(Exception):
        shell(device, "echo after the drop", timeout=2)
    device.close()


def _raw_cnxn(peer, checksum_delta: int = 0, magic_delta: int = 0) -> bytes:
    """Sends a CNXN from a raw socket; returns what came back before the peer closed or went quiet."""
    payload = b"host::features=shell_v2\0"
    header = HEADER.pack(A_CNXN, A_VERSION, MAX_PAYLOAD, len(payload), (sum(payload) + checksum_delta) & 0xFFFFFFFF,
                         (A_CNXN ^ 0xFFFFFFFF) + magic_delta)
    with socket.create_connection((peer.host, peer.port), timeout=3) as sock:
        sock.sendall(header + payload)
        received = b""
        try:
            while len(received) < HEADER.size + 20:
                chunk = sock.recv(4096)
                if not chunk:
                    return received
                received += chunk
        except ConnectionResetError:  # closed with our payload unread: a reset
            return received
        except socket.timeout:
            pass
        return received


def test_a_bad_checksum_or_magic_closes_the_connection(peer):
    good = _raw_cnxn(peer)
    command, arg0, _, length, _, magic = HEADER.unpack(good[:HEADER.size])
    assert (struct.pack("<I", command), arg0, length, magic) == (b"AUTH", AUTH_TOKEN, 20, command ^ 0xFFFFFFFF)
    assert _raw_cnxn(peer, checksum_delta=1) == b""
    assert _raw_cnxn(peer, magic_delta=1) == b""
    assert "bad checksum" in peer.log_text() and "bad magic" in peer.log_text()


def test_benchmark_model_stand_in_pushed_and_run_under_taskset(peer, adbkey, tiny_tflite):
    device = connect(peer, adbkey)
    device.push(str(peer.benchmark_model_host_path), "/data/local/tmp/bm", st_mode=0o100644)
    device.push(str(tiny_tflite), "/data/local/tmp/m.tflite")
    args = ("--graph=/data/local/tmp/m.tflite --num_threads=2 --warmup_runs=1 --warmup_min_secs=0 --num_runs=5 "
            "--min_secs=0 --max_secs=5 --report_peak_memory_footprint=true")
    out = shell(device, f"chmod 755 /data/local/tmp/bm && taskset f0 /data/local/tmp/bm {args} 2>&1; echo rc=$?", 60)
    assert out.endswith("rc=0\n"), out
    lines = out.splitlines()
    for line in ("INFO: STARTING!", "INFO: Num threads: [2]", "INFO: Graph: [/data/local/tmp/m.tflite]",
                 "INFO: Report the peak memory footprint: [1]", "INFO: #threads used for CPU inference: [2]",
                 "INFO: Loaded model /data/local/tmp/m.tflite", "INFO: Initialized TensorFlow Lite runtime.",
                 "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
                 "INFO: Running benchmark for at least 5 iterations and at least 0 seconds but terminate if "
                 "exceeding 5 seconds."):
        assert line in lines, line
    assert re.search(r"^INFO: Replacing \d+ out of \d+ node\(s\) with delegate \(TfLiteXNNPackDelegate\) node, "
                     r"yielding \d+ partitions for the whole graph\.$", out, re.M)
    timed = re.findall(r"^INFO: count=(\d+) first=\d+ curr=\d+ min=\d+ max=\d+ avg=[\d.e+]+ std=\d+ "
                       r"p5=\d+ median=\d+ p95=\d+$", out, re.M)
    assert timed and int(timed[-1]) >= 5
    assert re.search(r"^INFO: Inference timings in us: Init: \d+, First inference: \d+, Warmup \(avg\): [\d.e+]+, "
                     r"Inference \(avg\): [\d.e+]+$", out, re.M)
    assert re.search(r"^INFO: Overall peak memory footprint \(MB\) via periodic monitoring: [\d.]+$", out, re.M)
    assert str(peer.root) not in out  # every host path was mapped back to the device's

    peer.delegate_failure["nnapi"] = "op_failed"
    out = shell(device, "/data/local/tmp/bm --graph=/data/local/tmp/m.tflite --use_nnapi=true 2>&1; echo rc=$?", 60)
    assert "INFO: NNAPI accelerators available: [google-edgetpu,google-armnn,nnapi-reference]" in out
    assert "ERROR: NN API returned error ANEURALNETWORKS_OP_FAILED" in out
    assert out.endswith("ERROR: Failed to apply NNAPI delegate.\nERROR: Benchmarking failed.\nrc=1\n"), out
    out = shell(device, "/data/local/tmp/bm --graph=/data/local/tmp/m.tflite --use_nnapi=true "
                        "--nnapi_accelerator_name=qti-htp 2>&1; echo rc=$?", 60)
    assert ("ERROR: Could not find the specified NNAPI accelerator: qti-htp. Must be one of: "
            "{google-edgetpu,google-armnn,nnapi-reference}.") in out and out.endswith("rc=1\n")
    out = shell(device, "/data/local/tmp/bm --graph=/data/local/tmp/gone.tflite 2>/dev/null; echo rc=$?")
    assert "INFO: Graph: [/data/local/tmp/gone.tflite]" in out and out.endswith("rc=1\n")
    out = shell(device, "/data/local/tmp/bm --graph=/data/local/tmp/gone.tflite 2>&1 >/dev/null")
    assert out == ("ERROR: Could not open '/data/local/tmp/gone.tflite'.\nERROR: Failed to mmap model "
                   "/data/local/tmp/gone.tflite\nERROR: Benchmarking failed.\n")
    device.close()


def test_install_benchmark_model_and_a_custom_profile(tmp_path, adbkey):
    profile = AndroidProfile(model="Pixel 7 Pro", device="cheetah", name="cheetah", thermal_status=2)
    with start_adb_peer(tmp_path / "phone", profile=profile, authorized_keys=[adb_public_key(adbkey)]) as peer:
        peer.install_benchmark_model()
        assert os.access(peer.root / "data/local/tmp/benchmark_model", os.X_OK)
        device = connect(peer, adbkey)
        assert shell(device, "getprop ro.product.model; dumpsys thermalservice | grep 'Thermal Status'") == \
            "Pixel 7 Pro\nThermal Status: 2\n"
        assert shell(device, "test -x /data/local/tmp/benchmark_model; echo rc=$?") == "rc=0\n"
        assert peer.banner().startswith("device::ro.product.name=cheetah;ro.product.model=Pixel 7 Pro;")
        device.close()


# -- Google's adb -----------------------------------------------------------------------------------


def _adb_binaries():
    bundled = None
    try:
        import adbutils

        candidate = Path(adbutils.__file__).parent / "binaries" / "adb"
        bundled = candidate if candidate.is_file() else None
    except ImportError:
        pass
    debian = Path("/usr/lib/android-sdk/platform-tools/adb")
    return [
        pytest.param(bundled, id="platform-tools-adbutils", marks=pytest.mark.skipif(
            bundled is None, reason="adbutils and its bundled platform-tools adb are not installed (pip install adbutils)")),
        pytest.param(debian if debian.is_file() else None, id="debian-adb", marks=pytest.mark.skipif(
            not debian.is_file(), reason="Debian's adb is not installed (apt-get install adb)")),
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GoogleAdb:
    """One real `adb` server of our own: private port, HOME and keys under tmp_path."""

    def __init__(self, binary: Path, home: Path):
        self.binary, self.port = binary, _free_port()
        (home / ".android").mkdir(parents=True)
        (home / "vendor-keys").mkdir()
        self.key = home / ".android" / "adbkey"
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TMPDIR": str(home),
                    "ANDROID_USER_HOME": str(home / ".android"), "ANDROID_SDK_HOME": str(home),
                    "ADB_VENDOR_KEYS": str(home / "vendor-keys")}

    def __call__(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binary), "-P", str(self.port), *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(params=_adb_binaries())
def google_adb(request, tmp_path):
    adb = GoogleAdb(request.param, tmp_path / f"adb-home-{request.node.callspec.id}")
    request.addfinalizer(lambda: adb("kill-server", timeout=10))
    started = adb("start-server", timeout=30)
    assert started.returncode == 0, started.stderr
    assert adb.key.is_file()  # the server made its key pair in our ANDROID_USER_HOME
    return adb


def test_google_adb_with_an_authorized_key(google_adb, tmp_path):
    adb = google_adb
    with start_adb_peer(tmp_path / "phone", authorized_keys=[adb_public_key(adb.key)], accept_new_keys=False) as peer:
        connected = adb("connect", peer.serial)
        assert f"connected to {peer.serial}" in connected.stdout, connected
        assert adb("-s", peer.serial, "wait-for-device", timeout=20).returncode == 0
        devices = adb("devices", "-l").stdout
        assert re.search(rf"^{re.escape(peer.serial)}\s+device .*product:panther model:Pixel_7 device:panther",
                         devices, re.M), devices
        model = adb("-s", peer.serial, "shell", "getprop ro.product.model")
        assert (model.returncode, model.stdout) == (0, "Pixel 7\n")
        assert adb("-s", peer.serial, "shell", "exit 3").returncode == 3  # shell v2 carries the exit status
        assert adb("-s", peer.serial, "exec-out", "getprop ro.product.device").stdout == "panther\n"  # exec:
        piped = subprocess.run([str(adb.binary), "-P", str(adb.port), "-s", peer.serial, "shell", "tr a-z A-Z"],
                               input="stdin over shell v2\n", capture_output=True, text=True, env=adb.env, timeout=20)
        assert (piped.returncode, piped.stdout) == (0, "STDIN OVER SHELL V2\n")
        refused = adb("-s", peer.serial, "root")  # a service this phone does not offer: the stream is closed
        assert refused.returncode != 0 and "unknown service 'root:'" in peer.log_text()
        split = adb("-s", peer.serial, "shell", "echo out; echo err >&2; exit 5")
        assert (split.returncode, split.stdout, split.stderr) == (5, "out\n", "err\n")
        local = tmp_path / "x.bin"
        local.write_bytes(os.urandom(300_000))
        # the adb server multiplexes every command over its one connection to the phone
        slow = subprocess.Popen([str(adb.binary), "-P", str(adb.port), "-s", peer.serial, "shell",
                                 "sleep 1; echo slow-done"], stdout=subprocess.PIPE, text=True, env=adb.env,
                                stdin=subprocess.DEVNULL)
        try:
            time.sleep(0.2)
            pushed = adb("-s", peer.serial, "push", str(local), "/data/local/tmp/x")
            assert pushed.returncode == 0, pushed.stderr
            assert slow.poll() is None  # the push went through while the shell stream was open
        finally:
            out, _ = slow.communicate(timeout=20)
        assert (slow.returncode, out) == (0, "slow-done\n")
        assert peer.log_text().count(": connected") == 1
        assert (peer.root / "data/local/tmp/x").read_bytes() == local.read_bytes()
        back = tmp_path / "back.bin"
        pulled = adb("-s", peer.serial, "pull", "/data/local/tmp/x", str(back))
        assert pulled.returncode == 0 and back.read_bytes() == local.read_bytes(), pulled.stderr
        missing = adb("-s", peer.serial, "pull", "/data/local/tmp/none", str(tmp_path / "none"))
        # adb stats first: an all-zero STAT is "does not exist"
        assert missing.returncode == 1  # (Debian's adb 29 prints its errors on stdout)
        assert "'/data/local/tmp/none' does not exist" in missing.stdout + missing.stderr
        assert peer.commands == ["getprop ro.product.model", "exit 3", "getprop ro.product.device",
                                 "tr a-z A-Z", "echo out; echo err >&2; exit 5",
                                 "sleep 1; echo slow-done"]
        assert [key_blob(k) for k in peer.accepted_keys] == [key_blob(adb_public_key(adb.key))]


def test_google_adb_gets_the_prompt_for_a_new_key(google_adb, tmp_path):
    adb = google_adb
    with start_adb_peer(tmp_path / "phone") as peer:
        connected = adb("connect", peer.serial)
        # a key the phone has never seen: adb reports the pending prompt, the user taps Allow
        assert re.search(rf"(connected to|failed to authenticate to) {re.escape(peer.serial)}", connected.stdout)
        assert adb("-s", peer.serial, "wait-for-device", timeout=20).returncode == 0
        assert adb("-s", peer.serial, "shell", "echo allowed").stdout == "allowed\n"
        assert [key_blob(k) for k in peer.authorized_keys] == [key_blob(adb_public_key(adb.key))]
        assert "answered Allow" in peer.log_text()
