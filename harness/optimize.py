"""Fine-tuning with the TensorFlow Model Optimization Toolkit: magnitude pruning and
quantization-aware training. Each works on a clone (tfmot mutates the layers it wraps), is
seeded, and reports what it really reached."""

from __future__ import annotations

import math

from models.base import FineTune

PRUNE_INITIAL, PRUNE_FINAL = 0.50, 0.80
SEED = 0


def _clone(keras, model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _prunable(keras, layer) -> bool:
    # Convolutions and dense layers, as in tfmot's guides; depthwise kernels are left dense.
    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and not isinstance(
        layer, keras.layers.DepthwiseConv2D)


def _loss(keras, name: str):
    """A loss by name; a classifier that outputs logits takes the cross-entropy from logits."""
    if name == "sparse_categorical_crossentropy_from_logits":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return name


RAMP_FRACTION = 0.7  # sparsity reaches its final value here; the rest of the fine-tune recovers


def pruning_schedule(steps: int) -> dict:
    """PolynomialDecay 50 -> 80 % over the first 70 % of the fine-tune, the rest training at 80 %.
    Masks change only every `frequency` steps, so end_step is put on a multiple of it that
    training reaches (else the sparsity silently stays below the target)."""
    if steps < 4:
        raise ValueError(f"pruning needs at least 4 training steps, the fine-tune has {steps}")
    ramp = max(2, int(steps * RAMP_FRACTION))
    frequency = max(1, min(100, ramp // 8))
    end_step = ramp // frequency * frequency
    return {"initial_sparsity": PRUNE_INITIAL, "final_sparsity": PRUNE_FINAL, "begin_step": 0,
            "end_step": end_step, "frequency": frequency}


def kernel_sparsity(keras, model) -> float:
    """Fraction of exact zeros in the kernels of the layers pruning applies to."""
    zeros = total = 0
    for layer in model.layers:
        if _prunable(keras, layer):
            kernel = layer.get_weights()[0]
            zeros += int((kernel == 0).sum())
            total += kernel.size
    return zeros / total if total else 0.0


def prune(tf, keras, tfmot, model, data: FineTune):
    """(stripped pruned model, info with the measured sparsity and the schedule)."""
    keras.utils.set_random_seed(SEED)
    steps = math.ceil(len(data.x) / data.batch_size) * data.epochs
    schedule = pruning_schedule(steps)
    sparsity = tfmot.sparsity.keras

    def wrap(layer):
        if _prunable(keras, layer):
            return sparsity.prune_low_magnitude(layer, pruning_schedule=sparsity.PolynomialDecay(**schedule))
        return layer

    # Wrapping reuses (and mutates) the layer instances, trained weights included: wrap a clone's.
    wrapped = keras.models.clone_model(_clone(keras, model), clone_function=wrap)
    wrapped.compile(optimizer=keras.optimizers.Adam(data.learning_rate), loss=_loss(keras, data.loss))
    wrapped.fit(data.x, data.y, epochs=data.epochs, batch_size=data.batch_size, shuffle=True, verbose=0,
                callbacks=[sparsity.UpdatePruningStep()])
    stripped = sparsity.strip_pruning(wrapped)
    return stripped, {"sparsity": kernel_sparsity(keras, stripped), "schedule": schedule, "steps": steps}


def quantization_aware(tf, keras, tfmot, model, data: FineTune):
    """The QAT model after fine-tuning (fake-quantized; the converter makes it int8)."""
    keras.utils.set_random_seed(SEED)
    qat = tfmot.quantization.keras.quantize_model(_clone(keras, model))
    qat.compile(optimizer=keras.optimizers.Adam(data.learning_rate), loss=_loss(keras, data.loss))
    qat.fit(data.x, data.y, epochs=data.epochs, batch_size=data.batch_size, shuffle=True, verbose=0)
    return qat
