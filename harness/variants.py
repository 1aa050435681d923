"""The optimization variants (the seeds' techniques), as data. No TensorFlow here: the recipes are
read by the converter (harness.convert), the fine-tuning (harness.optimize) and the cache keys."""

from __future__ import annotations

from dataclasses import asdict, dataclass

GIVEN = "given"  # a .tflite benchmarked as it is


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    quantize: bool = False  # converter.optimizations = [DEFAULT]
    float16: bool = False  # target_spec.supported_types = [float16]
    ops: str = "builtins"  # builtins | int8 | int16x8 (target_spec.supported_ops)
    io_type: str = "float32"  # inference input/output type
    representative: bool = False  # needs a representative dataset
    train: str | None = None  # None | prune | qat: fine-tuning with tfmot before conversion
    full_integer: bool = False  # every op integer: the variants an Edge TPU can take

    def key(self) -> dict:
        """What the cache key of an artifact depends on (the description is not part of it)."""
        fields = asdict(self)
        fields.pop("description")
        return fields


VARIANTS: dict[str, Recipe] = {r.name: r for r in (
    Recipe("fp32", "plain conversion"),
    Recipe("dynamic", "dynamic range: int8 weights, float activations", quantize=True),
    Recipe("float16", "float16 weights", quantize=True, float16=True),
    Recipe("int8", "full integer, int8 input and output", quantize=True, ops="int8", io_type="int8",
           representative=True, full_integer=True),
    Recipe("int8_float_io", "full integer kernels, float input and output", quantize=True, ops="int8",
           representative=True),
    Recipe("int16x8", "16-bit activations, 8-bit weights", quantize=True, ops="int16x8", representative=True),
    Recipe("pruned", "magnitude pruning, polynomial decay 50 -> 80 %, stripped, fp32", train="prune"),
    Recipe("pruned_dynamic", "pruned, then dynamic range", quantize=True, train="prune"),
    Recipe("qat_int8", "quantization-aware fine-tuning, then full integer int8", quantize=True, ops="int8",
           io_type="int8", representative=True, train="qat", full_integer=True),
)}

ALL = tuple(VARIANTS)
