"""What the harness needs from a model it converts: a Keras model (built, trained or loaded), a
representative dataset, an evaluation set, and fine-tuning data for pruning and QAT.

`key_material()` is cheap (no TensorFlow): it is hashed into the cache key, so a second sweep can
tell that nothing needs building without importing TensorFlow. Everything else runs in the build
worker, which has TensorFlow loaded."""

from __future__ import annotations

import hashlib
import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np


@dataclass
class EvalSet:
    """Examples to run on the device. With labels, accuracy; without, fidelity against fp32."""

    x: np.ndarray  # float32, (N, *input shape without batch), preprocessed as the model expects
    labels: np.ndarray | None
    description: str

    def save(self, path: Path) -> None:
        arrays = {"x": self.x.astype(np.float32)}
        if self.labels is not None:  # class indices, or float targets (regression)
            arrays["labels"] = self.labels.astype(np.float32 if self.labels.dtype.kind == "f" else np.int64)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)


@dataclass
class FineTune:
    """Data and settings for the fine-tuning that pruning and QAT need."""

    x: np.ndarray
    y: np.ndarray  # integer labels, or the fp32 model's outputs (distillation) when there are none
    loss: str
    epochs: int
    batch_size: int
    learning_rate: float = 1e-3


class Source(ABC):
    """A model the harness turns into variants."""

    name: str
    # (input shape without the batch dimension, output units) as the source's definition gives them,
    # known without TensorFlow before the model is built (the zoo's, models/__init__.py zoo_io); None
    # where only the built model knows
    known_io: tuple[tuple[int, ...], int] | None = None

    @abstractmethod
    def key_material(self) -> Any:
        """JSON-able (or bytes) description of everything the built model depends on."""

    @abstractmethod
    def keras_model(self, workdir: Path, log: Callable[[str], None]):
        """The Keras model, built/trained/loaded (caching what it made in `workdir`); None when
        the source is not a Keras model (a SavedModel without Keras metadata)."""

    def converter(self, tf, model):
        """The TFLiteConverter for the source model itself."""
        return tf.lite.TFLiteConverter.from_keras_model(model)

    def input_shape(self, model) -> tuple[int, ...]:
        """Input shape without the batch dimension."""
        return tuple(int(d) for d in model.inputs[0].shape[1:])

    @abstractmethod
    def representative(self, model) -> np.ndarray:
        """Float inputs for calibration, (N, *input shape)."""

    @abstractmethod
    def eval_set(self, model) -> EvalSet: ...

    @abstractmethod
    def fine_tune(self, model) -> FineTune: ...


class ZooSource(Source):
    """A model the zoo makes itself (builds, trains), saved once under its cache key so that every
    variant, in every later sweep, derives from the same weights."""

    seed: int = 0

    @abstractmethod
    def settings(self) -> dict:
        """Everything the model depends on besides this module's code."""

    @abstractmethod
    def make(self, keras, workdir: Path, log: Callable[[str], None]):
        """Build (and train) the Keras model; runs seeded, with deterministic ops."""

    def key_material(self):
        module = Path(inspect.getfile(type(self))).read_bytes()
        return {"module_sha256": hashlib.sha256(module).hexdigest(), "settings": self.settings()}

    def keras_model(self, workdir: Path, log: Callable[[str], None]):
        from harness.tfenv import deterministic, import_tf

        path = workdir / "model.keras"
        if path.exists():
            log(f"{self.name}: source model from cache ({workdir.name[:12]})")
            return import_tf()[1].models.load_model(path)
        _, keras = deterministic(self.seed)
        model = self.make(keras, workdir, log)
        workdir.mkdir(parents=True, exist_ok=True)
        partial = workdir / ".partial.keras"  # an interrupted save must not look like a cached model
        model.save(partial)
        partial.replace(path)
        return model


def distillation(model, x: np.ndarray, epochs: int, batch_size: int) -> FineTune:
    """Fine-tuning without labels: the fp32 model's own outputs are the targets."""
    y = model.predict(x, batch_size=batch_size, verbose=0)
    return FineTune(x=x, y=y, loss="mse", epochs=epochs, batch_size=batch_size, learning_rate=1e-4)


def synthetic_inputs(shape: tuple[int, ...], count: int, seed: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """Seeded smooth random inputs: low-frequency noise, upsampled, in [low, high]."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, *shape), np.float32)
    for i in range(count):
        coarse = rng.random(tuple(max(1, s // 8) if j < 2 else s for j, s in enumerate(shape)))
        reps = tuple(-(-s // c) for s, c in zip(shape, coarse.shape))
        fine = np.kron(coarse, np.ones(reps))[tuple(slice(0, s) for s in shape)]
        noise = rng.normal(0, 0.05, shape)
        out[i] = np.clip(fine + noise, 0, 1) * (high - low) + low
    return out
