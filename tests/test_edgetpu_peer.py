"""The test doubles for Coral's tools hold to the real formats: the stand-in compiler's console
and log have the line shapes of real published output (tests/fixtures/edgetpu_compiler/), its
CLI behaves as documented, and the pycoral stand-in keeps pycoral's API."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.parsers.edgetpu_compiler import parse

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "peers" / "edgetpu_compiler.py"
REAL = ROOT / "tests" / "fixtures" / "edgetpu_compiler" / "01-v16-yolov5s-224-two-subgraphs-offchip-success.txt"


def compiler(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(STANDIN), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def shape(line: str) -> str:
    """A line with its values blanked: what stays is the tool's wording and layout."""
    line = re.sub(r"[\w.-]+\.(tflite|log)", "FILE", line)
    line = re.sub(r"\d+(\.\d+)?(MiB|KiB|B)\b", "SIZE", line)
    return re.sub(r"\d+", "N", line).rstrip()


@pytest.fixture(scope="module")
def models(digits_build, tmp_path_factory):
    work = tmp_path_factory.mktemp("compile")
    for variant in ("int8", "fp32"):
        (work / f"digits_{variant}.tflite").write_bytes(digits_build[0].artifacts[variant].path.read_bytes())
    return work


def test_console_and_log_have_the_real_line_shapes(models, tmp_path):
    result = compiler("-s", "-o", str(tmp_path), str(models / "digits_int8.tflite"), cwd=models)
    assert result.returncode == 0, result.stderr
    real = [shape(line) for line in REAL.read_text().splitlines()[2:]]  # without the source and command
    ours = [shape(line) for line in result.stdout.splitlines()]
    table = [s for s in ours if re.match(r"^[A-Z_0-9]+ +N +\w", s)]
    assert [s for s in ours if s not in table] == [s for s in real if not re.match(r"^[A-Z_0-9]+ +N +\w", s)]
    rows = [line for line in result.stdout.splitlines() if re.match(r"^[A-Z_0-9]+ +\d+ +\w", line)]
    real_rows = [line for line in REAL.read_text().splitlines() if re.match(r"^[A-Z_0-9]+ +\d+ +\w", line)]
    columns = {(line[31:32] != " ", line[42:43] != " ") for line in rows + real_rows}
    assert rows and columns == {(True, True)}  # count and status start where the real table's do
    console, log = parse(result.stdout), parse((tmp_path / "digits_int8_edgetpu.log").read_text())
    assert console["success"] and console["output_model"] == "digits_int8_edgetpu.tflite"
    assert console["ops_on_edgetpu"] + console["ops_on_cpu"] == console["total_ops"] == 11
    assert log["operators"] == console["operators"] and log["input_model"] == "digits_int8.tflite"
    assert (tmp_path / "digits_int8_edgetpu.tflite").read_bytes() == (models / "digits_int8.tflite").read_bytes()


def test_a_float_model_is_refused_as_the_real_compiler_does(models, tmp_path):
    result = compiler("-o", str(tmp_path), str(models / "digits_fp32.tflite"), cwd=models)
    assert result.returncode != 0
    assert result.stdout.splitlines() == ["Edge TPU Compiler version 16.0.384591198",
                                          "Invalid model: digits_fp32.tflite", "Model not quantized"]
    assert not list(tmp_path.iterdir())


def test_command_line(models, tmp_path):
    assert compiler("--version", cwd=tmp_path).stdout == "Edge TPU Compiler version 16.0.384591198\n"
    usage = compiler("--help", cwd=tmp_path)
    assert usage.returncode == 0 and "edgetpu_compiler [options] model..." in usage.stdout
    assert compiler(cwd=tmp_path).returncode != 0
    assert compiler("--bogus", "x.tflite", cwd=tmp_path).returncode == 2
    segments = compiler("-n", "2", "-o", str(tmp_path), str(models / "digits_int8.tflite"), cwd=models)
    assert segments.returncode == 0 and sorted(p.name for p in tmp_path.glob("*.tflite")) == [
        "digits_int8_segment_0_of_2_edgetpu.tflite", "digits_int8_segment_1_of_2_edgetpu.tflite"]
    default = compiler("-t", "60", "digits_int8.tflite", cwd=models)  # no -o: the current directory
    assert "Started a compilation timeout timer of 60 seconds." in default.stdout
    assert (models / "digits_int8_edgetpu.tflite").exists() and (models / "digits_int8_edgetpu.log").exists()


def test_pycoral_standin_keeps_the_api(monkeypatch, models):
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "peers" / "pycoral_standin"))
    from pycoral.utils import edgetpu

    monkeypatch.setenv("PYCORAL_STANDIN_TPUS", "usb,pci")
    assert [t["type"] for t in edgetpu.list_edge_tpus()] == ["usb", "pci"]
    assert "RuntimeVersion(14)" in edgetpu.get_runtime_version()
    for device in (None, "usb", "usb:0", "pci", "pci:0", ":1"):
        interpreter = edgetpu.make_interpreter(str(models / "digits_int8.tflite"), device=device)
        interpreter.allocate_tensors()
        interpreter.invoke()
    for device in ("usb:1", "pci:3", ":2", "tpu"):
        with pytest.raises(ValueError, match="Failed to load delegate from libedgetpu.so.1"):
            edgetpu.make_interpreter(str(models / "digits_int8.tflite"), device=device)
