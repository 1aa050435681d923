"""Bring your own model: a .keras file or a SavedModel directory, converted into every variant.

The cache key is the file's own bytes. There are no labels, so accuracy is fidelity against the
fp32 variant over seeded synthetic inputs in [0, 1]; pruning and QAT fine-tune by distillation
and need a Keras model (a SavedModel that Keras cannot load gets those variants failed, with why)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

from models.base import EvalSet, FineTune, Source, distillation, synthetic_inputs

SETTINGS = {"seed": 0, "calibration_examples": 32, "eval_examples": 32, "fine_tune_examples": 64,
            "fine_tune_epochs": 2, "batch_size": 8}


def tree_sha256(path: Path) -> str:
    """sha256 of a file, or of every file under a directory (relative names and bytes)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


class FileSource(Source):

    def __init__(self, name: str, path: Path, kind: str):
        self.name, self.path, self.kind = name, Path(path), kind
        self._signature_shape: tuple[int, ...] | None = None

    def key_material(self):
        return {"kind": self.kind, "sha256": tree_sha256(self.path), "settings": SETTINGS}

    def keras_model(self, workdir: Path, log: Callable[[str], None]):
        from harness.tfenv import import_tf

        tf, keras = import_tf()
        if self.kind == "keras":
            return keras.models.load_model(self.path)
        try:
            model = keras.models.load_model(self.path)
        except (ValueError, OSError, TypeError) as exc:
            model, why = None, f"{type(exc).__name__}: {exc}"
        else:  # Keras loads a SavedModel it did not write as a bare object, not a Model
            why = f"it loads as {type(model).__name__}, not a Keras model"
        if isinstance(model, keras.Model):
            return model
        log(f"{self.name}: not a Keras SavedModel ({why.splitlines()[0]}); converting from its signature")
        spec = tf.saved_model.load(str(self.path)).signatures["serving_default"].structured_input_signature[1]
        self._signature_shape = tuple(int(d) for d in next(iter(spec.values())).shape[1:])
        return None

    def converter(self, tf, model):
        if model is None or self.kind == "saved_model":
            return tf.lite.TFLiteConverter.from_saved_model(str(self.path))
        return tf.lite.TFLiteConverter.from_keras_model(model)

    def input_shape(self, model) -> tuple[int, ...]:
        return self._signature_shape if model is None else super().input_shape(model)

    def representative(self, model) -> np.ndarray:
        return synthetic_inputs(self.input_shape(model), SETTINGS["calibration_examples"], seed=1)

    def eval_set(self, model) -> EvalSet:
        x = synthetic_inputs(self.input_shape(model), SETTINGS["eval_examples"], seed=2)
        return EvalSet(x, None, f"{len(x)} seeded synthetic inputs in [0, 1]")

    def fine_tune(self, model) -> FineTune:
        if model is None:
            raise ValueError(f"{self.path} is not a Keras model: pruning and QAT need one")
        x = synthetic_inputs(self.input_shape(model), SETTINGS["fine_tune_examples"], seed=4)
        return distillation(model, x, SETTINGS["fine_tune_epochs"], SETTINGS["batch_size"])
