"""Tests of harness.parsers.benchmark_model against real benchmark_model captures.

Every expected value below was read off the fixture text by hand. A fixture's
first line (``# source: …``) is part of the text handed to the parser, which
treats it as an ordinary unrecognised line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.parsers.benchmark_model import OP_ROW_KEYS, RESULT_KEYS, parse

FIXTURES = Path(__file__).parent / "fixtures" / "benchmark_model"


def read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def stats(count=None, first=None, curr=None, min=None, max=None, avg=None, std=None,
          p5=None, median=None, p95=None) -> dict:
    """A statistics dict (timed or warm-up) with every key, unset ones None."""
    return {
        "count": count, "first_us": first, "curr_us": curr, "min_us": min, "max_us": max,
        "avg_us": avg, "std_us": std, "p5_us": p5, "median_us": median, "p95_us": p95,
    }


def expected(timed: dict | None = None, **keys) -> dict:
    """The full expected result without ``ops``: every key not given is None
    (``delegates``/``errors``: empty list)."""
    result = dict.fromkeys(RESULT_KEYS)
    result.update(delegates=[], errors=[])
    result.update(timed or stats())
    result.update(keys)
    del result["ops"]
    return result


def without_ops(result: dict) -> dict:
    return {key: value for key, value in result.items() if key != "ops"}


def op(section, table, node_type, *, start=None, first=None, avg, percent, cdf, mem,
       times_called, count=None, name=None) -> dict:
    return {
        "section": section, "table": table, "node_type": node_type, "start_ms": start,
        "first_ms": first, "avg_ms": avg, "percent": percent, "cdf_percent": cdf,
        "mem_kb": mem, "times_called": times_called, "count": count, "name": name,
    }


def table_sizes(ops: list[dict]) -> list[tuple]:
    """(section, table, number of rows) in order of appearance."""
    sizes: list[list] = []
    for row in ops:
        key = [row["section"], row["table"]]
        if sizes and sizes[-1][:2] == key:
            sizes[-1][2] += 1
        else:
            sizes.append(key + [1])
    return [tuple(size) for size in sizes]


NNAPI_FAILURE_ERRORS = [
    "NN API returned error ANEURALNETWORKS_OP_FAILED at line 3779 while completing NNAPI compilation.",
    "Node number 248 (TfLiteNnapiDelegate) failed to prepare.",
    "Restored original execution plan after delegate application failure.",
    "Failed to apply NNAPI delegate.",
    "Benchmarking failed.",
]
MOBILENET_025 = "/data/local/tmp/mobilenet_v1_0.25_224_quant.tflite"
SSD_MOBILENET = "/usr/share/oob-demo-assets/models/ssd_mobilenet_v2_coco.tflite"
ZEDBOARD_GRAPH = "../../tensorflow-models/mobilenet-v1/mobilenet_v1_1.0_224_quant.tflite"

CASES = {
    # https://github.com/lp6m/yolov5s_android/blob/cef737ceb9fb079ddbdba2002f6be4b262582a1f/benchmark/README.md#L28-L31
    "01-android-adb-mi11-tf24-cpu-fp32-peak-memory.txt": expected(
        stats(50, 249042.0, 250889.0, 247067.0, 254474.0, 249684.0, 1442.0),
        init_us=16242.0, first_inference_us=360262.0, warmup_avg_us=304586.0,
        inference_avg_us=249684.0, memory_init_mb=4.92969, memory_overall_mb=138.809,
        runs_in_output=1,
    ),
    # https://github.com/lp6m/yolov5s_android/blob/cef737ceb9fb079ddbdba2002f6be4b262582a1f/benchmark/README.md#L60-L63
    "02-android-adb-mi11-tf24-nnapi-gpu-fp16-decimal-avg.txt": expected(
        stats(50, 96719.0, 90158.0, 89745.0, 96719.0, 92571.2, 1638.0),
        init_us=365972.0, first_inference_us=120877.0, warmup_avg_us=108605.0,
        inference_avg_us=92571.2, memory_init_mb=6.90625, memory_overall_mb=61.0547,
        runs_in_output=1,
    ),
    # https://github.com/lp6m/yolov5s_android/blob/cef737ceb9fb079ddbdba2002f6be4b262582a1f/benchmark/README.md#L81-L141
    # Only op-profiling tables: their "Timings (microseconds): count=50 …" is not a run.
    "03-android-adb-taskset-mi11-tf24-nnapi-op-profiling.txt": expected(runs_in_output=1),
    # https://github.com/lp6m/yolov5s_android/blob/cef737ceb9fb079ddbdba2002f6be4b262582a1f/benchmark/README.md#L172-L190
    "04-android-adb-mi11-tf24-nnapi-delegate-fails.txt": expected(
        errors=NNAPI_FAILURE_ERRORS, num_threads=4,
        graph="/data/local/tmp/yolov5s_int8_640.tflite", runs_in_output=1,
    ),
    # https://github.com/NobuoTsukamoto/meta-tensorflow-lite/blob/f87ee8eab434497e3a1f8329013a4af5415cbd1e/doc/tensorflow-lite-benchmark.md#L58-L155
    "05-linux-qemu-riscv64-tf28-sci-notation-op-profiling.txt": expected(
        stats(50, 2990275.0, 2913402.0, 2727568.0, 3189954.0, 2950340.0, 109798.0),
        warmup=stats(1, curr=3512391.0),
        init_us=17187.0, first_inference_us=3512391.0, warmup_avg_us=3512390.0,
        inference_avg_us=2950340.0, memory_init_mb=4.21094, memory_overall_mb=46.0859,
        model_size_mb=16.9008, num_threads=4, graph="./mobilenet_v1_1.0_224.tflite",
        runs_in_output=1,
    ),
    # https://github.com/tflite-soc/benchmarking-models/blob/9b9f57d8c582702e0de2e3fa05f5b171b9e72354/iccd2020/tmp-log/native/mobilenet-v2-quant_4t.log
    # "Duplicate flags: num_threads" is printed once; the output holds one run.
    "06-linux-x86-tf23-native-op-profiling-dup-flags.txt": expected(
        stats(72, 13976.0, 13815.0, 13737.0, 14475.0, 13860.0, 113.0),
        warmup=stats(36, 15212.0, 13938.0, 13704.0, 15212.0, 13889.7, 259.0),
        init_us=490.0, first_inference_us=15212.0, warmup_avg_us=13889.7,
        inference_avg_us=13860.0, memory_init_mb=5.54688, memory_overall_mb=13.0547,
        model_size_mb=3.57776, num_threads=4,
        graph="/working_dir/tensorflow-models/iccd2020/mobilenet-v2-quant/mobilenet_v2_1.0_224_quant.tflite",
        runs_in_output=1,
    ),
    # https://github.com/tflite-soc/benchmarking-models/blob/9b9f57d8c582702e0de2e3fa05f5b171b9e72354/mobilenet_v1_1.0_224_quant/2019-11-11-zedboard-2c.txt
    # 2019 summary "Warmup: …, Init: …, no stats: …": no first inference printed.
    "07-linux-armv7-zedboard-2019-legacy-nostats-op-profiling.txt": expected(
        stats(50, 390368.0, 390936.0, 389982.0, 417669.0, 394183.0, 4373.0),
        warmup=stats(2, 393500.0, 396574.0, 393500.0, 396574.0, 395037.0, 1537.0),
        init_us=18764.0, warmup_avg_us=395037.0, inference_avg_us=394183.0,
        num_threads=2, graph=ZEDBOARD_GRAPH, runs_in_output=1,
    ),
    # https://github.com/tflite-soc/zedboard-setup/blob/742a0c65c40a2be77ed3f35920c91cf80813e18d/benchmarking.md#L28-L56
    "08-linux-armv7-zedboard-2019-legacy-with-prompt.txt": expected(
        stats(50, 747738.0, 747428.0, 747331.0, 748577.0, 747733.0, 293.0),
        warmup=stats(1, curr=751932.0),
        init_us=21039.0, warmup_avg_us=751932.0, inference_avg_us=747733.0,
        num_threads=1, graph=ZEDBOARD_GRAPH, runs_in_output=1,
    ),
    # https://github.com/TexasInstruments/processor-sdk-doc/blob/a34a7d935ec7cc1765bf09adfc196814f921fbc0/source/linux/Foundational_Components/Machine_Learning/tflite.rst#L89-L106
    # --num_threads=4 is on the command line but not echoed, so num_threads is None.
    "09-linux-arm64-am62x-ti-info-prefix-cpu-sci-notation.txt": expected(
        stats(50, 1249964.0, 1240143.0, 1238588.0, 1252566.0, 1240270.0, 2565.0,
              1238753.0, 1239807.0, 1247415.0),
        warmup=stats(1, curr=1357602.0, p5=1357602.0, median=1357602.0, p95=1357602.0),
        init_us=5579.0, first_inference_us=1357602.0, warmup_avg_us=1357600.0,
        inference_avg_us=1240270.0, memory_init_mb=6.36328, memory_overall_mb=109.832,
        model_size_mb=67.3128, graph=SSD_MOBILENET, runs_in_output=1,
    ),
    # https://github.com/TexasInstruments/processor-sdk-doc/blob/a34a7d935ec7cc1765bf09adfc196814f921fbc0/source/linux/Foundational_Components/Machine_Learning/tflite.rst#L128-L146
    # XNNPACK is applied but this version prints no "Replacing …" line.
    "10-linux-arm64-am62x-ti-info-prefix-xnnpack-partial.txt": expected(
        stats(50, 900416.0, 898333.0, 898007.0, 906121.0, 899641.0, 1549.0,
              898333.0, 899281.0, 904305.0),
        warmup=stats(1, curr=905463.0, p5=905463.0, median=905463.0, p95=905463.0),
        init_us=614333.0, first_inference_us=905463.0, warmup_avg_us=905463.0,
        inference_avg_us=899641.0, memory_init_mb=146.363, memory_overall_mb=150.141,
        model_size_mb=67.3128, graph=SSD_MOBILENET, runs_in_output=1,
    ),
    # https://github.com/tensorflow/tensorflow/blob/00ad26894f23060591ef791e10d77eb1e0c19437/tensorflow/lite/tools/benchmark/README.md
    # No run statistics line, only the op profiler's "Timings (microseconds): count=50 …".
    "20-android-adb-taskset-official-readme-2019-inference-field-op-profiling.txt": expected(
        init_us=38467.0, warmup_avg_us=83235.0, inference_avg_us=79760.9, runs_in_output=1,
    ),
    # https://github.com/tensorflow/tensorflow/blob/1d66b787ae3f721afdf9fc4a2fd99c50b93285b3/tensorflow/lite/tools/benchmark/android/README.md
    "21-android-apk-logcat-grep-single-line-elided-prefix.txt": expected(
        init_us=1007529.0, first_inference_us=4098.0, warmup_avg_us=1686.59,
        inference_avg_us=1687.92, runs_in_output=1,
    ),
    # https://github.com/ArmDeveloperEcosystem/arm-learning-paths/blob/278f5fb5cd84d10edb01af88c43c4b806c67c9ea/content/learning-paths/mobile-graphics-and-gaming/litert-sme/4-benchmark.md
    # Summary keys come from the BENCHMARK RESULTS block (ms -> us); statistics
    # from the count= lines; the op profiler's count=3166 line is not a run.
    "22-android-litert-2025-benchmark-results-block-xnnpack-replacing.txt": expected(
        stats(2112, 463.0, 459.0, 442.0, 979.0, 464.545, 13.0, 460.0, 462.0, 478.0),
        warmup=stats(1055, 1033.0, 473.0, 443.0, 1033.0, 465.319, 18.0, 459.0, 463.0, 478.0),
        init_us=4480.0, first_inference_us=1030.0, warmup_avg_us=470.0,
        inference_avg_us=460.0, memory_init_mb=8.94, memory_overall_mb=11.51,
        peak_memory_mb=None,
        delegates=[{"name": "TfLiteXNNPackDelegate", "nodes_delegated": 1,
                    "nodes_total": 1, "partitions": 1}],
        model_size_mb=3.27774, runs_in_output=1,
    ),
    # https://github.com/synaptics-synap/doc/blob/347bc2cf4b557fc0065d09e500073e5477a93ddb/manual/nnapi.rst#L56-L82
    # The WARNING line is not an error; the warm-up line is "count=1 curr=…".
    "30-android-synap-tf215-nnapi-npu-replacing-whole-graph.txt": expected(
        stats(520, 2531.0, 2793.0, 1171.0, 9925.0, 1885.74, 870.0),
        warmup=stats(1, curr=637079.0),
        init_us=66002.0, first_inference_us=637079.0, warmup_avg_us=637079.0,
        inference_avg_us=1885.74, memory_init_mb=7.40234, memory_overall_mb=7.83203,
        delegates=[{"name": "TfLiteNnapiDelegate", "nodes_delegated": 31,
                    "nodes_total": 31, "partitions": 1}],
        model_size_mb=0.497264, graph=MOBILENET_025, runs_in_output=1,
    ),
    # https://github.com/synaptics-synap/doc/blob/347bc2cf4b557fc0065d09e500073e5477a93ddb/manual/nnapi.rst#L111-L118
    "31-android-synap-op-profiling-space-separated-elided.txt": expected(runs_in_output=1),
    # https://github.com/synaptics-synap/doc/blob/347bc2cf4b557fc0065d09e500073e5477a93ddb/manual/nnapi.rst#L165-L181
    # Two runs: the second (last complete) one wins, so the first run's ERROR
    # line and summary are not reported.
    "32-android-synap-nnapi-cache-two-runs-legacy-replacing.txt": expected(
        init_us=21330.0, first_inference_us=90853.0, warmup_avg_us=1734.13,
        inference_avg_us=1374.59,
        delegates=[{"name": "TfLiteNnapiDelegate", "nodes_delegated": 31,
                    "nodes_total": None, "partitions": 1}],
        runs_in_output=2,
    ),
    # https://github.com/synaptics-synap/doc/blob/347bc2cf4b557fc0065d09e500073e5477a93ddb/manual/nnapi.rst#L256-L285
    # Delegate name with a space; a stray "type 54 str SoftmaxAxis0" line.
    "33-android-synap-tf215-timvx-external-delegate.txt": expected(
        stats(876, 1272.0, 1730.0, 810.0, 6334.0, 1096.48, 476.0),
        warmup=stats(277, 201009.0, 863.0, 811.0, 201009.0, 1760.78, 11997.0),
        init_us=25573.0, first_inference_us=201009.0, warmup_avg_us=1760.78,
        inference_avg_us=1096.48, memory_init_mb=15.4688, memory_overall_mb=43.2852,
        delegates=[{"name": "Vx Delegate", "nodes_delegated": 31, "nodes_total": 31,
                    "partitions": 1}],
        model_size_mb=0.497264, graph=MOBILENET_025, runs_in_output=1,
    ),
    # https://github.com/tensorflow/tensorflow/issues/62753
    # The two "(98:0) : error : …" continuation lines carry no prefix and are
    # not reported separately.
    "34-linux-arm64-coral-gpu-delegate-opencl-build-failure.txt": expected(
        errors=["Failed to build program executable - Build program failure(97:0) : "
                "error : conversion between different vector types not allowed"],
        graph="mobilenet_v1_1.0_224_float.tflite", runs_in_output=1,
    ),
    # https://github.com/tensorflow/tensorflow/issues/56301
    "35-android-apk-logcat-threadtime-tf29-nnapi-excerpt.txt": expected(
        stats(75, 12840.0, 11853.0, 11787.0, 13649.0, 12167.6, 325.0),
        warmup=stats(40, 32942.0, 12594.0, 11340.0, 32942.0, 12581.9, 3331.0),
        init_us=126059.0, first_inference_us=32942.0, warmup_avg_us=12581.9,
        inference_avg_us=12167.6, model_size_mb=0.113392, runs_in_output=1,
    ),
    # https://github.com/TexasInstruments/processor-sdk-doc/blob/0e1ff78517189489b018adf655d93a0b78db7086/source/linux/Foundational_Components/Machine_Learning/tflite.rst#L59-L81
    "36-linux-armv7-ti-tf112-oldest-iterations-format.txt": expected(
        stats(50, 137789.0, 137254.0, 137079.0, 143416.0, 137722.0, 896.0),
        warmup=stats(1, curr=146161.0),
        init_us=4452.0, warmup_avg_us=146161.0, inference_avg_us=137722.0,
        num_threads=1, graph="mobilenet_v1_1.0_224_quant.tflite", runs_in_output=1,
    ),
    # https://github.com/tensorflow/tensorflow/blob/12d3eaa7b385a436e9dd4bc65452639994927a87/tensorflow/lite/g3doc/performance/measurement.md
    "37-android-apk-logcat-grep-average-inference-legacy.txt": expected(
        init_us=4108.0, warmup_avg_us=91471.0, inference_avg_us=80660.1, runs_in_output=1,
    ),
}

# (section, table, rows) of every op-profiling table, counted by eye; None: no table.
TABLES = {
    "03-android-adb-taskset-mi11-tf24-nnapi-op-profiling.txt": [
        ("init", "run_order", 2), ("init", "top_by_computation_time", 2),
        ("init", "summary_by_node_type", 2),
        ("run", "run_order", 11), ("run", "top_by_computation_time", 10),
        ("run", "summary_by_node_type", 3),
    ],
    "05-linux-qemu-riscv64-tf28-sci-notation-op-profiling.txt": [
        ("init", "run_order", 1), ("init", "top_by_computation_time", 1),
        ("init", "summary_by_node_type", 1),
        ("run", "run_order", 31), ("run", "top_by_computation_time", 10),
        ("run", "summary_by_node_type", 5),
    ],
    "06-linux-x86-tf23-native-op-profiling-dup-flags.txt": [
        ("init", "run_order", 1), ("init", "top_by_computation_time", 1),
        ("init", "summary_by_node_type", 1),
        ("run", "run_order", 65), ("run", "top_by_computation_time", 10),
        ("run", "summary_by_node_type", 5),
    ],
    "07-linux-armv7-zedboard-2019-legacy-nostats-op-profiling.txt": [
        (None, "run_order", 31), (None, "top_by_computation_time", 10),
        (None, "summary_by_node_type", 5),
    ],
    "20-android-adb-taskset-official-readme-2019-inference-field-op-profiling.txt": [
        (None, "run_order", 31), (None, "top_by_computation_time", 10),
        (None, "summary_by_node_type", 5),
    ],
    "22-android-litert-2025-benchmark-results-block-xnnpack-replacing.txt": [
        (None, "run_order", 5), (None, "top_by_computation_time", 5),
        (None, "summary_by_node_type", 5),
    ],
    "31-android-synap-op-profiling-space-separated-elided.txt": [("run", "run_order", 3)],
}


def test_every_fixture_has_a_case_and_a_source_line():
    names = sorted(path.name for path in FIXTURES.glob("*.txt"))
    assert names == sorted(CASES)
    for name in names:
        assert read(name).startswith("# source: "), name


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixture(name):
    result = parse(read(name))
    assert list(result) == list(RESULT_KEYS)
    assert without_ops(result) == CASES[name]
    ops = result["ops"]
    if name in TABLES:
        assert table_sizes(ops) == TABLES[name]
        assert all(list(row) == list(OP_ROW_KEYS) for row in ops)
    else:
        assert ops is None


def test_result_types():
    result = parse(read("22-android-litert-2025-benchmark-results-block-xnnpack-replacing.txt"))
    assert type(result["count"]) is int
    assert type(result["warmup"]["count"]) is int
    for key in ("first_us", "avg_us", "init_us", "inference_avg_us", "memory_init_mb"):
        assert type(result[key]) is float, key


# --- op-profiling rows -----------------------------------------------------------


def test_ops_rows_tab_separated_with_start_column():
    # 03: init section's first row, run section's first row and a summary row.
    ops = parse(read("03-android-adb-taskset-mi11-tf24-nnapi-op-profiling.txt"))["ops"]
    assert ops[0] == op("init", "run_order", "ModifyGraphWithDelegate", start=0.0,
                        first=413.346, avg=413.346, percent=56.67, cdf=56.67, mem=1748.0,
                        times_called=1, name="ModifyGraphWithDelegate/0")
    assert ops[6] == op("run", "run_order", "STRIDED_SLICE", start=0.021, first=2.167,
                        avg=2.118, percent=1.335, cdf=1.335, mem=0.0, times_called=1,
                        name="[model/tf.strided_slice/StridedSlice]:0")
    assert ops[12] == op("run", "run_order", "TfLiteNnapiDelegate", start=8.377, first=78.701,
                         avg=79.01, percent=49.781, cdf=55.042, mem=0.0, times_called=1,
                         name="[model/tf.nn.silu_16/mul, model/tf.nn.silu_26/mul, "
                              "model/tf.nn.silu_35/mul]:231")
    assert ops[-3] == op("run", "summary_by_node_type", "TfLiteNnapiDelegate", avg=149.483,
                         percent=94.187, cdf=94.187, mem=0.0, times_called=3, count=3)


def test_ops_rows_litert_without_start_column():
    ops = parse(read("22-android-litert-2025-benchmark-results-block-xnnpack-replacing.txt"))["ops"]
    assert ops[3] == op(None, "run_order", "Fully Connected (NC, PF32) GEMM", first=0.538,
                        avg=0.382, percent=92.948, cdf=97.018, mem=0.0, times_called=1,
                        name="Delegate/Fully Connected (NC, PF32) GEMM:1")
    assert ops[-1] == op(None, "summary_by_node_type", "AllocateTensors", avg=0.0,
                         percent=0.0, cdf=100.0, mem=452.0, times_called=0, count=1)


def test_ops_rows_space_separated():
    ops = parse(read("31-android-synap-op-profiling-space-separated-elided.txt"))["ops"]
    assert ops == [
        op("run", "run_order", "TfLiteNnapiDelegate", first=3.826, avg=4.011, percent=62.037,
           cdf=62.037, mem=0.0, times_called=1, name="[]:64"),
        op("run", "run_order", "RESIZE_NEAREST_NEIGHBOR", first=0.052, avg=0.058,
           percent=0.899, cdf=62.936, mem=0.0, times_called=1, name="[]:38"),
        op("run", "run_order", "TfLiteNnapiDelegate", first=2.244, avg=2.396, percent=37.064,
           cdf=100.0, mem=0.0, times_called=1, name="[]:65"),
    ]


def test_op_profiler_timings_line_is_not_the_run_statistics():
    # The op-profiling part of fixture 05 alone: its "Timings (microseconds):
    # count=50 first=2989660 …" and "Memory (bytes): count=0" lines must not
    # become run statistics.
    text = read("05-linux-qemu-riscv64-tf28-sci-notation-op-profiling.txt")
    profile = text[text.index("Profiling Info for Benchmark Initialization:"):]
    assert "Timings (microseconds): count=50 first=2989660" in profile
    result = parse(profile)
    assert without_ops(result) == expected(runs_in_output=1)
    assert len(result["ops"]) == 49
    # With the whole output the timed line wins over the profiler's line.
    full = parse(text)
    assert (full["count"], full["first_us"], full["avg_us"]) == (50, 2990275.0, 2950340.0)


# --- numbers ----------------------------------------------------------------------


def test_scientific_notation():
    result = parse(
        "count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798\n"
        "Inference timings in us: Init: 17187, First inference: 3512391, "
        "Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06\n"
        "The input model file size (MB): 1.5e-05\n"
    )
    assert result["avg_us"] == 2950340.0
    assert result["warmup_avg_us"] == 3512390.0
    assert result["inference_avg_us"] == 2950340.0
    assert result["model_size_mb"] == 1.5e-05


def test_nan_and_inf_become_none():
    result = parse(
        "count=1 first=-nan curr=nan min=inf max=-inf avg=nan std=0\n"
        "Inference timings in us: Init: 12, First inference: nan, Warmup (avg): -nan, "
        "Inference (avg): inf\n"
        "Memory footprint delta from the start of the tool (MB): init=nan overall=3.5\n"
    )
    assert without_ops(result) == expected(
        stats(1, std=0.0), init_us=12.0, memory_overall_mb=3.5, runs_in_output=1,
    )


def test_empty_string():
    result = parse("")
    assert list(result) == list(RESULT_KEYS)
    assert result["delegates"] == [] and result["errors"] == []
    assert result["ops"] is None
    assert without_ops(result) == expected(runs_in_output=0)


def test_text_without_benchmark_output():
    assert without_ops(parse("$ ls\nfoo bar\n")) == expected(runs_in_output=0)


# --- prefixes ---------------------------------------------------------------------

LOGCAT_PREFIXES = {
    "threadtime": "11-23 10:00:01.234  1234  1250 I tflite  : ",
    "threadtime-year-uid": "2023-11-23 10:00:01.234 +0000 u0_a123  1234  1250 I tflite  : ",
    "time": "11-23 10:00:01.234 I/tflite  ( 1234): ",
    "brief": "I/tflite  ( 1234): ",
    "tag": "I/tflite  : ",
    "thread": "I( 1234: 1250) ",
    "epoch": "1700000000.123  1234  1250 I tflite  : ",
    "elided": "... tflite  : ",
}
PREFIXED_FIXTURES = [
    "04-android-adb-mi11-tf24-nnapi-delegate-fails.txt",
    "05-linux-qemu-riscv64-tf28-sci-notation-op-profiling.txt",
    "22-android-litert-2025-benchmark-results-block-xnnpack-replacing.txt",
    "36-linux-armv7-ti-tf112-oldest-iterations-format.txt",
]


@pytest.mark.parametrize("fixture", PREFIXED_FIXTURES)
@pytest.mark.parametrize("style", sorted(LOGCAT_PREFIXES))
def test_logcat_prefixed_lines_parse_like_the_bare_output(fixture, style):
    text = read(fixture)
    prefix = LOGCAT_PREFIXES[style]
    prefixed = "".join(prefix + line for line in text.splitlines(keepends=True))
    assert parse(prefixed) == parse(text)


def test_logcat_process_format_with_tag_suffix():
    text = read("30-android-synap-tf215-nnapi-npu-replacing-whole-graph.txt")
    prefixed = "\n".join(f"I( 1234) {line}  (tflite)" for line in text.splitlines())
    assert parse(prefixed) == parse(text)


LEVEL_LETTERS = {"INFO": "I", "WARNING": "W", "ERROR": "E", "VERBOSE": "V"}


@pytest.mark.parametrize("fixture", [
    "30-android-synap-tf215-nnapi-npu-replacing-whole-graph.txt",
    "34-linux-arm64-coral-gpu-delegate-opencl-build-failure.txt",
])
def test_logcat_levels_replace_tflite_level_words(fixture):
    # As the Android app logs: the level moves from "ERROR: " to logcat's "E".
    text = read(fixture)
    lines = []
    for line in text.splitlines():
        word, sep, rest = line.partition(": ")
        if sep and word in LEVEL_LETTERS:
            lines.append(f"05-30 15:16:44.857  3380  3380 {LEVEL_LETTERS[word]} tflite  : {rest}")
        else:
            lines.append(f"05-30 15:16:44.857  3380  3380 I tflite  : {line}")
    assert parse("\n".join(lines)) == parse(text)


def test_threadtime_fixture_equals_its_unprefixed_lines():
    text = read("35-android-apk-logcat-threadtime-tf29-nnapi-excerpt.txt")
    bare = "\n".join(line.split(" I tflite  : ", 1)[-1] for line in text.splitlines())
    assert parse(bare) == parse(text)


def test_crlf_line_endings():
    text = read("09-linux-arm64-am62x-ti-info-prefix-cpu-sci-notation.txt")
    assert parse(text.replace("\n", "\r\n")) == parse(text)


def test_error_levels_from_logcat_and_glog():
    # Messages of real outputs (GPU delegate, LiteRT, Hexagon) under each kind
    # of level prefix; warnings are not errors.
    result = parse(
        "11-23 10:00:01.234  1234  1250 E tflite  : Following operations are not supported by GPU delegate:\n"
        "E/tflite  ( 1234): Following operations are not supported by GPU delegate:\n"
        "W/tflite  ( 1234): Failed to get the input model file size.\n"
        "WARNING: Failed to get the input model file size.\n"
        "E0000 00:00:1758455104.504065   62590 compiled_model.cc:12] Run failed\n"
        "ERROR: [litert/tools/benchmark_litert_model.cc:99] Compiled model not initialized\n"
        "Could not create Hexagon delegate: platform may not support delegate\n"
    )
    assert result["errors"] == [
        "Following operations are not supported by GPU delegate:",
        "Run failed",
        "Compiled model not initialized",
        "Could not create Hexagon delegate: platform may not support delegate",
    ]


# --- run selection ------------------------------------------------------------------


def test_two_runs_last_complete_one_wins():
    first = read("05-linux-qemu-riscv64-tf28-sci-notation-op-profiling.txt")
    second = read("06-linux-x86-tf23-native-op-profiling-dup-flags.txt")
    result = parse(first + second)
    assert without_ops(result) == {
        **CASES["06-linux-x86-tf23-native-op-profiling-dup-flags.txt"], "runs_in_output": 2,
    }
    assert table_sizes(result["ops"]) == TABLES["06-linux-x86-tf23-native-op-profiling-dup-flags.txt"]


def test_repeated_identical_output_gives_the_same_result():
    text = read("30-android-synap-tf215-nnapi-npu-replacing-whole-graph.txt")
    result = parse(text + text)
    assert without_ops(result) == {
        **CASES["30-android-synap-tf215-nnapi-npu-replacing-whole-graph.txt"],
        "runs_in_output": 2,
    }


def test_failed_run_after_a_complete_one_is_not_chosen():
    complete = read("01-android-adb-mi11-tf24-cpu-fp32-peak-memory.txt")
    failed = read("04-android-adb-mi11-tf24-nnapi-delegate-fails.txt")
    for text in (complete + failed, failed + complete):
        result = parse(text)
        assert without_ops(result) == {
            **CASES["01-android-adb-mi11-tf24-cpu-fp32-peak-memory.txt"], "runs_in_output": 2,
        }


def test_run_stopped_after_warmup_has_no_timed_statistics():
    # Fixture 30 cut right after the warm-up statistics line, then an error.
    lines = read("30-android-synap-tf215-nnapi-npu-replacing-whole-graph.txt").splitlines()
    cut = lines[: lines.index("INFO: count=1 curr=637079") + 1]
    result = parse("\n".join(cut + ["ERROR: Node number 31 (TfLiteNnapiDelegate) failed to invoke."]))
    assert result["count"] is None and result["avg_us"] is None
    assert result["warmup"] == stats(1, curr=637079.0)
    assert result["errors"] == ["Node number 31 (TfLiteNnapiDelegate) failed to invoke."]


# --- LiteRT block without statistics lines ------------------------------------------


def test_litert_block_without_statistics_lines():
    # Fixture 22 with its two count= lines removed: count/avg/min/max/std come
    # from the block (ms -> us); nothing else is invented.
    text = read("22-android-litert-2025-benchmark-results-block-xnnpack-replacing.txt")
    kept = "\n".join(line for line in text.splitlines() if not line.startswith("INFO: count="))
    result = parse(kept)
    assert without_ops(result) == expected(
        stats(2112, avg=460.0, min=440.0, max=980.0, std=10.0),
        init_us=4480.0, first_inference_us=1030.0, warmup_avg_us=470.0,
        inference_avg_us=460.0, memory_init_mb=8.94, memory_overall_mb=11.51,
        delegates=[{"name": "TfLiteXNNPackDelegate", "nodes_delegated": 1,
                    "nodes_total": 1, "partitions": 1}],
        model_size_mb=3.27774, runs_in_output=1,
    )


def test_peak_memory_via_periodic_monitoring():
    # Lines in the form TF 2.x benchmark_model.cc prints with
    # --report_peak_memory_footprint=true (no fixture has them).
    result = parse(
        "INFO: Memory footprint delta from the start of the tool (MB): init=2.43359 overall=8.67578\n"
        "INFO: Overall peak memory footprint (MB) via periodic monitoring: 13.1797\n"
        "INFO: Memory status at the end of exeution:\n"
        "INFO: - VmRSS              : 13 MB\n"
    )
    assert (result["memory_init_mb"], result["memory_overall_mb"], result["peak_memory_mb"]) == (
        2.43359, 8.67578, 13.1797)


def test_replacing_line_suffixes():
    # The three forms of the delegate line: "for the whole graph" (fixtures
    # 30/33), "for subgraph 0" (fixture 22) and the older form without
    # "out of M" (fixture 32, tensorflow/tensorflow#56747).
    result = parse(
        "VERBOSE: Replacing 58 out of 58 node(s) with delegate (TfLiteGpuDelegateV2) node, "
        "yielding 1 partitions for the whole graph.\n"
        "INFO: Replacing 539 out of 548 node(s) with delegate (TfLiteXNNPackDelegate) node, "
        "yielding 19 partitions for subgraph 0.\n"
        "VERBOSE: Replacing 136 node(s) with delegate (TfLiteHexagonDelegate) node, "
        "yielding 5 partitions.\n"
    )
    assert result["delegates"] == [
        {"name": "TfLiteGpuDelegateV2", "nodes_delegated": 58, "nodes_total": 58, "partitions": 1},
        {"name": "TfLiteXNNPackDelegate", "nodes_delegated": 539, "nodes_total": 548,
         "partitions": 19},
        {"name": "TfLiteHexagonDelegate", "nodes_delegated": 136, "nodes_total": None,
         "partitions": 5},
    ]


def test_oldest_summary_with_leading_average():
    # The 2018 contrib/lite tool printed the average before the labelled pairs.
    result = parse("Average inference timings in us: 137722 , Warmup: 146161, \n")
    assert (result["inference_avg_us"], result["warmup_avg_us"], result["init_us"]) == (
        137722.0, 146161.0, None)
