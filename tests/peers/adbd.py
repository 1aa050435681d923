"""An Android phone's adbd in "ADB over TCP" mode, for tests: real ADB wire protocol, no phone.

`start_adb_peer(workdir)` listens on a free port of 127.0.0.1 and answers ADB clients (adb-shell,
Google's `adb` server after `adb connect 127.0.0.1:PORT`) the way a phone's adbd does. Sources
of the formats (AOSP packages/modules/adb, Android 14): protocol.txt (24-byte header, CNXN,
AUTH, OPEN, OKAY, WRTE, CLSE, one outstanding WRTE per stream), adb.cpp / transport.cpp (device
banner `device::ro.product.name=…;ro.product.model=…;ro.product.device=…;features=…`, version
negotiation, the byte-sum checksum skipped from A_VERSION_SKIP_CHECKSUM on, a CLSE answered with
a CLSE), adb_auth / daemon/auth.cpp (20-byte token, SHA-1 pre-hashed PKCS#1 v1.5 signature, the
524-byte Android RSA public key in base64), shell_protocol.h and daemon/shell_service.cpp (shell
v2 packets, exit status 0x80|signal for a killed command), SYNC.TXT, file_sync_protocol.h and
daemon/file_sync_service.cpp (sync v1: STAT, LIST, SEND, RECV, QUIT, FAIL texts, the mode adbd
gives a pushed file).

Left out: TLS (STLS, `adb pair`), delayed_ack, sync v2 (STA2/LST2/LIS2/SND2/RCV2, compression),
symlinks pushed over sync, PTYs (an interactive `shell:` runs /bin/sh on pipes), abb, jdwp,
forward/reverse, root/remount/reboot, USB. Only `shell_v2` is advertised as a feature.

The device's files: `peer.root` is the device's "/" on this host. Sync requests map every device
path P to root/P (`device_path_to_host`). Shell commands run as `/bin/sh -c CMD` on this host,
cwd root, each in its own session (as adbd makes every shell a session leader), in a minimal
Android-like environment whose PATH starts with root/system/bin. Before running, the device
prefixes /data, /sdcard, /storage, /sys, /system and /vendor in the command text become
root/<prefix> (at a word boundary), and in what the command prints root/… becomes /… again, so a
command sees and prints device paths. root/system/bin holds stand-ins of getprop, dumpsys
(thermalservice), uname, taskset (tests/peers/android_bench.py) and sh; root/sys holds the
profile's thermal zones and cpufreq files; the benchmark_model stand-in is
tests/peers/android_bench.py (`peer.benchmark_model_host_path`, `peer.install_benchmark_model`).

Faults: `accept_new_keys` (the "Allow USB debugging?" prompt answered Allow, or never answered),
`authorized_keys`, `drop_during(substring, after_s, keep_running)` (with keep_running the commands
on the dropped connection go on, as on a phone whose adbd notices a dead Wi-Fi link late),
`drop_connections()`, `delegate_failure`, `set_temperature`, `thermal_status`. Everything is
logged to workdir/adbd.log (`log_text()`), nothing is printed. No pytest here: tests use it directly.
"""

from __future__ import annotations

import base64
import getpass
import itertools
import json
import logging
import os
import posixpath
import queue
import re
import secrets
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[2]

# -- protocol constants (adb.h, protocol.txt) ------------------------------------------------------

A_SYNC, A_CNXN, A_OPEN, A_OKAY = 0x434E5953, 0x4E584E43, 0x4E45504F, 0x59414B4F
A_CLSE, A_WRTE, A_AUTH, A_STLS = 0x45534C43, 0x45545257, 0x48545541, 0x534C5453
COMMANDS = {A_SYNC: "SYNC", A_CNXN: "CNXN", A_OPEN: "OPEN", A_OKAY: "OKAY", A_CLSE: "CLSE",
            A_WRTE: "WRTE", A_AUTH: "AUTH", A_STLS: "STLS"}
A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001
A_VERSION = 0x01000001
MAX_PAYLOAD = 1024 * 1024
MAX_PAYLOAD_V1 = 4 * 1024
TOKEN_SIZE = 20
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
HEADER = struct.Struct("<6I")
FEATURES = ("shell_v2",)  # only what this peer implements

# shell protocol v2 (shell_protocol.h): id u8 + length u32, then the data
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN, SHELL_WINSIZE = 0, 1, 2, 3, 4, 5
SHELL_HEADER = struct.Struct("<BI")
SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024

# the Android RSA public key struct (libcrypto_utils android_pubkey.h): 2048-bit keys only
ANDROID_PUBKEY_MODULUS_SIZE = 256
ANDROID_PUBKEY = struct.Struct(f"<II{ANDROID_PUBKEY_MODULUS_SIZE}s{ANDROID_PUBKEY_MODULUS_SIZE}sI")  # 524 bytes

MAPPED_PREFIXES = ("/data", "/sdcard", "/storage", "/sys", "/system", "/vendor")
_PREFIX_IN_COMMAND = re.compile(r"(?<![\w./~$-])(" + "|".join(re.escape(p) for p in MAPPED_PREFIXES)
                                + r")(?=[/\s'\";:|&<>()`]|$)")

# Android's thermal HAL temperature types (android.os.Temperature.TYPE_*)
T_UNKNOWN, T_CPU, T_GPU, T_BATTERY, T_SKIN, T_NPU = -1, 0, 1, 2, 3, 9


# -- keys ---------------------------------------------------------------------------------------------


def _rsa():
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

    return hashes, serialization, padding, rsa, utils


def encode_android_pubkey(public_key) -> bytes:
    """The 524-byte struct adb stores in adbkey.pub (base64) for an RSA-2048 public key."""
    numbers = public_key.public_numbers()
    n, e = numbers.n, numbers.e
    if n.bit_length() > ANDROID_PUBKEY_MODULUS_SIZE * 8:
        raise ValueError("adb keys are RSA-2048")
    n0inv = (-pow(n, -1, 1 << 32)) % (1 << 32)
    rr = pow(2, ANDROID_PUBKEY_MODULUS_SIZE * 8 * 2, n)
    return ANDROID_PUBKEY.pack(ANDROID_PUBKEY_MODULUS_SIZE // 4, n0inv,
                               n.to_bytes(ANDROID_PUBKEY_MODULUS_SIZE, "little"),
                               rr.to_bytes(ANDROID_PUBKEY_MODULUS_SIZE, "little"), e)


