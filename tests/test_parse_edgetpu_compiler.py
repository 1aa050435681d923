"""harness.parsers.edgetpu_compiler on real published compiler output (tests/fixtures/edgetpu_compiler/,
each file's first line names its source). Expected values were read off the fixture text by hand;
sizes are the printed value times 1024^n, rounded."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness.parsers.edgetpu_compiler import OPERATOR_KEYS, RESULT_KEYS, parse

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


# --- fixtures 08-22: more published output (sources on each file's first line) --------------------------------

DATA_TYPE = "Operation is working on an unsupported data type"
LARGE_ACTIVATIONS = ("ERROR: Restored original execution plan after delegate application failure. | "
                     "Compilation failed: Compilation failed due to large activation tensors in model. | "
                     "Compilation failed!")
INTERPRETER = ("Compilation failed: Model failed in Tflite interpreter. Please ensure model can be loaded/run in "
               "Tflite interpreter.")


def test_console_then_its_log_file_the_table_comes_from_the_log():
    assert parse(read("08-v16-console-then-its-log-file.txt")) == expected(
        compiler_version="16.0.384591198", success=True, input_model="efficientdet_coral_v2.tflite",
        output_model="efficientdet_coral_v2_edgetpu.tflite", input_size_bytes=4445962,  # 4.24MiB
        output_size_bytes=5840568,  # 5.57MiB
        on_chip_memory_bytes=4414505, on_chip_memory_remaining_bytes=3449815,  # 4.21MiB, 3.29MiB
        off_chip_memory_bytes=0, subgraphs=1, total_ops=267, ops_on_edgetpu=264, ops_on_cpu=3,
        log_file="efficientdet_coral_v2_edgetpu.log", compile_ms=1524, timeout_s=180,
        operators=rows(("ADD", 42, MAPPED), ("CUSTOM", 1, DATA_TYPE), ("RESHAPE", 10, MAPPED),
                       ("CONCATENATION", 2, MAPPED), ("RESIZE_NEAREST_NEIGHBOR", 12, MAPPED),
                       ("DEPTHWISE_CONV_2D", 80, MAPPED), ("DEQUANTIZE", 2, DATA_TYPE), ("CONV_2D", 102, MAPPED),
                       ("QUANTIZE", 1, MAPPED), ("LOGISTIC", 1, MAPPED), ("MAX_POOL_2D", 14, MAPPED)))


def test_co_compiled_models_the_first_model_is_read():
    """Two models in one run: the second model's per-target counts must not be taken for the first's."""
    assert parse(read("09-v16-co-compiled-two-models.txt")) == expected(
        compiler_version="16.0.384591198", success=True,
        input_model="lane_navigation/model/lane_navigation_w_pretrain_final.tflite",
        output_model="co_compiled_model/lane_navigation_w_pretrain_final_edgetpu.tflite",
        input_size_bytes=264755, output_size_bytes=389755,  # 258.55KiB, 380.62KiB
        on_chip_memory_bytes=329984, on_chip_memory_remaining_bytes=3124756,  # 322.25KiB, 2.98MiB
        off_chip_memory_bytes=0, subgraphs=1, total_ops=12, ops_on_edgetpu=12, ops_on_cpu=0,
        log_file="co_compiled_model/lane_navigation_w_pretrain_final_edgetpu.log", compile_ms=1717, timeout_s=180)


def test_v1_log_file_with_an_operation_left_on_the_cpu():
    assert parse(read("10-v1.0-2019-logfile-custom-op-on-cpu.txt")) == expected(
        compiler_version="1.0.249710469", success=True,
        input_model="./coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.tflite",
        output_model="coco_ssd_mobilenet_v1_1.0_quant_2018_06_29_edgetpu.tflite", total_ops=64, ops_on_edgetpu=63,
        ops_on_cpu=1,
        operators=rows(("CUSTOM", 1, DATA_TYPE), ("CONCATENATION", 2, MAPPED), ("CONV_2D", 34, MAPPED),
                       ("DEPTHWISE_CONV_2D", 13, MAPPED), ("RESHAPE", 13, MAPPED), ("LOGISTIC", 1, MAPPED)))


@pytest.mark.parametrize("name", ["11-v16-yolov5-export-quoted-large-activation-failure.txt",
                                  "15-v16-markdown-italics-large-activation-failure.txt"])
def test_large_activations_behind_a_quote_an_exporter_or_markdown_italics(name):
    assert parse(read(name)) == expected(compiler_version="16.0.384591198", success=False, timeout_s=180,
                                         error=LARGE_ACTIVATIONS)


@pytest.mark.parametrize("name, error", [
    ("12-v16-dynamic-sized-tensors-failure.txt",
     "ERROR: Attempting to use a delegate that only supports static-sized tensors with a graph that has "
     f"dynamic-sized tensors. | {INTERPRETER} | Compilation failed!"),
    ("14-v16-uncaught-exception-out-of-range.txt",
     "libc++abi: terminating with uncaught exception of type std::out_of_range: vector | Compilation failed!"),
    ("20-v16-flex-ops-interpreter-failure.txt",
     "ERROR: Regular TensorFlow ops are not supported by this interpreter. Make sure you apply/link the Flex "
     "delegate before inference. | ERROR: Node number 0 (FlexTensorListReserve) failed to prepare. | "
     f"{INTERPRETER} | Compilation failed!"),
])
def test_v16_failures_after_the_timer_started(name, error):
    assert parse(read(name)) == expected(compiler_version="16.0.384591198", success=False, timeout_s=180,
                                         error=error)


def test_a_segmentation_fault_of_the_wrapper_script():
    assert parse(read("13-v16-segmentation-fault.txt")) == expected(
        compiler_version="16.0.384591198", success=False,
        error='/usr/bin/edgetpu_compiler: line 3:  1531 Segmentation fault      (core dumped) '
              '${d}/edgetpu_compiler_bin/ld-linux-x86-64.so.2 --library-path ${d}/edgetpu_compiler_bin '
              '${d}/edgetpu_compiler_bin/edgetpu_compiler "$@"')


def test_only_a_version_line_in_markdown_bold():
    assert parse(read("16-v15-version-only-in-bold.txt")) == expected(compiler_version="15.0.340273435")


def test_an_elided_paste_gives_its_rows_but_no_counts_from_a_partial_table():
    """The dots stand for lines the author left out: the one row is kept, but it is not the whole model."""
    assert parse(read("17-v14-elided-output-one-table-row.txt")) == expected(
        compiler_version="14.1.317412892", operators=rows(("TRANSPOSE", 42, "Operation not supported")))


def test_v14_console_pasted_without_its_blank_lines():
    assert parse(read("18-v14-console-without-blank-lines.txt")) == expected(
        compiler_version="14.1.317412892", success=True, input_model="model_classifier_CNN.tflite",
        output_model="model_classifier_CNN_edgetpu.tflite", input_size_bytes=389007,  # 379.89KiB
        output_size_bytes=3439329,  # 3.28MiB
        on_chip_memory_bytes=3428844, on_chip_memory_remaining_bytes=2977956,  # 3.27MiB, 2.84MiB
        off_chip_memory_bytes=0, subgraphs=1, total_ops=14, ops_on_edgetpu=14, ops_on_cpu=0,
        log_file="model_classifier_CNN_edgetpu.log", compile_ms=102,
        operators=rows(("RESHAPE", 1, MAPPED), ("MAX_POOL_2D", 4, MAPPED), ("FULLY_CONNECTED", 2, MAPPED),
                       ("CONV_2D", 4, MAPPED), ("QUANTIZE", 2, MAPPED), ("SOFTMAX", 1, MAPPED)))


def test_a_paste_that_starts_at_the_cpu_summary():
    assert parse(read("19-v14-paste-starts-at-the-cpu-summary.txt")) == expected(
        success=True, total_ops=2, ops_on_edgetpu=0, ops_on_cpu=2,
        operators=rows(("MUL", 1, UNSPECIFIED), ("SPLIT", 1, UNSPECIFIED)))


def test_v2_two_runs_with_two_compilers_both_failing():
    assert parse(read("21-v2.0-two-runs-internal-compiler-error.txt")) == expected(
        compiler_version="2.0.267685300", success=False, error="Internal compiler error. Aborting!")


def test_v14_success_then_an_internal_error_on_the_same_model():
    assert parse(read("22-v14-success-then-internal-error-wrapped-paragraph.txt")) == expected(
        compiler_version="14.1.317412892", success=True, input_model="T1_no_summ_02_quant8.tflite",
        output_model="T1_no_summ_02_quant8_edgetpu.tflite", input_size_bytes=28867,  # 28.19KiB
        output_size_bytes=119583,  # 116.78KiB
        on_chip_memory_bytes=61440, on_chip_memory_remaining_bytes=8346665,  # 60.00KiB, 7.96MiB
        off_chip_memory_bytes=0, subgraphs=1, total_ops=24, ops_on_edgetpu=6, ops_on_cpu=18,
        log_file="T1_no_summ_02_quant8_edgetpu.log", compile_ms=113)



# --- how pasted text is cut into runs, and what a paste may do to the lines ------------------------------------

FIRST_SUCCESS = "01-v16-yolov5s-224-two-subgraphs-offchip-success.txt"
# what v16 prints for a failed attempt, line for line as published (google-coral/edgetpu#651, #444, #557)
FAILED_ATTEMPT = ("Started a compilation timeout timer of 180 seconds.\n"
                  "ERROR: Restored original execution plan after delegate application failure.\n"
                  "Compilation failed: Compilation failed due to large activation tensors in model.\n"
                  "Compilation child process completed within timeout period.\n"
                  "Compilation failed! \n")


def _from_timer(name: str) -> str:
    """A fixture's lines from its timer line on: one compilation attempt."""
    text = read(name)
    return text[text.index("Started a compilation timeout timer"):]


