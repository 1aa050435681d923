"""Real conversions with TensorFlow and tfmot: the seeds' small CNN into every variant, with the
seeds' size and accuracy claims; MobileNetV2's size ratios; the cache; stored failures."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write
from harness.artifacts import Cache
from harness.build import build_models
from harness.config import load_inventory, load_plan
from harness.variants import ALL

pytestmark = pytest.mark.slow


def interpreter(path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def host_accuracy(build, variant) -> float:
    from devices import runner

    with np.load(build.eval_path) as data:
        outputs = runner.example_outputs(np, interpreter(build.artifacts[variant].path), data["x"])
    return float(np.mean(outputs.argmax(axis=1) == build.labels))


def tensor_types(path) -> set[str]:
    return {d["dtype"].__name__ for d in interpreter(path).get_tensor_details()}


def test_digits_cnn_every_variant_with_the_seeds_ratios(digits_build):
    build, summary, messages = digits_build
    assert summary.converted == 9 and summary.failed == 0 and summary.worker_runs == 1
    assert any("training 30 epochs" in m for m in messages)
    a = build.artifacts
    assert set(ALL) <= set(a) and all(x.status == "ok" for x in a.values())
    fp32 = a["fp32"]
    # seeds: 14,303 B gzipped -> 7,483 B dynamic (1.9x) -> 3,996 B pruned + quantized (72 % smaller)
    assert fp32.gzip_bytes / a["dynamic"].gzip_bytes >= 1.9
    assert a["pruned_dynamic"].gzip_bytes <= 0.30 * fp32.gzip_bytes
    # raw ratios stay well under 4x on a model this small (flatbuffer overhead, small tensors kept float)
    assert 2.5 < fp32.bytes / a["dynamic"].bytes < 4 and 1.5 < fp32.bytes / a["float16"].bytes < 2
    for variant in ("pruned", "pruned_dynamic"):
        assert 0.79 <= a[variant].sparsity <= 0.81, (variant, a[variant].sparsity)
    assert a["pruned"].bytes == fp32.bytes and a["pruned"].gzip_bytes < 0.4 * fp32.gzip_bytes
    accuracy = {v: host_accuracy(build, v) for v in ALL}
    assert accuracy["fp32"] > 0.95
    for variant in ("int8", "dynamic", "int8_float_io", "int16x8"):
        assert accuracy[variant] >= accuracy["fp32"] - 0.01, (variant, accuracy)
    # QAT fine-tunes briefly from the float weights: within 2 points (seeds: Mobilenet-v1 70.9 -> 70.0 %);
    # one of the 360 test digits is 0.28 points, and the fine-tune's outcome differs between CPUs
    assert accuracy["qat_int8"] >= accuracy["fp32"] - 0.02, accuracy
    assert accuracy["pruned_dynamic"] >= accuracy["fp32"] - 0.02  # seeds: 98.52 -> 98.40 %


def test_variants_have_the_tensor_types_of_their_recipe(digits_build):
    a = digits_build[0].artifacts
    io = {v: (interpreter(a[v].path).get_input_details()[0]["dtype"].__name__,
              interpreter(a[v].path).get_output_details()[0]["dtype"].__name__) for v in ALL}
    assert io["int8"] == io["qat_int8"] == ("int8", "int8")
    assert io["fp32"] == io["dynamic"] == io["float16"] == io["int8_float_io"] == ("float32", "float32")
    assert "float16" in tensor_types(a["float16"].path)
    assert "int8" in tensor_types(a["dynamic"].path) and "int8" in tensor_types(a["int8_float_io"].path)
    assert "int16" in tensor_types(a["int16x8"].path)
    assert tensor_types(a["fp32"].path) <= {"float32", "int32"}
    assert a["int8"].full_integer and a["qat_int8"].full_integer and not a["int8_float_io"].full_integer


def test_second_build_is_all_cache_hits(digits_build, session_cache, tmp_path):
    plan = load_plan(write(tmp_path / "p.yaml", "models:\n  - model: digits_cnn\n"), load_inventory(None))
    messages: list[str] = []
    builds, summary = build_models(plan, Cache(session_cache), messages.append)
    assert (summary.cached, summary.converted, summary.worker_runs) == (9, 0, 0)
    assert messages == ["digits_cnn: all 9 variants from cache, nothing to convert or train"]
    first = digits_build[0].artifacts
    assert all(builds["digits_cnn"].artifacts[v].sha256 == first[v].sha256 for v in ALL)


def test_training_and_conversion_are_deterministic(digits_build, tmp_path):
    plan = load_plan(write(tmp_path / "p.yaml", "models:\n  - model: digits_cnn\n    variants: [fp32]\n"),
                     load_inventory(None))
    builds, summary = build_models(plan, Cache(tmp_path / "fresh-cache"), lambda m: None)
    assert summary.worker_runs == 1 and summary.converted == 1
    assert builds["digits_cnn"].artifacts["fp32"].sha256 == digits_build[0].artifacts["fp32"].sha256


def test_mobilenet_v2_reproduces_the_seeds_size_claims(tmp_path):
    plan = load_plan(write(tmp_path / "p.yaml", "models:\n  - model: mobilenet_v2\n    variants: [fp32, dynamic, float16]\n"),
                     load_inventory(None))
    builds, summary = build_models(plan, Cache(tmp_path / "cache"), lambda m: None)
    a = builds["mobilenet_v2"].artifacts
    assert summary.failed == 0
    assert a["fp32"].bytes / a["dynamic"].bytes >= 3.5  # seeds: 4x smaller (16.9 -> 4.3 MB)
    assert a["fp32"].bytes / a["float16"].bytes >= 1.9  # seeds: 2x smaller
    ref = builds["mobilenet_v2"].reference
    assert ref.shape == (32, 1000) and float(np.ptp(ref, axis=1).min()) > 0  # logits that depend on the input


SAVED_MODEL = """
from harness.tfenv import import_tf
tf, _ = import_tf()
class Determinant(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def __call__(self, x):
        return tf.linalg.det(tf.reshape(x, (1, 2, 2))) + 1.0
tf.saved_model.save(Determinant(), {path!r})
"""


def test_conversion_failures_are_stored_with_the_converters_message(tmp_path):
    import subprocess
    import sys

    model_dir = tmp_path / "determinant"
    subprocess.run([sys.executable, "-c", SAVED_MODEL.format(path=str(model_dir))], check=True, capture_output=True)
    plan = load_plan(write(tmp_path / "p.yaml", "models:\n  - path: determinant\n    variants: [fp32, dynamic, pruned]\n"),
                     load_inventory(None))
    builds, summary = build_models(plan, Cache(tmp_path / "cache"), lambda m: None)
    a = builds["determinant"].artifacts
    assert summary.failed == 3 and all(x.status == "failed" for x in a.values())
    assert "ConverterError" in a["fp32"].reason and "MatrixDeterminant" in a["fp32"].reason
    assert "not a Keras model" in a["pruned"].reason
    assert builds["determinant"].reference is None and "fp32 failed" in builds["determinant"].notes[0]
    again, summary = build_models(plan, Cache(tmp_path / "cache"), lambda m: None)  # failures are cached too
    assert summary.worker_runs == 0 and again["determinant"].artifacts["fp32"].reason == a["fp32"].reason


def test_a_conversion_past_its_timeout_fails_every_variant_it_did_not_finish(tmp_path):
    plan = load_plan(write(tmp_path / "p.yaml", "models:\n  - model: digits_cnn\n    variants: [fp32, int8]\n"
                                               "timeouts: {convert_timeout_s: 1}\n"), load_inventory(None))
    builds, summary = build_models(plan, Cache(tmp_path / "cache"), lambda m: None)
    a = builds["digits_cnn"].artifacts
    assert summary.failed == 2
    assert all("ran past convert_timeout_s=1" in a[v].reason for v in ("fp32", "int8"))
    assert not list((tmp_path / "cache").glob("artifacts/*.json"))  # a timeout is not cached as a result


def test_a_worker_that_dies_mid_conversion_costs_one_variant(digits_build, session_cache, tmp_path):
    """SIGKILL the real build worker while it converts `dynamic`: that variant is failed with the
    cause, the worker is started again for the rest, and the crash is not cached."""
    import os
    import shutil
    import signal

    cache = tmp_path / "cache"
    shutil.copytree(session_cache / "sources", cache / "sources")  # the trained source: no retraining
    plan = load_plan(write(tmp_path / "p.yaml", "models:\n  - model: digits_cnn\n    variants: [fp32, dynamic, float16]\n"),
                     load_inventory(None))
    messages: list[str] = []

    def log(message: str) -> None:
        messages.append(message)
        if message == "digits_cnn/dynamic: converting":
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
                except OSError:
                    continue
                if "harness.worker" in cmdline and str(cache) in cmdline:
                    os.kill(int(pid), signal.SIGKILL)

    builds, summary = build_models(plan, Cache(cache), log)
    a = builds["digits_cnn"].artifacts
    assert a["fp32"].status == "ok" and a["float16"].status == "ok"
    assert a["dynamic"].status == "failed" and "was killed by SIGKILL while converting dynamic" in a["dynamic"].reason
    assert summary.worker_runs == 1 and sum("retrying the remaining 1 variants" in m for m in messages) == 1
    again, _ = build_models(plan, Cache(cache), lambda m: None)
    assert again["digits_cnn"].artifacts["dynamic"].status == "ok"  # a crash is retried next time, not cached
