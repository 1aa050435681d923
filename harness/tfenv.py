"""TensorFlow, imported only where it is needed, with tfmot's Keras 2 selected before the import."""

from __future__ import annotations

import os


def import_tf():
    """(tensorflow, tf_keras). Sets TF_USE_LEGACY_KERAS=1 first: tfmot needs Keras 2."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf_keras as keras

    return tf, keras


def import_tfmot():
    import_tf()
    import tensorflow_model_optimization as tfmot

    return tfmot


def deterministic(seed: int):
    """Seed Python, NumPy and TensorFlow and make TF's kernels deterministic; returns (tf, keras)."""
    tf, keras = import_tf()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    return tf, keras