def decode_android_pubkey(key_line: str):
    """A `cryptography` RSA public key from an adb public key line (`BASE64 user@host`)."""
    _, _, _, rsa, _ = _rsa()
    blob = base64.b64decode(key_line.strip().split()[0])
    if len(blob) != ANDROID_PUBKEY.size:
        raise ValueError(f"an adb public key is {ANDROID_PUBKEY.size} bytes, this one {len(blob)}")
    words, _n0inv, n_le, _rr, e = ANDROID_PUBKEY.unpack(blob)
    if words != ANDROID_PUBKEY_MODULUS_SIZE // 4:
        raise ValueError(f"modulus of {words} words, expected {ANDROID_PUBKEY_MODULUS_SIZE // 4}")
    return rsa.RSAPublicNumbers(e, int.from_bytes(n_le, "little")).public_key()


def adb_public_key(private_key_path: Path) -> str:
    """adb's public key line (`BASE64 user@host`) for an adbkey file (a PEM RSA private key)."""
    _, serialization, _, _, _ = _rsa()
    private = serialization.load_pem_private_key(Path(private_key_path).read_bytes(), password=None)
    blob = base64.b64encode(encode_android_pubkey(private.public_key())).decode()
    return f"{blob} {getpass.getuser()}@{socket.gethostname()}"


def _key_id(key_line: str) -> tuple[int, int] | None:
    try:
        numbers = decode_android_pubkey(key_line).public_numbers()
    except Exception:  # noqa: BLE001 - a key we cannot read is a key we do not trust
        return None
    return numbers.n, numbers.e


def _verify(key_line: str, token: bytes, signature: bytes) -> bool:
    """adb signs the token as if it were a SHA-1 digest: PKCS#1 v1.5 over DigestInfo(SHA-1, token)."""
    hashes, _, padding, _, utils = _rsa()
    try:
        decode_android_pubkey(key_line).verify(signature, token, padding.PKCS1v15(),
                                               utils.Prehashed(hashes.SHA1()))
        return True
    except Exception:  # noqa: BLE001 - InvalidSignature, or a malformed key
        return False


# -- the device ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CPU:
    governor: str
    cur_khz: int
    min_khz: int
    max_khz: int


@dataclass(frozen=True)
class Sensor:
    """A temperature sensor: `sysfs` ones also appear as /sys/class/thermal/thermal_zoneN."""
    name: str
    hal_type: int
    celsius: float
    sysfs: bool = True


def _pixel7_cpus() -> tuple[CPU, ...]:
    # gs201: 4x Cortex-A55 (policy0), 2x A78 (policy4), 2x X1 (policy6)
    return tuple([CPU("sched_pixel", 1803000, 300000, 1803000)] * 4 + [CPU("sched_pixel", 2348000, 400000, 2348000)] * 2
                 + [CPU("sched_pixel", 2850000, 500000, 2850000)] * 2)


def _pixel7_sensors() -> tuple[Sensor, ...]:
    # names and HAL types as a Tensor Pixel's `dumpsys thermalservice` lists them
    return (Sensor("BIG", T_CPU, 38.0), Sensor("MID", T_CPU, 36.0), Sensor("LITTLE", T_CPU, 35.0),
            Sensor("G3D", T_GPU, 34.0), Sensor("ISP", T_UNKNOWN, 33.0), Sensor("TPU", T_NPU, 34.0),
            Sensor("battery", T_BATTERY, 29.5), Sensor("usb_pwr_therm", T_UNKNOWN, 30.1),
            Sensor("disp_therm", T_UNKNOWN, 30.4), Sensor("quiet_therm", T_UNKNOWN, 29.8),
            Sensor("VIRTUAL-SKIN", T_SKIN, 31.2, sysfs=False))


@dataclass
class AndroidProfile:
    """What the peer says it is. Defaults: a Pixel 7 (panther, Tensor G2 / gs201) on Android 14."""
    manufacturer: str = "Google"
    brand: str = "google"
    model: str = "Pixel 7"
    device: str = "panther"
    name: str = "panther"
    board: str = "panther"
    hardware: str = "panther"
    platform: str = "gs201"
    soc_manufacturer: str = "Google"
    soc_model: str = "GS201"  # device/google/gs201 sets ro.soc.model=GS201
    release: str = "14"
    sdk: int = 34
    build_id: str = "AP2A.240805.005"
    incremental: str = "12025142"
    security_patch: str = "2024-08-05"
    abi: str = "arm64-v8a"
    abilist: str = "arm64-v8a"
    kernel_release: str = "5.10.198-android13-4-00050-g12f3388846c3-ab11920634"
    machine: str = "aarch64"
    serialno: str = "28011FDH2000ZZ"
    cpus: tuple[CPU, ...] = field(default_factory=_pixel7_cpus)
    sensors: tuple[Sensor, ...] = field(default_factory=_pixel7_sensors)
    thermal_status: int = 0  # PowerManager.THERMAL_STATUS_NONE … SHUTDOWN (0…6)
    nnapi_accelerators: tuple[str, ...] = ("google-edgetpu", "google-armnn", "nnapi-reference")
    extra_props: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return (f"{self.brand}/{self.name}/{self.device}:{self.release}/{self.build_id}/"
                f"{self.incremental}:user/release-keys")

    def properties(self) -> dict[str, str]:
        props = {
            "ro.product.manufacturer": self.manufacturer, "ro.product.brand": self.brand,
            "ro.product.model": self.model, "ro.product.device": self.device, "ro.product.name": self.name,
            "ro.product.board": self.board, "ro.hardware": self.hardware, "ro.board.platform": self.platform,
            "ro.soc.manufacturer": self.soc_manufacturer, "ro.soc.model": self.soc_model,
            "ro.build.fingerprint": self.fingerprint, "ro.build.id": self.build_id,
            "ro.build.type": "user", "ro.build.tags": "release-keys",
            "ro.build.version.release": self.release, "ro.build.version.sdk": str(self.sdk),
            "ro.build.version.incremental": self.incremental,
            "ro.build.version.security_patch": self.security_patch,
            "ro.product.cpu.abi": self.abi, "ro.product.cpu.abilist": self.abilist,
            "ro.product.cpu.abilist64": self.abilist, "ro.serialno": self.serialno,
            "ro.boot.serialno": self.serialno, "ro.debuggable": "0", "ro.secure": "1",
            "ro.adb.secure": "1", "service.adb.tcp.port": "5555", "sys.boot_completed": "1",
            "persist.sys.timezone": "Etc/UTC",
        }
        props.update(self.extra_props)
        return props


