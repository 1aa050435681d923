"""TFLiteConverter settings for each recipe (harness.variants). TensorFlow is passed in, never
imported at module level: only the build worker loads it."""

from __future__ import annotations

import numpy as np

from harness.variants import Recipe


def configure(tf, converter, recipe: Recipe, representative: np.ndarray | None):
    """Apply a recipe's settings to a TFLiteConverter."""
    if recipe.quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if recipe.float16:
        converter.target_spec.supported_types = [tf.float16]
    if recipe.representative:
        if representative is None or not len(representative):
            raise ValueError(f"{recipe.name} needs a representative dataset")

        def dataset():
            for example in representative:
                yield [example[None].astype(np.float32)]

        converter.representative_dataset = dataset
    if recipe.ops == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif recipe.ops == "int16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if recipe.io_type == "int8":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter


def convert(tf, converter, recipe: Recipe, representative: np.ndarray | None) -> bytes:
    return configure(tf, converter, recipe, representative).convert()
