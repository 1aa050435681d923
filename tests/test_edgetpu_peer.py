"""The test doubles for Coral's tools behave as the real ones are documented and seen to: the stand-in
`edgetpu_compiler` (tests/peers/edgetpu_compiler.py) on models converted here with TensorFlow, its
console compared line by line with real v16 output (tests/fixtures/edgetpu_compiler/01-…, the copy of
/work/shared/fixtures/tool-output/edgetpu_compiler/01-…), and the pycoral stand-in
(tests/peers/pycoral_standin) through pycoral's API."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.peers.edgetpu_compiler import (BAD_TYPE, MAPPED, NOT_SUPPORTED, ONE_SUBGRAPH, OTHERWISE, Op,
                                          install_compiler, size_text, statuses, subgraph_count)

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "peers" / "edgetpu_compiler.py"
PYCORAL = ROOT / "tests" / "peers" / "pycoral_standin"
REAL = ROOT / "tests" / "fixtures" / "edgetpu_compiler" / "01-v16-yolov5s-224-two-subgraphs-offchip-success.txt"
VERSION_LINE = "Edge TPU Compiler version 16.0.384591198"
KNOBS = ("EDGETPU_STANDIN_RECORD", "EDGETPU_STANDIN_SLEEP", "EDGETPU_STANDIN_FAIL")
TABLE_ROW = re.compile(r"^[A-Z][A-Z0-9_]* +\d+ +\S")


def _digits_28x28():
    """sklearn's 8x8 digits, each pixel 3x3, padded to 28x28x1 in [0, 1]."""
    import numpy as np
    from sklearn.datasets import load_digits

    images = np.kron(load_digits().images[:64] / 16.0, np.ones((3, 3)))
    return np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None].astype(np.float32)


def _convert(model, images, integer_io: bool | None) -> bytes:
    """fp32 (None), full-int8 with int8 input and output (True), or int8 inside float I/O (False)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if integer_io is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if integer_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A tiny Conv2D + MaxPool + Flatten + Dense model in three conversions, in one directory."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tf_keras as keras

    images = _digits_28x28()
    model = keras.Sequential([keras.layers.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(10)])
    work = tmp_path_factory.mktemp("models")
    for name, integer_io in (("digits_fp32", None), ("digits_int8", True), ("digits_int8_floatio", False)):
        (work / f"{name}.tflite").write_bytes(_convert(model, images, integer_io))
    return work


def compiler(*args: str, cwd: Path, **knobs: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in KNOBS} | knobs
    return subprocess.run([sys.executable, str(STANDIN), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def shape(line: str) -> str:
    """A line with its values blanked: what stays is the tool's wording and layout."""
    line = re.sub(r"\d+(\.\d+)?(MiB|KiB|B)\b", "SIZE", line.rstrip())
    line = re.sub(r"[\w./-]+\.(tflite|log)\b", "FILE", line)
    return re.sub(r"\d+", "N", line)


def rows_of(lines: list[str]) -> list[tuple[str, int, str]]:
    """(operator, count, status) of the table rows."""
    return [(line[:31].strip(), int(line[31:42]), line[42:].strip()) for line in lines if TABLE_ROW.match(line)]


# -- the command line ---------------------------------------------------------------------------


def test_version_help_and_bad_command_lines(tmp_path):
    for flag in ("--version", "-v"):
        result = compiler(flag, cwd=tmp_path)
        assert (result.returncode, result.stdout, result.stderr) == (0, VERSION_LINE + "\n", "")
    usage = compiler("-h", cwd=tmp_path)
    assert usage.returncode == 0 and usage.stdout.startswith(VERSION_LINE + "\n")
    assert "edgetpu_compiler [options] model..." in usage.stdout and "--num_segments" in usage.stdout
    bogus = compiler("--bogus", "x.tflite", cwd=tmp_path)
    assert bogus.returncode != 0 and bogus.stdout == "" and "unrecognized option '--bogus'" in bogus.stderr
    missing = compiler("-o", cwd=tmp_path)
    assert missing.returncode != 0 and "requires an argument" in missing.stderr
    nothing = compiler(cwd=tmp_path)
    assert nothing.returncode != 0 and nothing.stdout == VERSION_LINE + "\n" and "model..." in nothing.stderr
    assert not list(tmp_path.iterdir())