# -- helpers --------------------------------------------------------------------------------------------


def _java_float(value: float) -> str:
    """Float.toString of a Java float, as `dumpsys` prints temperatures: 36.0, 61.000004."""
    f32 = struct.unpack("<f", struct.pack("<f", value))[0]
    for digits in range(1, 10):
        text = f"{f32:.{digits}g}"
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == f32:
            break
    return text if "." in text or "e" in text else text + ".0"


def _strtoul(text: str) -> int:
    """C's strtoul(text, nullptr, 0) as adbd parses a SEND mode (garbage is 0)."""
    text = text.strip()
    try:
        if text[:2].lower() == "0x":
            return int(text[2:], 16)
        if text.startswith("0") and len(text) > 1:
            return int(text[1:], 8)
        return int(text, 10)
    except ValueError:
        return 0


class _HostPathsToDevice:
    """Rewrites `root` back to `/` in a byte stream that arrives in chunks."""

    def __init__(self, root: Path):
        self.root = str(root).encode()
        self.pending = b""

    def feed(self, data: bytes) -> bytes:
        data = self.pending + data
        self.pending = b""
        keep = 0
        for k in range(min(len(data), len(self.root)), 0, -1):
            if data.endswith(self.root[:k]):
                keep = k
                break
        if keep:
            data, self.pending = data[:-keep], data[-keep:]
        return self._map(data)

    def flush(self) -> bytes:
        data, self.pending = self.pending, b""
        return self._map(data)

    def _map(self, data: bytes) -> bytes:
        if self.root not in data:
            return data
        data = re.sub(re.escape(self.root) + rb"(?=/)", b"", data)
        return data.replace(self.root, b"/")


class _StreamClosed(Exception):
    pass


class _ConnectionDropped(Exception):
    pass


# -- streams and connections ------------------------------------------------------------------------------


class _Stream:
    """One ADB stream: this side's local id, the client's remote id, flow control both ways."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int, service: str):
        self.conn, self.local_id, self.remote_id, self.service = conn, local_id, remote_id, service
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.buffer = bytearray()
        self.can_send = threading.Event()
        self.can_send.set()  # an OPEN implies a READY: the client takes our first WRTE at once
        self.write_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.closed = False
        self.unacked_in = False  # the client sent a WRTE this side has not answered with OKAY
        self.on_abort: list[Callable[[], None]] = []

    # data from the client
    def deliver(self, data: bytes) -> bool:
        """A WRTE from the client; False when it broke flow control (a second WRTE before our OKAY)."""
        with self.state_lock:
            if self.unacked_in:
                return False
            self.unacked_in = True
        self.inbox.put(data)
        return True

    def read_chunk(self) -> bytes | None:
        """The next WRTE's data (acknowledged now, so the client may send another), None when closed."""
        data = self.inbox.get()
        if data is None:
            self.inbox.put(None)
            return None
        with self.state_lock:
            self.unacked_in = False
            closed = self.closed
        if not closed:
            self.conn.send(A_OKAY, self.local_id, self.remote_id)
        return data

    def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.read_chunk()
            if chunk is None:
                raise _StreamClosed(self.service)
            self.buffer += chunk
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    # data to the client
    def write(self, data: bytes) -> None:
        with self.write_lock:
            for start in range(0, len(data), self.conn.max_payload):
                while not self.can_send.wait(0.5):
                    if self.closed:
                        break
                if self.closed:
                    raise _StreamClosed(self.service)
                self.can_send.clear()
                self.conn.send(A_WRTE, self.local_id, self.remote_id, data[start:start + self.conn.max_payload])

    def acked(self) -> None:
        self.can_send.set()

    # closing
    def close(self) -> None:
        """This side is done: CLSE to the client."""
        if self._mark_closed():
            self.conn.forget(self)
            self.conn.send(A_CLSE, self.local_id, self.remote_id)

    def remote_close(self) -> None:
        """The client closed the stream: answer with CLSE (as adbd does) and stop what runs on it."""
        if self._mark_closed():
            self.conn.forget(self)
            self.conn.send(A_CLSE, self.local_id, self.remote_id)
            self._run_abort()

    def abort(self) -> None:
        """The connection is gone: nothing is sent."""
        if self._mark_closed():
            self._run_abort()

    def _mark_closed(self) -> bool:
        with self.state_lock:
            if self.closed:
                return False
            self.closed = True
        self.inbox.put(None)
        self.can_send.set()
        return True

    def _run_abort(self) -> None:
        for callback in self.on_abort:
            try:
                callback()
            except Exception:  # noqa: BLE001 - killing is best effort
                pass


