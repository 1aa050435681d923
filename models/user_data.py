"""A model with the user's own data (`data:` in the plan): the model comes from its source (zoo or
file) unchanged; calibration, evaluation and fine-tuning come from the splits the plan names,
each falling back to the source's own when the plan leaves it out.

- Calibration (full-integer, int16x8, Edge TPU): the `calibration` split's inputs.
- Evaluation: the `eval` split, labels and all: accuracy against them (or MAE / RMSE for float
  targets), besides the fidelity to fp32 every model gets.
- Pruning and QAT fine-tune on `fine_tune` with its labels (a classifier's loss is chosen by
  whether the model outputs probabilities or logits); only a split without labels is distilled
  from the fp32 model's outputs.

Composition, not inheritance: any `Source` can be given data. The cache key holds the source's
key and the content hash of every split with the preprocessing, so new data means new artifacts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from models.base import EvalSet, FineTune, Source, distillation

# Adam at its default rate, as tfmot's pruning and QAT guides fine-tune, for at least 2 epochs and
# at least MIN_STEPS steps: the 2 epochs of those guides are thousands of steps on MNIST, but only
# 90 on 1,437 digits, too few for pruning's 50 -> 80 % ramp to recover (75 % top-1 against 97 %).
FINE_TUNE = {"min_epochs": 2, "min_steps": 400, "batch_size": 32, "learning_rate": 1e-3}


class WithData(Source):
    def __init__(self, inner: Source, spec, plan_source: str, where: str):
        self.inner, self.spec, self.plan_source, self.where = inner, spec, plan_source, where
        self.name, self.known_io = inner.name, inner.known_io
        self.log: Callable[[str], None] = lambda message: None

    def check_data(self) -> None:
        """Every split the plan gives, checked before the model is built (ConfigError if one cannot be
        loaded): loaded for the model where its input and outputs are known without TensorFlow (the
        zoo's), else its arrays checked alone (what needs the model waits for it: see `split`)."""
        from data import check_split_alone, load_for_model

        for name in self.spec.splits():
            if self.known_io is not None:
                load_for_model(self.spec, name, *self.known_io, self.plan_source, f"{self.where}.data")
            else:
                check_split_alone(self.spec, name, self.plan_source, f"{self.where}.data")

    def key_material(self):
        from data import spec_key

        return {"model": self.inner.key_material(), "data": spec_key(self.spec), "fine_tune": FINE_TUNE}

    def keras_model(self, workdir: Path, log: Callable[[str], None]):
        self.log = log  # loading a large split says how far it is
        return self.inner.keras_model(workdir, log)

    def converter(self, tf, model):
        return self.inner.converter(tf, model)

    def input_shape(self, model) -> tuple[int, ...]:
        return self.inner.input_shape(model)

    def split(self, model, name: str):
        """The named split loaded and preprocessed for this model's input (ConfigError if it cannot be)."""
        from data import load_for_model

        shown = [0]

        def progress(done: int, total: int) -> None:
            if total >= 1000 and (done * 10 // total > shown[0] or done == total):
                shown[0] = done * 10 // total
                self.log(f"{self.name}: {name} data: {done:,} of {total:,} images decoded")

        units = int(model.outputs[0].shape[-1]) if model is not None else None
        loaded = load_for_model(self.spec, name, self.input_shape(model), units, self.plan_source,
                                f"{self.where}.data", progress)
        self.log(f"{self.name}: {name} data: {loaded.description}")
        return loaded

    def representative(self, model) -> np.ndarray:
        if self.spec.calibration is None:
            return self.inner.representative(model)
        return self.split(model, "calibration").x

    def eval_set(self, model) -> EvalSet:
        if self.spec.eval is None:
            return self.inner.eval_set(model)
        split = self.split(model, "eval")
        return EvalSet(split.x, split.y, split.description)

    def fine_tune(self, model) -> FineTune:
        if self.spec.fine_tune is None:
            return self.inner.fine_tune(model)
        if model is None:
            raise ValueError(f"{self.inner.name} is not a Keras model: pruning and QAT need one")
        split = self.split(model, "fine_tune")
        batch = FINE_TUNE["batch_size"]
        epochs = max(FINE_TUNE["min_epochs"], math.ceil(FINE_TUNE["min_steps"] / math.ceil(len(split.x) / batch)))
        if split.y is None:
            return distillation(model, split.x, epochs, batch)
        if split.y.dtype.kind == "f":
            loss = "mse"
        else:
            loss = "sparse_categorical_crossentropy" if outputs_probabilities(model, split.x[:batch]) \
                else "sparse_categorical_crossentropy_from_logits"
        return FineTune(split.x, split.y, loss, epochs, batch, FINE_TUNE["learning_rate"])


def outputs_probabilities(model, x: np.ndarray) -> bool:
    """Whether the classifier ends in a softmax (rows of non-negative values summing to 1), so
    its loss takes probabilities; otherwise it outputs logits."""
    y = np.asarray(model.predict(x, verbose=0), dtype=np.float64)
    return bool(np.all(y >= 0) and np.allclose(y.sum(axis=-1), 1.0, atol=1e-3))


def spec_to_json(spec) -> dict:
    """The DataSpec as JSON for the build worker's request (paths as strings)."""
    import dataclasses

    return json_safe(dataclasses.asdict(spec))


def json_safe(value):
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def spec_from_json(raw: dict):
    """The DataSpec back from spec_to_json's output."""
    import dataclasses
    import typing

    from data import DataSource, DataSpec, Preprocess

    def rebuild(cls, fields: dict):
        hints = typing.get_type_hints(cls)
        out = {}
        for f in dataclasses.fields(cls):
            v = fields.get(f.name)
            hint = str(hints[f.name])
            if v is not None and "Path" in hint:
                v = Path(v)
            elif isinstance(v, list):
                v = tuple(v)
            out[f.name] = v
        return cls(**out)

    splits = {name: rebuild(DataSource, raw[name]) if raw.get(name) else None
              for name in ("calibration", "eval", "fine_tune")}
    rest = {k: v for k, v in raw.items() if k not in splits and k != "preprocess"}
    return DataSpec(**splits, preprocess=rebuild(Preprocess, raw.get("preprocess") or {}), **rest)