def test_search_delegate_attempts_the_last_one_is_the_result():
    """-d: failed attempts, then one that compiles (assembled from published lines: the search as in
    google-coral/edgetpu#651, the compiling attempt from fixture 01); earlier failures are steps of the search."""
    text = ("Edge TPU Compiler version 16.0.384591198\nSearching for valid delegate with step 1\n"
            "Try to compile segment with 424 ops\n" + FAILED_ATTEMPT + "Try to compile segment with 423 ops\n"
            "Intermediate tensors: tfl.dequantize,Sigmoid1\n" + _from_timer(FIRST_SUCCESS))
    assert parse(text) == parse(read(FIRST_SUCCESS))


def test_segments_a_later_failing_segment_fails_the_command():
    """-n 2: the first segment compiles, the second fails (the sequence of google-coral/edgetpu#557; the
    first segment's lines from fixture 01): the command's result is the failure."""
    text = "Edge TPU Compiler version 16.0.384591198\n" + _from_timer(FIRST_SUCCESS) + FAILED_ATTEMPT
    assert parse(text) == expected(compiler_version="16.0.384591198", success=False, timeout_s=180,
                                   error=LARGE_ACTIVATIONS)
    cut = "Edge TPU Compiler version 16.0.384591198\n" + _from_timer(FIRST_SUCCESS) + FAILED_ATTEMPT[:52]
    assert parse(cut) == parse(read(FIRST_SUCCESS))  # cut off before the second outcome: the first stands