class _Connection:
    """One TCP connection from an ADB client, read by its own thread."""

    def __init__(self, peer: AdbPeer, sock: socket.socket, address):
        self.peer, self.sock, self.address = peer, sock, address
        self.name = f"{address[0]}:{address[1]}"
        self.log = peer._log
        self.version = A_VERSION_MIN  # checksums are checked until the CNXN says otherwise
        self.max_payload = MAX_PAYLOAD
        self.connected = False  # a CNXN was received
        self.online = False  # authenticated, our CNXN sent
        self.token: bytes | None = None
        self.send_lock = threading.Lock()
        self.lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.ids = itertools.count(1)
        self.procs: set[subprocess.Popen] = set()
        self.dropping = False
        self.keep_running = False  # dropped without the device noticing: its commands run on
        self.gone = threading.Event()

    # wire
    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        check = 0 if self.version >= A_VERSION_SKIP_CHECKSUM else sum(data) & 0xFFFFFFFF
        packet = HEADER.pack(command, arg0, arg1, len(data), check, command ^ 0xFFFFFFFF) + data
        try:
            with self.send_lock:
                if self.dropping:  # a dropped link carries nothing more, not even the CLSE of a killed shell
                    raise OSError("the connection was dropped")
                self.sock.sendall(packet)
        except OSError as exc:
            raise _ConnectionDropped(str(exc)) from None

    def _recv_exact(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise _ConnectionDropped("closed by the client" if not self.dropping else "dropped by the peer")
            data += chunk
        return bytes(data)

    def run(self) -> None:
        self.log.info("%s: connected", self.name)
        try:
            while True:
                command, arg0, arg1, length, check, magic = HEADER.unpack(self._recv_exact(HEADER.size))
                if magic != command ^ 0xFFFFFFFF:
                    raise _ConnectionDropped(f"bad magic {magic:#010x} for command {command:#010x}")
                if length > MAX_PAYLOAD:
                    raise _ConnectionDropped(f"payload of {length} bytes is over {MAX_PAYLOAD}")
                data = self._recv_exact(length) if length else b""
                if self.version < A_VERSION_SKIP_CHECKSUM and sum(data) & 0xFFFFFFFF != check:
                    raise _ConnectionDropped(f"bad checksum {check:#x} on {COMMANDS.get(command, hex(command))}")
                self._handle(command, arg0, arg1, data)
        except (_ConnectionDropped, OSError) as exc:
            self.log.info("%s: connection closed: %s", self.name, exc)
        except Exception:  # noqa: BLE001 - a bug here must not pass silently
            self.log.exception("%s: connection failed", self.name)
        finally:
            self._teardown()

    # protocol
    def _handle(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        name = COMMANDS.get(command)
        if name is None:
            raise _ConnectionDropped(f"unknown command {command:#010x}")
        self.log.debug("%s: <- %s(%#x, %#x) %d bytes", self.name, name, arg0, arg1, len(data))
        if command == A_CNXN:
            self._on_connect(arg0, arg1, data)
        elif not self.connected:
            return  # protocol.txt: messages before a CONNECT are ignored
        elif command == A_AUTH:
            self._on_auth(arg0, data)
        elif not self.online:
            return  # adbd ignores streams until the transport is online
        elif command == A_OPEN:
            self._on_open(arg0, data)
        elif command == A_OKAY:
            stream = self.streams.get(arg1)
            if stream is not None and arg0 == stream.remote_id:
                stream.acked()
        elif command == A_WRTE:
            stream = self.streams.get(arg1)
            if stream is not None and not stream.deliver(data):
                raise _ConnectionDropped(f"second WRTE on stream {arg1} before our OKAY")
        elif command == A_CLSE:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.remote_close()
        # A_SYNC is obsolete, A_STLS is never asked for by this device: ignored

    def _on_connect(self, version: int, maxdata: int, data: bytes) -> None:
        if version < A_VERSION_MIN:
            raise _ConnectionDropped(f"unknown protocol version {version:#x}")
        banner = data.rstrip(b"\0").decode(errors="replace")
        self.version = min(version, A_VERSION)
        self.max_payload = min(maxdata, MAX_PAYLOAD) or MAX_PAYLOAD_V1
        self.connected, self.online = True, False
        self._close_streams()
        self.log.info("%s: CNXN version %#x maxdata %d banner %r", self.name, version, maxdata, banner)
        self._send_token()

    def _send_token(self) -> None:
        self.token = secrets.token_bytes(TOKEN_SIZE)
        self.send(A_AUTH, AUTH_TOKEN, 0, self.token)

    def _on_auth(self, kind: int, data: bytes) -> None:
        if self.online:
            return
        if kind == AUTH_SIGNATURE:
            for key in list(self.peer.authorized_keys):
                if self.token is not None and _verify(key, self.token, data):
                    self.log.info("%s: signature verified with %s", self.name, key.split()[-1])
                    self._go_online(key)
                    return
            self.log.info("%s: signature matches no authorized key: new token", self.name)
            self._send_token()
        elif kind == AUTH_RSAPUBLICKEY:
            key = data.split(b"\0", 1)[0].decode(errors="replace").strip()
            if _key_id(key) is None:
                self.log.info("%s: unreadable public key offered: ignored", self.name)
                return
            if not self.peer.accept_new_keys:
                self.log.info("%s: \"Allow USB debugging?\" shown for %s: not answered", self.name,
                              key.split()[-1])
                return
            self.log.info("%s: \"Allow USB debugging?\" answered Allow for %s", self.name, key.split()[-1])
            self.peer._authorize(key)
            self._go_online(key)
        else:
            raise _ConnectionDropped(f"unknown AUTH type {kind}")

    def _go_online(self, key: str) -> None:
        self.peer._accepted(key)
        self.online = True
        self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.peer.banner().encode())

    def _on_open(self, remote_id: int, data: bytes) -> None:
        if remote_id == 0:
            return
        service = data.rstrip(b"\0").decode(errors="surrogateescape")
        runner = self.peer._service(service)
        if runner is None:
            self.log.info("%s: unknown service %r: CLSE", self.name, service)
            self.send(A_CLSE, 0, remote_id)
            return
        with self.lock:
            local_id = next(self.ids)
            stream = _Stream(self, local_id, remote_id, service)
            self.streams[local_id] = stream
        self.log.info("%s: OPEN %r as stream %d", self.name, service, local_id)
        self.send(A_OKAY, local_id, remote_id)
        threading.Thread(target=self._serve, args=(runner, stream), daemon=True,
                         name=f"adb-peer-{self.name}-{local_id}").start()

    def _serve(self, runner, stream: _Stream) -> None:
        try:
            runner(self, stream)
        except (_StreamClosed, _ConnectionDropped):
            pass
        except Exception:  # noqa: BLE001
            self.log.exception("%s: service %r failed", self.name, stream.service)
        finally:
            try:
                stream.close()
            except _ConnectionDropped:
                pass

    def forget(self, stream: _Stream) -> None:
        with self.lock:
            self.streams.pop(stream.local_id, None)

    def _close_streams(self) -> None:
        with self.lock:
            streams, self.streams = list(self.streams.values()), {}
        for stream in streams:
            stream.abort()

    # processes and dropping
    def started(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs.add(proc)

    def finished(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs.discard(proc)

    def drop(self, keep_running: bool = False) -> None:
        """Close the TCP connection abruptly (RST, no CLSE) and kill what was started on it; with
        `keep_running`, leave it running, as a phone's adbd does until it notices a dead Wi-Fi link."""
        if self.gone.is_set() or self.dropping:
            return
        with self.send_lock:  # no packet is half-sent when the link goes
            self.dropping = True
            self.keep_running = keep_running
        self.log.info("%s: dropping the connection%s", self.name, " (its commands keep running)" * keep_running)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.shutdown(socket.SHUT_RD)  # wakes the reader, which closes the socket
        except OSError:
            pass
        self._kill_all()

    def _kill_all(self) -> None:
        with self.lock:
            procs = list(self.procs)
        if self.keep_running:  # left to the client to kill; whatever is left dies with the peer
            self.peer._left_running.update(procs)
            return
        for proc in procs:
            _kill_session(proc)

    def _teardown(self) -> None:
        self._close_streams()
        self._kill_all()
        try:
            self.sock.close()
        except OSError:
            pass
        self.gone.set()
        self.peer._forget(self)


def _kill_session(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# -- the peer ---------------------------------------------------------------------------------------------


class AdbPeer:
    """A running (or stopped) device; see the module docstring."""

    def __init__(self, workdir: Path, profile: AndroidProfile, authorized_keys: Sequence[str],
                 accept_new_keys: bool):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.profile = profile
        self.root = self.workdir / "device"
        self.state_dir = self.workdir / "peer"
        self.authorized_keys: list[str] = list(authorized_keys)
        self.accept_new_keys = accept_new_keys
        self.accepted_keys: list[str] = []
        self.commands: list[str] = []
        self.delegate_failure: dict[str, str] = {}
        self.host = "127.0.0.1"
        self._thermal_status = profile.thermal_status
        self._temps = {s.name: float(s.celsius) for s in profile.sensors}
        self._lock = threading.RLock()
        self._connections: set[_Connection] = set()
        self._drop_rule: tuple[str, float, bool] | None = None
        self._left_running: set[subprocess.Popen] = set()  # by connections dropped with keep_running
        self._stopping = threading.Event()
        self._log_path = self.workdir / "adbd.log"
        self._log = logging.getLogger(f"tests.peers.adbd.{id(self):x}")
        self._log.setLevel(logging.DEBUG)
        self._log.propagate = False
        self._handler = logging.FileHandler(self._log_path)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(message)s"))
        self._log.addHandler(self._handler)
        self._build_tree()
        self._listener = socket.create_server((self.host, 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name=f"adb-peer-{self.port}")
        self._thread.start()
        self._log.info("listening on %s (%s %s)", self.serial, profile.manufacturer, profile.model)

    # public API
    @property
    def serial(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def benchmark_model_host_path(self) -> Path:
        return self.state_dir / "benchmark_model"

    @property
    def thermal_status(self) -> int:
        return self._thermal_status

    @thermal_status.setter
    def thermal_status(self, value: int) -> None:
        with self._lock:
            self._thermal_status = int(value)
            self._write_thermal()

    def set_temperature(self, celsius: float, zone: str | None = None) -> None:
        """Every sensor (zone None) or one, by its type name (`BIG`, `VIRTUAL-SKIN`) or `thermal_zoneN`."""
        with self._lock:
            names = self._sensor_names(zone)
            for name in names:
                self._temps[name] = float(celsius)
            self._write_thermal()

    def device_path_to_host(self, p: str) -> Path:
        norm = posixpath.normpath("/" + str(p).lstrip("/"))
        return self.root / norm.lstrip("/") if norm != "/" else self.root

    def install_benchmark_model(self, device_path: str = "/data/local/tmp/benchmark_model") -> None:
        target = self.device_path_to_host(device_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.benchmark_model_host_path, target)
        os.chmod(target, 0o755)

    def drop_during(self, substring: str, after_s: float, keep_running: bool = False) -> None:
        """One shot: the next shell command containing `substring` loses its connection `after_s` later.
        With `keep_running` the device does not notice: what runs on that connection goes on."""
        with self._lock:
            self._drop_rule = (substring, float(after_s), keep_running)

    def drop_connections(self) -> None:
        for conn in list(self._connections):
            conn.drop()

    def log_text(self) -> str:
        self._handler.flush()
        return self._log_path.read_text() if self._log_path.exists() else ""

    def banner(self) -> str:
        p = self.profile
        return (f"device::ro.product.name={p.name};ro.product.model={p.model};ro.product.device={p.device};"
                f"features={','.join(FEATURES)}")

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._thread.join(timeout=5)
        try:
            self._listener.close()
        except OSError:
            pass
        for conn in list(self._connections):
            conn.drop()
            conn.gone.wait(timeout=5)
        for proc in self._left_running:
            _kill_session(proc)
        self._log.info("stopped")
        self._handler.close()
        self._log.removeHandler(self._handler)

    def __enter__(self) -> AdbPeer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # bookkeeping used by connections
    def _authorize(self, key: str) -> None:
        with self._lock:
            ident = _key_id(key)
            if all(_key_id(k) != ident for k in self.authorized_keys):
                self.authorized_keys.append(key)

    def _accepted(self, key: str) -> None:
        with self._lock:
            ident = _key_id(key)
            if all(_key_id(k) != ident for k in self.accepted_keys):
                self.accepted_keys.append(key)

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, address = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock, address)
            with self._lock:
                self._connections.add(conn)
            threading.Thread(target=conn.run, daemon=True, name=f"adb-peer-conn-{address[1]}").start()

    # services
    def _service(self, name: str):
        """The function serving an OPEN'ed service name, None for a service adbd would refuse here."""
        if name.startswith("shell"):
            rest = name[len("shell"):]
            if ":" not in rest or (rest and rest[0] not in ",:"):
                return None
            args, command = rest.split(":", 1)
            options = [a for a in args.split(",") if a]
            v2 = "v2" in options
            return lambda conn, stream: self._shell(conn, stream, command, v2)
        if name.startswith("exec:"):
            command = name[len("exec:"):]
            return lambda conn, stream: self._shell(conn, stream, command, False)
        if name.startswith("sync:"):
            return self._sync
        return None

    def _environment(self) -> dict[str, str]:
        root = str(self.root)
        return {
            "PATH": os.pathsep.join([f"{root}/system/bin", "/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                                     "/usr/bin", "/sbin", "/bin"]),
            "HOME": root, "HOSTNAME": "localhost", "LOGNAME": "shell", "USER": "shell",
            "SHELL": f"{root}/system/bin/sh", "TMPDIR": f"{root}/data/local/tmp", "TERM": "dumb",
            "ANDROID_ROOT": f"{root}/system", "ANDROID_DATA": f"{root}/data", "ANDROID_STORAGE": f"{root}/storage",
            "EXTERNAL_STORAGE": f"{root}/sdcard", "ANDROID_ASSETS": f"{root}/system/app",
        }

    def rewrite_command(self, command: str) -> str:
        """The device prefixes (MAPPED_PREFIXES) of a shell command, as paths under `root`."""
        return _PREFIX_IN_COMMAND.sub(lambda m: str(self.root) + m.group(1), command)

    def _spawn(self, conn: _Connection, command: str, merge_stderr: bool) -> subprocess.Popen:
        with self._lock:
            self.commands.append(command)
            rule = self._drop_rule
            if rule is not None and rule[0] in command:
                self._drop_rule = None
            else:
                rule = None
            self._write_state()
        argv = ["/bin/sh", "-c", self.rewrite_command(command)] if command else ["/bin/sh"]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                                cwd=self.root, env=self._environment(), start_new_session=True, bufsize=0)
        conn.started(proc)
        self._log.info("%s: pid %d runs %r", conn.name, proc.pid, command)
        if rule is not None:
            self._log.info("%s: will drop in %.3f s (command contains %r)", conn.name, rule[1], rule[0])
            timer = threading.Timer(rule[1], conn.drop, kwargs={"keep_running": rule[2]})
            timer.daemon = True
            timer.start()
        return proc

    def _shell(self, conn: _Connection, stream: _Stream, command: str, v2: bool) -> None:
        proc = self._spawn(conn, command, merge_stderr=not v2)
        stream.on_abort.append(lambda: conn.keep_running or _kill_session(proc))
        if stream.closed:  # closed while starting
            _kill_session(proc)

        def pump_stdin() -> None:
            pending = bytearray()
            try:
                while True:
                    chunk = stream.read_chunk()
                    if chunk is None:
                        break
                    if not v2:
                        proc.stdin.write(chunk)
                        continue
                    pending += chunk
                    while len(pending) >= SHELL_HEADER.size:
                        kind, length = SHELL_HEADER.unpack_from(pending)
                        if len(pending) < SHELL_HEADER.size + length:
                            break
                        body = bytes(pending[SHELL_HEADER.size:SHELL_HEADER.size + length])
                        del pending[:SHELL_HEADER.size + length]
                        if kind == SHELL_STDIN:
                            proc.stdin.write(body)
                        elif kind == SHELL_CLOSE_STDIN:
                            proc.stdin.close()
                        # SHELL_WINSIZE: no PTY here, nothing to resize
            except (OSError, ValueError):
                pass
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        def pump_out(fd, kind: int) -> None:
            mapper = _HostPathsToDevice(self.root)
            try:
                while True:
                    data = os.read(fd.fileno(), SYNC_DATA_MAX)
                    out = mapper.feed(data) if data else mapper.flush()
                    if out:
                        stream.write(SHELL_HEADER.pack(kind, len(out)) + out if v2 else out)
                    if not data:
                        break
            except (_StreamClosed, _ConnectionDropped, OSError):
                pass

        threading.Thread(target=pump_stdin, daemon=True, name=f"adb-peer-stdin-{proc.pid}").start()
        readers = [threading.Thread(target=pump_out, args=(proc.stdout, SHELL_STDOUT), daemon=True)]
        if v2:
            readers.append(threading.Thread(target=pump_out, args=(proc.stderr, SHELL_STDERR), daemon=True))
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
        code = proc.wait()
        conn.finished(proc)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        status = 0x80 | -code if code < 0 else code
        self._log.info("%s: pid %d exited with %d", conn.name, proc.pid, status)
        if v2 and not stream.closed:
            stream.write(SHELL_HEADER.pack(SHELL_EXIT, 1) + bytes([status & 0xFF]))

    def _sync(self, conn: _Connection, stream: _Stream) -> None:
        def fail(reason: str) -> None:
            self._log.info("%s: sync FAIL %s", conn.name, reason)
            data = reason.encode()
            stream.write(b"FAIL" + struct.pack("<I", len(data)) + data)

        while True:
            request, length = struct.unpack("<4sI", stream.read_exact(8))
            if length > SYNC_PATH_MAX:
                fail("path too long")
                return
            name = stream.read_exact(length).decode(errors="surrogateescape")
            self._log.info("%s: sync %s %r", conn.name, request.decode(errors="replace"), name)
            if request == b"STAT":
                try:
                    st = os.lstat(self.device_path_to_host(name))
                    values = (st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime) & 0xFFFFFFFF)
                except OSError:
                    values = (0, 0, 0)
                stream.write(struct.pack("<4sIII", b"STAT", *values))
            elif request == b"LIST":
                self._sync_list(stream, self.device_path_to_host(name))
            elif request == b"SEND":
                if not self._sync_send(stream, name, fail):
                    return
            elif request == b"RECV":
                if not self._sync_recv(stream, self.device_path_to_host(name), fail):
                    return
            elif request == b"QUIT":
                return
            else:
                fail(f"unknown command {struct.unpack('<I', request)[0]:08x}")
                return

    @staticmethod
    def _sync_list(stream: _Stream, path: Path) -> None:
        out = bytearray()
        try:
            names = [".", ".."] + sorted(os.listdir(path))
        except OSError:
            names = []
        for entry in names:
            try:
                st = os.lstat(path / entry)
            except OSError:
                continue
            raw = entry.encode(errors="surrogateescape")
            out += struct.pack("<4sIIII", b"DENT", st.st_mode, st.st_size & 0xFFFFFFFF,
                               int(st.st_mtime) & 0xFFFFFFFF, len(raw)) + raw
        out += b"DONE" + bytes(16)
        stream.write(bytes(out))

    def _sync_send(self, stream: _Stream, spec: str, fail) -> bool:
        comma = spec.rfind(",")
        if comma < 0:
            fail("missing , in ID_SEND_V1")
            return False
        path, mode = self.device_path_to_host(spec[:comma]), _strtoul(spec[comma + 1:])
        if stat.S_ISLNK(mode):
            fail("symlinks are not supported by this device peer")
            return False
        try:
            st = os.lstat(path)
            unlink = stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)
        except OSError:
            unlink = True
        if unlink:
            try:
                os.unlink(path)
            except OSError:
                pass
        # adbd copies the user permission bits to group and other (file_sync_service.cpp send_impl)
        mode &= 0o777
        mode |= (mode >> 3) & 0o070
        mode |= (mode >> 3) & 0o007
        fd, failed = None, False
        try:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            except FileNotFoundError:
                path.parent.mkdir(mode=0o775, parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            except FileExistsError:
                fd = os.open(path, os.O_WRONLY, mode)
            os.fchmod(fd, mode)
        except OSError as exc:
            fail(f"couldn't create file: {os.strerror(exc.errno or 0)}")
            failed = True
        timestamp = 0
        try:
            # after a failure adbd keeps reading (and dropping) DATA until DONE, as old clients expect
            while True:
                kind, size = struct.unpack("<4sI", stream.read_exact(8))
                if kind == b"DONE":
                    timestamp = size
                    break
                if kind != b"DATA" or size > SYNC_DATA_MAX:
                    if not failed:
                        fail("invalid data message" if kind != b"DATA" else "oversize data message")
                    failed = True
                    break
                data = stream.read_exact(size)
                if fd is not None and not failed:
                    try:
                        os.write(fd, data)
                    except OSError as exc:
                        fail(f"write failed: {os.strerror(exc.errno or 0)}")
                        failed = True
        finally:
            if fd is not None:
                os.close(fd)
        if failed:
            if unlink:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            return False
        os.utime(path, (timestamp, timestamp), follow_symlinks=False)
        stream.write(b"OKAY" + bytes(4))
        return True

    @staticmethod
    def _sync_recv(stream: _Stream, path: Path, fail) -> bool:
        try:
            fh = open(path, "rb")
        except OSError as exc:
            fail(f"open failed: {os.strerror(exc.errno or 0)}")
            return False
        with fh:
            while True:
                try:
                    data = fh.read(SYNC_DATA_MAX)
                except OSError as exc:
                    fail(f"read failed: {os.strerror(exc.errno or 0)}")
                    return False
                if not data:
                    break
                stream.write(b"DATA" + struct.pack("<I", len(data)) + data)
        stream.write(b"DONE" + bytes(4))
        return True

    # the device's files
    def _sensor_names(self, zone: str | None) -> list[str]:
        if zone is None:
            return list(self._temps)
        sysfs = [s.name for s in self.profile.sensors if s.sysfs]
        match = re.fullmatch(r"(?:/sys/class/thermal/)?thermal_zone(\d+)", zone)
        if match and int(match.group(1)) < len(sysfs):
            return [sysfs[int(match.group(1))]]
        if zone in self._temps:
            return [zone]
        raise KeyError(f"no thermal zone {zone!r} (known: {', '.join(self._temps)})")

    def _build_tree(self) -> None:
        for d in ("data/local/tmp", "sdcard", "storage/emulated/0", "system/bin", "vendor", "sys/class/thermal",
                  "sys/devices/system/cpu"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "data/local/tmp", 0o771)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        p = self.profile
        # getprop: every property as `[key]: [value]`, sorted like toolbox getprop
        props = self.state_dir / "build.prop.txt"
        props.write_text("".join(f"[{k}]: [{v}]\n" for k, v in sorted(p.properties().items())))
        bin_dir = self.root / "system/bin"
        self._script(bin_dir / "getprop", f"""#!/bin/sh
# getprop stand-in of the adb test peer: no argument lists every property, one prints its value
PROPS='{props}'
if [ $# -eq 0 ]; then cat "$PROPS"; exit 0; fi
awk -v key="$1" -v dflt="$2" '
  index($0, "[" key "]: [") == 1 {{ v = substr($0, length(key) + 6); sub(/\\]$/, "", v); print v; found = 1; exit }}
  END {{ if (!found) print dflt }}' "$PROPS"
""")
        self._script(bin_dir / "dumpsys", f"""#!/bin/sh
# dumpsys stand-in of the adb test peer: only the thermalservice is dumped
case "$1" in
  thermalservice) cat '{self.state_dir / "thermalservice.txt"}' ;;
  *) echo "Can't find service: $1" >&2 ;;
esac
""")
        self._script(bin_dir / "uname", f"""#!/bin/sh
# uname stand-in of the adb test peer (the phone's kernel, not this host's)
[ $# -eq 0 ] && set -- -s
out=
for opt in "$@"; do
  case "$opt" in
    -s) out="$out Linux" ;; -n) out="$out localhost" ;; -r) out="$out {p.kernel_release}" ;;
    -v) out="$out #1 SMP PREEMPT Mon Jun 24 12:00:00 UTC 2024" ;; -m) out="$out {p.machine}" ;;
    -o) out="$out Toybox" ;;
    -a) out="$out Linux localhost {p.kernel_release} #1 SMP PREEMPT Mon Jun 24 12:00:00 UTC 2024 {p.machine} Toybox" ;;
    *) echo "uname: Unknown option '$opt'" >&2; exit 1 ;;
  esac
done
echo "${{out# }}"
""")
        self._script(bin_dir / "taskset", f"""#!{sys.executable}
# taskset stand-in of the adb test peer: toybox's taskset, device CPUs folded onto this host's
import sys
sys.path.insert(0, {str(REPO)!r})
from tests.peers.android_bench import taskset_main
sys.exit(taskset_main(sys.argv[1:], cpus={len(p.cpus)}))
""")
        self._script(self.benchmark_model_host_path, f"""#!{sys.executable}
# benchmark_model stand-in of the adb test peer: runs the graph with LiteRT on this host
import sys
sys.path.insert(0, {str(REPO)!r})
from tests.peers.android_bench import benchmark_main
sys.exit(benchmark_main(sys.argv[1:], state_path={str(self.state_dir / "state.json")!r}))
""")
        if not (bin_dir / "sh").exists():
            os.symlink("/bin/sh", bin_dir / "sh")
        cpu_dir = self.root / "sys/devices/system/cpu"
        span = f"0-{len(p.cpus) - 1}\n"
        for name in ("possible", "present", "online"):
            (cpu_dir / name).write_text(span)
        for i, cpu in enumerate(p.cpus):
            freq = cpu_dir / f"cpu{i}/cpufreq"
            freq.mkdir(parents=True, exist_ok=True)
            related = " ".join(str(j) for j, other in enumerate(p.cpus) if other.max_khz == cpu.max_khz)
            for name, value in (("scaling_governor", cpu.governor), ("scaling_cur_freq", cpu.cur_khz),
                                ("scaling_min_freq", cpu.min_khz), ("scaling_max_freq", cpu.max_khz),
                                ("cpuinfo_min_freq", cpu.min_khz), ("cpuinfo_max_freq", cpu.max_khz),
                                ("scaling_available_governors", f"{cpu.governor} performance powersave"),
                                ("related_cpus", related)):
                (freq / name).write_text(f"{value}\n")
        self._write_thermal()
        self._write_state()

    @staticmethod
    def _script(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, 0o755)

    def _write_thermal(self) -> None:
        zones = [s for s in self.profile.sensors if s.sysfs]
        for i, sensor in enumerate(zones):
            zone = self.root / f"sys/class/thermal/thermal_zone{i}"
            zone.mkdir(parents=True, exist_ok=True)
            (zone / "type").write_text(sensor.name + "\n")
            (zone / "temp").write_text(f"{round(self._temps[sensor.name] * 1000)}\n")
            (zone / "mode").write_text("enabled\n")
        (self.state_dir / "thermalservice.txt").write_text(self._thermalservice())

    def _thermalservice(self) -> str:
        """`dumpsys thermalservice` of Android 14 with an AIDL thermal HAL: the sections and their order of
        AOSP's ThermalManagerService.dump, the values and sensor names as in a Tensor Pixel's capture
        (skia-buildbot machine/go/machine/processor/impl_test.go), `ThermalHAL AIDL 1  connected: yes`
        as Android 14 phones print it, the VIRTUAL-SKIN thresholds of a Pixel run."""
        status = self._thermal_status

        def temperature(sensor: Sensor) -> str:
            level = status if sensor.hal_type == T_SKIN else 0
            return (f"\tTemperature{{mValue={_java_float(self._temps[sensor.name])}, mType={sensor.hal_type}, "
                    f"mName={sensor.name}, mStatus={level}}}\n")

        temps = "".join(temperature(s) for s in self.profile.sensors)
        cooling = "".join(f"\tCoolingDevice{{mValue=0, mType={kind}, mName={name}}}\n" for kind, name in
                          ((2, "thermal-cpufreq-0"), (2, "thermal-cpufreq-1"), (2, "thermal-cpufreq-2"),
                           (3, "thermal-gpufreq-0"), (5, "tpu_cooling"), (1, "battery")))
        skin = [s for s in self.profile.sensors if s.hal_type == T_SKIN]
        thresholds = "".join(
            f"\tTemperatureThreshold{{mType={s.hal_type}, mName={s.name}, mHotThrottlingThresholds=[NaN, 39.0, "
            "43.0, 45.0, 47.0, 51.5, 56.0], mColdThrottlingThresholds=[NaN, NaN, NaN, NaN, NaN, NaN, NaN]}\n"
            for s in skin)
        return ("IsStatusOverride: false\n"
                "ThermalEventListeners:\n\tcallbacks: 1\n\tkilled: false\n\tbroadcasts count: -1\n"
                "ThermalStatusListeners:\n\tcallbacks: 2\n\tkilled: false\n\tbroadcasts count: -1\n"
                f"Thermal Status: {status}\n"
                f"Cached temperatures:\n{temps}"
                "HAL Ready: true\n"
                "HAL connection:\n\tThermalHAL AIDL 1  connected: yes\n"
                f"Current temperatures from HAL:\n{temps}"
                f"Current cooling devices from HAL:\n{cooling}"
                f"Temperature static thresholds from HAL:\n{thresholds}")

    def _write_state(self) -> None:
        """What the benchmark_model stand-in reads when it runs: accelerators and injected failures."""
        state = {"nnapi_accelerators": list(self.profile.nnapi_accelerators),
                 "delegate_failure": dict(self.delegate_failure), "model": self.profile.model}
        tmp = self.state_dir / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_dir / "state.json")


def start_adb_peer(workdir: Path, *, profile: AndroidProfile | None = None, authorized_keys: Sequence[str] = (),
                   accept_new_keys: bool = True) -> AdbPeer:
    """A device listening on a free port of 127.0.0.1, its files under workdir/device."""
    return AdbPeer(Path(workdir), profile or AndroidProfile(), authorized_keys, accept_new_keys)