# -- compiling ----------------------------------------------------------------------------------


def test_an_int8_model_compiles_with_the_real_lines_in_order(models, tmp_path):
    out = tmp_path / "out"
    result = compiler("-o", str(out), str(models / "digits_int8.tflite"), cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    expected = [VERSION_LINE, "Started a compilation timeout timer of 180 seconds.", "",
                "Model compiled successfully in ", "", f"Input model: {models / 'digits_int8.tflite'}",
                "Input size: ", f"Output model: {out}/digits_int8_edgetpu.tflite", "Output size: ",
                "On-chip memory used for caching model parameters: ",
                "On-chip memory remaining for caching model parameters: ",
                "Off-chip memory used for streaming uncached model parameters: 0.00B",
                "Number of Edge TPU subgraphs: 1", "Total number of operations: 4",
                f"Operation log: {out}/digits_int8_edgetpu.log",
                "See the operation log file for individual operation details.",
                "Compilation child process completed within timeout period.", "Compilation succeeded! "]
    assert len(lines) == len(expected) and all(line.startswith(e) for line, e in zip(lines, expected)), lines
    assert lines[-1] == "Compilation succeeded! " and re.fullmatch(r"Model compiled successfully in \d+ ms\.", lines[3])
    assert sorted(p.name for p in out.iterdir()) == ["digits_int8_edgetpu.log", "digits_int8_edgetpu.tflite"]
    assert (out / "digits_int8_edgetpu.tflite").read_bytes() == (models / "digits_int8.tflite").read_bytes()
    log = (out / "digits_int8_edgetpu.log").read_text().splitlines()
    assert log[:6] == [VERSION_LINE, f"Input: {models / 'digits_int8.tflite'}",
                       f"Output: {out}/digits_int8_edgetpu.tflite", "", f"{'Operator':<31}{'Count':<11}Status", ""]
    assert rows_of(log) == [(name, 1, MAPPED) for name in ("CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED")]
    assert not list(tmp_path.glob("*.tflite"))  # nothing in the current directory


def test_operations_left_on_the_cpu_are_counted_and_shown(models, tmp_path):
    result = compiler("-s", "digits_int8_floatio.tflite", cwd=models)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and "See the operation log file for individual operation details." not in lines
    counts = {key: int(value) for key, value in re.findall(r"^(Total number of operations|Number of operations "
                                                           r"that will run on \w+(?: \w+)?): (\d+)$", result.stdout,
                                                           re.M)}
    rows = rows_of(lines)
    assert rows == [("QUANTIZE", 1, OTHERWISE), ("CONV_2D", 1, MAPPED), ("MAX_POOL_2D", 1, MAPPED),
                    ("RESHAPE", 1, MAPPED), ("FULLY_CONNECTED", 1, MAPPED), ("DEQUANTIZE", 1, BAD_TYPE)]
    assert counts == {"Total number of operations": 6, "Number of operations that will run on Edge TPU": 4,
                      "Number of operations that will run on CPU": 2} == {
        "Total number of operations": sum(c for _, c, _ in rows),
        "Number of operations that will run on Edge TPU": sum(c for _, c, s in rows if s == MAPPED),
        "Number of operations that will run on CPU": sum(c for _, c, s in rows if s != MAPPED)}
    assert rows_of((models / "digits_int8_floatio_edgetpu.log").read_text().splitlines()) == rows
    assert "Output model: digits_int8_floatio_edgetpu.tflite" in lines  # no -o: a bare name in the cwd


def test_the_console_has_the_line_shapes_of_real_v16_output(models, tmp_path):
    result = compiler("-sa", "-o", str(tmp_path), str(models / "digits_int8_floatio.tflite"), cwd=models)
    assert result.returncode == 0
    real = REAL.read_text().splitlines()[2:]  # without the source line and the command
    ours = result.stdout.splitlines()
    assert [shape(s) for s in ours if not TABLE_ROW.match(s)] == [shape(s) for s in real if not TABLE_ROW.match(s)]
    rows = [s for s in ours + real if TABLE_ROW.match(s)]
    assert {(s[30], s[31] != " ", s[41], s[42] != " ") for s in rows} == {(" ", True, " ", True)}


def test_a_float_model_is_refused_as_the_real_compiler_does(models, tmp_path):
    result = compiler("-o", str(tmp_path), "digits_fp32.tflite", cwd=models)
    assert result.returncode != 0
    assert result.stdout.splitlines() == [VERSION_LINE, "Invalid model: digits_fp32.tflite", "Model not quantized"]
    assert not list(tmp_path.iterdir()) and not list(models.glob("digits_fp32_edgetpu*"))


def test_segments_are_compiled_one_by_one(models):
    result = compiler("-d", "-n", "2", "-o", "seg", "digits_int8.tflite", cwd=models)
    assert result.returncode == 0
    out = models / "seg"
    assert sorted(p.name for p in out.iterdir()) == [f"digits_int8_segment_{k}_of_2_edgetpu.{ext}"
                                                    for k in (0, 1) for ext in ("log", "tflite")]
    lines = result.stdout.splitlines()
    assert lines.count("Searching for valid delegate with step 1") == 2
    assert lines.count("Compilation succeeded! ") == 2
    assert [line for line in lines if line.startswith("Input model:")] == [
        "Input model: seg/digits_int8_segment_0_of_2.tflite", "Input model: seg/digits_int8_segment_1_of_2.tflite"]
    totals = [int(line.split(": ")[1]) for line in lines if line.startswith("Total number of operations")]
    assert totals == [2, 2] and [line for line in lines if line.startswith("Try to compile")] == [
        "Try to compile segment with 2 ops"] * 2


def test_without_a_mapping_stops_at_the_first_cpu_operation():
    ops = [Op("QUANTIZE", OTHERWISE, {}), Op("CONV_2D", None, {1: 36}), Op("FLOOR_MOD", NOT_SUPPORTED, {}),
           Op("CONV_2D", None, {2: 36}), Op("ADD", None, {})]
    one = statuses(ops, multiple_subgraphs=False)
    assert one == [OTHERWISE, MAPPED, NOT_SUPPORTED, ONE_SUBGRAPH, ONE_SUBGRAPH] and subgraph_count(one) == 1
    many = statuses(ops, multiple_subgraphs=True)
    assert many == [OTHERWISE, MAPPED, NOT_SUPPORTED, MAPPED, MAPPED] and subgraph_count(many) == 2
    assert [size_text(n) for n in (0, 1023, 75776, 7_727_963)] == ["0.00B", "1023.00B", "74.00KiB", "7.37MiB"]


# -- the test knobs -----------------------------------------------------------------------------


def test_the_installed_wrapper_records_every_invocation(models, tmp_path):
    record = tmp_path / "calls.jsonl"
    wrapper = install_compiler(tmp_path / "bin", {"EDGETPU_STANDIN_RECORD": str(record)})
    assert os.access(wrapper, os.X_OK) and wrapper.name == "edgetpu_compiler"
    first = subprocess.run([str(wrapper), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    second = subprocess.run([str(wrapper), "-s", "-o", str(tmp_path / "o"), "digits_int8.tflite"], cwd=models,
                            capture_output=True, text=True, timeout=60)
    assert first.stdout == VERSION_LINE + "\n" and second.returncode == 0
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls == [{"argv": ["--version"], "cwd": str(tmp_path)},
                     {"argv": ["-s", "-o", str(tmp_path / "o"), "digits_int8.tflite"], "cwd": str(models)}]


def test_an_internal_compiler_error_fails_the_compilation(models, tmp_path):
    result = compiler("-o", str(tmp_path), "digits_int8.tflite", cwd=models, EDGETPU_STANDIN_FAIL="internal")
    assert result.returncode == 1 and not list(tmp_path.iterdir())
    assert result.stdout.splitlines() == [VERSION_LINE, "Started a compilation timeout timer of 180 seconds.",
                                          "Internal compiler error. Aborting! ",
                                          "Compilation child process completed within timeout period.",
                                          "Compilation failed! "]


def test_a_slow_compilation_ends_at_the_timer_of_minus_t(models, tmp_path):
    started = time.monotonic()
    result = compiler("-t", "1", "-o", str(tmp_path), "digits_int8.tflite", cwd=models, EDGETPU_STANDIN_SLEEP="60")
    assert time.monotonic() - started < 30
    assert result.returncode == 1 and not list(tmp_path.iterdir())
    assert result.stdout.splitlines() == [VERSION_LINE, "Started a compilation timeout timer of 1 seconds.",
                                          "Compilation timeout. This is usually caused by large activations.",
                                          "Compilation failed! "]


# -- pycoral ------------------------------------------------------------------------------------


@pytest.fixture
def edgetpu(monkeypatch):
    monkeypatch.syspath_prepend(str(PYCORAL))
    for name in [n for n in sys.modules if n == "pycoral" or n.startswith("pycoral.")]:
        monkeypatch.delitem(sys.modules, name)
    import pycoral
    from pycoral.utils import edgetpu

    assert pycoral.__version__ == "2.0.0"
    return edgetpu


def test_pycoral_lists_the_attached_tpus_and_the_runtime(edgetpu, monkeypatch):
    assert edgetpu.list_edge_tpus() == [{"type": "usb", "path": "/sys/bus/usb/devices/2-1"}]
    monkeypatch.setenv("PYCORAL_STANDIN_TPUS", "usb,pci,pci")
    assert edgetpu.list_edge_tpus() == [{"type": "usb", "path": "/sys/bus/usb/devices/2-1"},
                                        {"type": "pci", "path": "/dev/apex_0"}, {"type": "pci", "path": "/dev/apex_1"}]
    assert re.fullmatch(r"BuildLabel\(COMPILER=[^,]+,DATE=[^,]+,TIME=[^)]+\), RuntimeVersion\(14\)",
                        edgetpu.get_runtime_version())


def test_pycoral_runs_a_compiled_model_on_the_named_tpu(edgetpu, models, monkeypatch, tmp_path):
    import numpy as np

    assert compiler("-o", str(tmp_path), "digits_int8.tflite", cwd=models).returncode == 0
    compiled = tmp_path / "digits_int8_edgetpu.tflite"
    monkeypatch.setenv("PYCORAL_STANDIN_TPUS", "usb,pci")
    for device in (None, "", "usb", "usb:0", "pci", "pci:0", ":0", ":1"):
        interpreter = edgetpu.make_interpreter(str(compiled), device=device)
        interpreter.allocate_tensors()
        given = interpreter.get_input_details()[0]
        interpreter.set_tensor(given["index"], np.zeros(given["shape"], dtype=given["dtype"]))
        interpreter.invoke()
        assert interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).shape == (1, 10)
    from_bytes = edgetpu.make_interpreter(compiled.read_bytes(), device="pci:0")
    from_bytes.allocate_tensors()
    from_bytes.invoke()


def test_pycoral_refuses_a_tpu_that_is_not_attached(edgetpu, models, monkeypatch):
    monkeypatch.setenv("PYCORAL_STANDIN_TPUS", "usb")
    for device in ("usb:1", "pci", "pci:0", ":1", "tpu", "usb0", "usb:-1", ":x"):
        with pytest.raises(ValueError) as caught:
            edgetpu.make_interpreter(str(models / "digits_int8.tflite"), device=device)
        assert str(caught.value) == "Failed to load delegate from libedgetpu.so.1\n"
    monkeypatch.setenv("PYCORAL_STANDIN_TPUS", "")
    assert edgetpu.list_edge_tpus() == []
    with pytest.raises(ValueError, match="Failed to load delegate from libedgetpu.so.1"):
        edgetpu.make_interpreter(str(models / "digits_int8.tflite"))