def _wrap(line: str, width: int, words: bool) -> list[str]:
    out = []
    while len(line) > width:
        cut = line.rfind(" ", 0, width) if words else width
        cut = cut if cut > 0 else width
        out.append(line[:cut])
        line = line[cut:].lstrip(" ") if words else line[cut:]
    return out + [line]


@pytest.mark.parametrize("width, words", [(80, True), (100, False), (72, True), (72, False)])
def test_rows_wrapped_by_a_narrow_window_are_joined_back(width, words):
    text = read(FIRST_SUCCESS)
    wrapped = "\n".join(piece for line in text.splitlines() for piece in _wrap(line, width, words))
    assert wrapped != text and parse(wrapped) == parse(text)


def test_the_operator_table_as_a_markdown_table():
    lines = read(FIRST_SUCCESS).splitlines()
    head = lines.index("Operator                       Count      Status")
    table = [line.split() for line in lines[head + 2:-2]]
    markdown = ["| Operator | Count | Status |", "|---|---|---|"] + [
        f"| {cells[0]} | {cells[1]} | {' '.join(cells[2:])} |" for cells in table]
    assert parse("\n".join(lines[:head] + markdown + lines[-2:])) == parse(read(FIRST_SUCCESS))


FIXTURE_NAMES = sorted(path.name for path in FIXTURES.glob("*.txt"))
KNOWN_PREFIXES = ["> ", "INFO: ", "[edgetpu] ", "2024-03-08 12:34:56,789 ", "12:34:56 ",
                  "I0308 12:34:56.789012 1234 compile.py:42] ", "INFO:root:"]


@pytest.mark.parametrize("prefix", KNOWN_PREFIXES)
def test_a_known_prefix_on_every_line_changes_nothing(prefix):
    for name in FIXTURE_NAMES:
        text = read(name)
        prefixed = "\n".join(prefix + line for line in text.splitlines())
        assert parse(prefixed) == parse(text), (name, prefix)


PUBLISHED_FACTS = json.loads((FIXTURES / "published-facts.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(PUBLISHED_FACTS))
def test_published_outputs_it_was_not_written_for(name):
    """Fixtures 23-47: 25 more published outputs (v1.0 to v16, logs and consoles, prompts, banners,
    exporters' lines, tables cut where a paste ends, co-compiled models, failures), collected after
    the parser was written; every fact of each (320 in all: values, and each row of its operator
    table in order) was written down by hand before the parser first read it."""
    facts = dict(PUBLISHED_FACTS[name])
    operators = facts.pop("operators", [])
    assert parse(read(name)) == expected(**facts, operators=rows(*((r["operator"], r["count"], r["status"])
                                                                    for r in operators)))


def _well_formed(result: dict) -> None:
    assert set(result) == set(RESULT_KEYS)
    assert result["success"] in (None, True, False)
    assert all(set(row) == set(OPERATOR_KEYS) and isinstance(row["count"], int) for row in result["operators"])


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_cut_anywhere_or_prefixed_with_anything_it_never_raises(name):
    """Every fixture cut after every line and within every line, and with random prefixes (known ones,
    garbage, control characters): parse returns a well-formed dict, partial as the text is."""
    rng = random.Random(name)
    lines = read(name).splitlines()
    for cut in range(len(lines) + 1):
        _well_formed(parse("\n".join(lines[:cut])))
        if cut < len(lines):
            _well_formed(parse("\n".join(lines[:cut] + [lines[cut][: len(lines[cut]) // 2]])))
    alphabet = "> *_[]|:-#$\t\x00\x1b\u2028✓ÿ0123456789abcXYZ()"
    for _ in range(30):
        junk = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in lines]
        pick = [rng.choice(KNOWN_PREFIXES + junk) for _ in lines]
        _well_formed(parse("\n".join(prefix + line for prefix, line in zip(pick, lines))))
        _well_formed(parse("".join(rng.choice(alphabet) + line for line in lines)))
