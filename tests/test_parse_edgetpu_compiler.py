"""harness.parsers.edgetpu_compiler on real published compiler output (tests/fixtures/edgetpu_compiler/,
each file's first line names its source). Expected values were read off the fixture text by hand;
sizes are the printed value times 1024^n, rounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.parsers.edgetpu_compiler import RESULT_KEYS, parse

FIXTURES = Path(__file__).parent / "fixtures" / "edgetpu_compiler"
MAPPED = "Mapped to Edge TPU"
UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"


def read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def expected(**keys) -> dict:
    result = dict.fromkeys(RESULT_KEYS)
    result["operators"] = []
    result.update(keys)
    return result


def rows(*table: tuple[str, int, str]) -> list[dict]:
    return [{"operator": op, "count": count, "status": status} for op, count, status in table]


def test_v16_console_with_operations_table_two_subgraphs_and_off_chip_memory():
    assert parse(read("01-v16-yolov5s-224-two-subgraphs-offchip-success.txt")) == expected(
        compiler_version="16.0.384591198", success=True, input_model="yolov5s-int8-224.tflite",
        output_model="yolov5s-int8-224_edgetpu.tflite", input_size_bytes=7728005,  # 7.37MiB
        output_size_bytes=8745124,  # 8.34MiB
        on_chip_memory_bytes=6375342,  # 6.08MiB
        on_chip_memory_remaining_bytes=0, off_chip_memory_bytes=1782579,  # 1.70MiB
        subgraphs=2, total_ops=294, ops_on_edgetpu=289, ops_on_cpu=5,
        log_file="yolov5s-int8-224_edgetpu.log", compile_ms=3173, timeout_s=180,
        operators=rows(("RESIZE_NEAREST_NEIGHBOR", 2, MAPPED), ("CONCATENATION", 1, UNSPECIFIED),
                       ("CONCATENATION", 17, MAPPED), ("STRIDED_SLICE", 13, MAPPED), ("TRANSPOSE", 1, UNSPECIFIED),
                       ("TRANSPOSE", 2, MAPPED), ("MAX_POOL_2D", 3, MAPPED), ("LOGISTIC", 62, MAPPED),
                       ("QUANTIZE", 2, UNSPECIFIED), ("QUANTIZE", 24, MAPPED), ("SUB", 3, MAPPED), ("PAD", 6, MAPPED),
                       ("RESHAPE", 1, UNSPECIFIED), ("RESHAPE", 5, MAPPED), ("ADD", 10, MAPPED), ("MUL", 80, MAPPED),
                       ("CONV_2D", 62, MAPPED)))


def test_2019_log_format_counts_come_from_the_table():
    assert parse(read("02-v2.0-2019-logfile-format-all-mapped.txt")) == expected(
        compiler_version="2.0.267685300", success=True, input_model="quantized.tflite",
        output_model="quantized_edgetpu.tflite", total_ops=25, ops_on_edgetpu=25, ops_on_cpu=0,
        operators=rows(("RESIZE_NEAREST_NEIGHBOR", 1, MAPPED), ("MAX_POOL_2D", 6, MAPPED),
                       ("CONCATENATION", 1, MAPPED), ("QUANTIZE", 4, MAPPED), ("CONV_2D", 13, MAPPED)))


@pytest.mark.parametrize("name, version, model", [
    ("03-v15-float-model-not-quantized.txt", "15.0.340273435", "heehoo.tflite"),
    ("04-v14-mnist-model-not-quantized.txt", "14.1.317412892", "my_mnist_quant.tflite"),
])
def test_a_model_that_is_not_quantized(name, version, model):
    assert parse(read(name)) == expected(compiler_version=version, success=False,
                                         error=f"Invalid model: {model} | Model not quantized")


def test_internal_compiler_error():
    assert parse(read("05-v14-internal-compiler-error.txt")) == expected(
        compiler_version="14.1.317412892", success=False, error="Internal compiler error. Aborting!")


def test_several_runs_in_one_text_the_first_is_read():
    """Two failed attempts then a success, pasted together: the first output is the result."""
    assert parse(read("06-v14-internal-error-twice-then-offchip-success.txt")) == expected(
        compiler_version="14.1.317412892", success=False, error="Internal compiler error. Aborting!")
    success = read("06-v14-internal-error-twice-then-offchip-success.txt").split("$ edgetpu_compiler")[3]
    assert parse(success) == expected(
        compiler_version="14.1.317412892", success=True, input_model="cam-ai_model_quant.tflite",
        output_model="cam-ai_model_quant_edgetpu.tflite", input_size_bytes=48538583,  # 46.29MiB
        output_size_bytes=49534730,  # 47.24MiB
        on_chip_memory_bytes=6280970, on_chip_memory_remaining_bytes=75776,  # 5.99MiB, 74.00KiB
        off_chip_memory_bytes=16494100,  # 15.73MiB
        subgraphs=1, total_ops=108, ops_on_edgetpu=102, ops_on_cpu=6, log_file="cam-ai_model_quant_edgetpu.log",
        compile_ms=1626)


def test_v15_log_with_an_unsupported_data_type():
    assert parse(read("07-v15-two-logfiles-unsupported-data-type.txt")) == expected(
        compiler_version="15.0.340273435", success=True, input_model="mnist4.tflite",
        output_model="mnist4_edgetpu.tflite", total_ops=10, ops_on_edgetpu=8, ops_on_cpu=2,
        operators=rows(("RESHAPE", 1, MAPPED), ("CONV_2D", 2, MAPPED), ("SOFTMAX", 1, MAPPED),
                       ("QUANTIZE", 1, UNSPECIFIED), ("DEQUANTIZE", 1, "Operation is working on an unsupported data type"),
                       ("MAX_POOL_2D", 2, MAPPED), ("FULLY_CONNECTED", 2, MAPPED)))


def test_all_mapped_console_without_per_target_lines():
    """v15 prints no per-target counts when every operation maps (seen in published output)."""
    text = ("Edge TPU Compiler version 15.0.340273435\n\nModel compiled successfully in 787 ms.\n\n"
            "Input model: m.tflite\nInput size: 1.30MiB\nOutput model: m_edgetpu.tflite\nOutput size: 1.54MiB\n"
            "Number of Edge TPU subgraphs: 1\nTotal number of operations: 31\nOperation log: m_edgetpu.log\n"
            "See the operation log file for individual operation details.\n")
    result = parse(text)
    assert (result["success"], result["total_ops"], result["ops_on_edgetpu"], result["ops_on_cpu"]) == (True, 31, 31, 0)
    assert result["input_size_bytes"] == 1363149 and result["on_chip_memory_bytes"] is None


def test_sizes_crlf_and_indentation():
    text = ("    Edge TPU Compiler version 16.0.384591198\r\n    Output size: 128.00KiB\r\n"
            "    On-chip memory remaining for caching model parameters: 0.00B\r\n    Input size: 512.00B\r\n")
    result = parse(text)
    assert (result["output_size_bytes"], result["on_chip_memory_remaining_bytes"], result["input_size_bytes"]) == (
        131072, 0, 512)
    assert result["success"] is None and result["compiler_version"] == "16.0.384591198"


@pytest.mark.parametrize("text", ["", "\n\n", "garbage \x00 ✓\nOperator Count Status\nX y z\n", "Input size: lots\n"])
def test_nothing_recognisable_gives_nulls(text):
    result = parse(text)
    assert set(result) == set(RESULT_KEYS) and result["operators"] == []
    assert all(result[k] is None for k in RESULT_KEYS if k != "operators")
