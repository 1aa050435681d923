"""The ADB transport's pure parts: what the phone prints (getprop, thermal zones, dumpsys
thermalservice), the benchmark_model command line, a cell's report from its repetitions, and the
inventory's checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from devices.adb import ADBConfig
from devices.android.benchmark_model import benchmark_argv, report_from_runs
from devices.android.parsers import cpu_count, parse_getprop, parse_thermal_zones, parse_thermalservice
from devices.base import Job, MeasurementProtocol
from harness.config import load_inventory
from harness.errors import ConfigError, DeviceError

FIXTURES = Path(__file__).parent / "fixtures" / "android"


def _fixture(name: str) -> str:
    """A real capture; its first line names the source and is not output."""
    return (FIXTURES / name).read_text().split("\n", 1)[1]


def test_getprop_lines():
    text = ("[ro.build.version.sdk]: [34]\r\n[ro.product.model]: [Pixel 7]\n[ro.empty]: []\n"
            "[ro.build.fingerprint]: [google/panther/panther:14/UQ1A.240205.004/11269751:user/release-keys]\n"
            "not a property line\n")
    assert parse_getprop(text) == {"ro.build.version.sdk": "34", "ro.product.model": "Pixel 7", "ro.empty": "",
                                   "ro.build.fingerprint": "google/panther/panther:14/UQ1A.240205.004/11269751:"
                                                           "user/release-keys"}


def test_thermalservice_of_a_real_samsung_a52():
    # source: android.stackexchange.com/questions/246774 (Samsung A52 5G, Android 12), values read by eye
    parsed = parse_thermalservice(_fixture("dumpsys-thermalservice-samsung-a52-android12.txt"))
    assert parsed["status"] == 0 and parsed["status_name"] == "none"
    hal = parsed["hal_temperatures"]
    assert set(hal) == {"AP", "BAT", "LRB", "LRF", "LRP", "PA", "SUBBAT", "SUBBATRAW", "USB"}
    assert hal["AP"] == {"value_c": 25.6, "type": 0, "status": 0}
    assert hal["PA"]["value_c"] == 25.7 and hal["BAT"]["type"] == 2


def test_thermalservice_status_and_absence():
    assert parse_thermalservice("Thermal Status: 3\n")["status_name"] == "severe"
    empty = parse_thermalservice("")
    assert empty == {"status": None, "status_name": None, "hal_temperatures": {}}


def test_thermal_zones_drop_implausible_readings():
    text = ("/sys/class/thermal/thermal_zone0|BIG|48312\n/sys/class/thermal/thermal_zone1|battery|31000\n"
            "/sys/class/thermal/thermal_zone2|disabled|-273000\n/sys/class/thermal/thermal_zone3|raw|812345\n"
            "/sys/class/thermal/thermal_zone4|unreadable|\n")
    assert parse_thermal_zones(text) == {"thermal_zone0:BIG": 48.312, "thermal_zone1:battery": 31.0}


@pytest.mark.parametrize("text, count", [("0-7\n", 8), ("0-3,6\n", 5), ("0", 1), ("", None), ("x-y", None)])
def test_cpu_count_from_possible(text, count):
    assert cpu_count(text) == count


PROTOCOL = MeasurementProtocol(warmup_runs=1, warmup_min_secs=0.5, num_runs=50, min_secs=1.0, max_secs=20.0)


@pytest.mark.parametrize("delegate, options, flags", [
    ("cpu", {}, ["--use_xnnpack=false"]),
    ("xnnpack", {}, ["--use_xnnpack=true"]),
    ("gpu", {}, ["--use_gpu=true"]),
    ("nnapi", {}, ["--use_nnapi=true"]),
    ("nnapi", {"nnapi_accelerator_name": "google-edgetpu"}, ["--use_nnapi=true",
                                                             "--nnapi_accelerator_name=google-edgetpu"]),
])
def test_benchmark_argv(delegate, options, flags):
    job = Job(Path("m.tflite"), delegate, 4, PROTOCOL, 60.0, delegate_options=options)
    argv = benchmark_argv("/data/local/tmp/harness/abc", "/data/local/tmp/harness/m.tflite", job, "f0")
    assert argv == ["taskset", "f0", "/data/local/tmp/harness/abc", "--graph=/data/local/tmp/harness/m.tflite",
                    "--num_threads=4", "--warmup_runs=1", "--warmup_min_secs=0.5", "--num_runs=50",
                    "--min_secs=1", "--max_secs=20", "--report_peak_memory_footprint=true", *flags]
    assert benchmark_argv("bm", "g", job, None)[0] == "bm"  # no mask, no taskset
    assert benchmark_argv("bm", "g", job, "0xF0")[:2] == ["taskset", "f0"]  # as toybox's taskset wants it


def test_benchmark_argv_refuses_a_delegate_it_has_not():
    with pytest.raises(DeviceError, match="no 'edgetpu' delegate"):
        benchmark_argv("bm", "g", Job(Path("m"), "edgetpu", 1, PROTOCOL, 1.0), None)


def _run(avg, init=1000.0, first=900.0, peak=30.0, delegates=None):
    return {"avg_us": avg, "inference_avg_us": avg, "init_us": init, "first_inference_us": first,
            "warmup_avg_us": avg * 1.1, "peak_memory_mb": peak, "delegates": delegates or []}


def test_report_from_repetitions():
    xnn = [{"name": "TfLiteXNNPackDelegate", "nodes_delegated": 7, "nodes_total": 11, "partitions": 2}]
    runs = [_run(400.0, init=1000, peak=30, delegates=xnn), _run(410.0, init=1200, peak=31.5, delegates=xnn),
            _run(390.0, init=1100, peak=29, delegates=xnn)]
    report = report_from_runs(runs, "xnnpack")
    assert report["samples_us"] == [400.0, 410.0, 390.0]  # one sample per repetition: its average
    assert report["init_us"] == 1100 and report["first_inference_us"] == 900.0
    assert report["peak_rss_mb"] == 31.5 and report["warmup"]["avg_us"] == pytest.approx(440.0)
    assert report["coverage"] == {"nodes_delegated": 7, "nodes_total": 11, "partitions": 2}
    assert report["benchmark_model"] is runs and report["warnings"] == []


def test_report_warns_when_the_delegate_took_no_node():
    report = report_from_runs([_run(400.0)], "gpu")
    assert report["coverage"] is None and "gpu was requested" in report["warnings"][0]
    assert "coverage" not in report_from_runs([_run(400.0)], "cpu")  # the built-in kernels delegate nothing


def _inventory(tmp_path, entry: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text("devices:\n  - name: pixel\n    transport: adb\n" + entry)
    return path


@pytest.mark.parametrize("entry, key, message", [
    ("    port: 5555\n", "devices[0]", "exactly one of `serial`"),
    ("    host: 10.0.0.2\n    serial: ABC\n", "devices[0]", "exactly one of `serial`"),
    ("    host: 10.0.0.2\n    cpu_mask: big\n", "devices[0].cpu_mask", "hex CPU mask"),
    ("    host: 10.0.0.2\n    cpu_mask: '0'\n", "devices[0].cpu_mask", "non-zero"),
    ("    host: 10.0.0.2\n    delegates: [cpu, edgetpu]\n", "devices[0].delegates", "not a benchmark_model delegate"),
    ("    host: 10.0.0.2\n    benchmark_model: /no/such/benchmark_model\n", "devices[0].benchmark_model",
     "no such file"),
    ("    host: 10.0.0.2\n    workdir: tmp/harness\n", "devices[0].workdir", "absolute path"),
    ("    host: 10.0.0.2\n    port: 0\n", "devices[0].port", "not a TCP port"),
    ("    host: 10.0.0.2\n    auth_timeout_s: 0\n", "devices[0].auth_timeout_s", "> 0"),
    ("    host: 10.0.0.2\n    adb_key: x\n", "devices[0].adb_key", "unknown key"),
])
def test_inventory_checks_name_the_key(tmp_path, entry, key, message):
    path = _inventory(tmp_path, entry)
    with pytest.raises(ConfigError) as err:
        load_inventory(path)
    assert err.value.key == key and message in err.value.message and str(path) in str(err.value)


def test_inventory_accepts_both_benchmark_model_forms(tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    inventory = load_inventory(_inventory(tmp_path, f"    host: 10.0.0.2\n    benchmark_model: {binary}\n"
                                                    "    cpu_mask: f0\n  - name: usb\n    transport: adb\n"
                                                    "    serial: 1A2B3C\n    benchmark_model: "
                                                    "on_device:/data/local/tmp/benchmark_model\n"))
    tcp, usb = inventory.devices
    assert isinstance(tcp, ADBConfig) and tcp.host == "10.0.0.2" and tcp.port == 5555 and tcp.cpu_mask == "f0"
    assert tcp.delegates == ("cpu", "xnnpack", "gpu", "nnapi") and tcp.adbkey == "~/.android/adbkey"
    assert usb.serial == "1A2B3C" and usb.benchmark_model.startswith("on_device:")
