"""Real architectures from Keras applications: seeded (weights=None, the default, made offline) or
trained on ImageNet (`weights: imagenet` in the plan: Keras downloads the weights file once into
~/.keras/models; a machine that cannot fetch it gets the plan refused, naming the file to copy).

Seeded weights are not trained, so there are no labels to score: the accuracy column is
fidelity against the fp32 variant (top-1 agreement and SQNR in dB) over a fixed set of inputs:
crops of the two sample images scikit-learn ships, plus seeded synthetic images. Pruning and QAT
fine-tune by distillation (the fp32 model's outputs are the targets).

Untrained, such a network collapses: with BatchNorm's initial statistics its logits differ by
~1e-11 across inputs and classes, every softmax output is exactly 1/1000, and fidelity would
measure nothing. So the models output logits (classifier_activation=None) and their BatchNorm
statistics are estimated once on sample-image crops (apart from the evaluation crops), which
makes every layer's activations unit-scale and the logits depend on the input."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from models.base import EvalSet, FineTune, ZooSource, distillation, synthetic_inputs

SETTINGS = {
    "seed": 0, "size": 224, "batchnorm_examples": 32, "calibration_examples": 32, "eval_crops": 24, "eval_synthetic": 8,
    "fine_tune_examples": 64, "fine_tune_epochs": 2, "batch_size": 8,
}
# name -> (keras.applications builder, input scaling: "minus1_1" for [-1, 1], "0_255" for raw pixels)
APPS = {
    "mobilenet_v2": ("MobileNetV2", "minus1_1"),
    "efficientnet_b0": ("EfficientNetB0", "0_255"),
}


@lru_cache(maxsize=1)
def _sample_images() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(load_sample_images().images)


def image_crops(count: int, size: int, seed: int) -> np.ndarray:
    """Seeded square crops (40-100 % of the short side, random place, random flip) of scikit-learn's
    sample images, resized to size x size: float32 pixels in [0, 255]."""
    from PIL import Image

    images = _sample_images()
    rng = np.random.default_rng(seed)
    out = np.empty((count, size, size, 3), np.float32)
    for i in range(count):
        img = images[i % len(images)]
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.4, 1.0))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(img[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR)
        pixels = np.asarray(crop, np.float32)
        out[i] = pixels[:, ::-1] if rng.random() < 0.5 else pixels
    return out


class KerasApplication(ZooSource):
    seed = SETTINGS["seed"]

    def __init__(self, name: str, weights: str | None = None, plan: str = "", where: str = ""):
        self.name = self.app = name
        self.builder, self.scaling = APPS[name]
        self.weights, self.plan, self.where = weights, plan, where

    def settings(self) -> dict:
        # seeded models keep the keys they always had; trained weights are another model
        return {"app": self.app, **SETTINGS, **({"weights": self.weights} if self.weights else {})}

    def make(self, keras, workdir: Path, log: Callable[[str], None]):
        size = SETTINGS["size"]
        if self.weights == "imagenet":
            return self._trained(keras, size, log)
        log(f"{self.name}: building keras.applications.{self.builder}(weights=None), seeded")
        model = getattr(keras.applications, self.builder)(
            weights=None, input_shape=(size, size, 3), classes=1000, classifier_activation=None)
        self._calibrate_batchnorm(keras, model)
        return model

    def _trained(self, keras, size: int, log: Callable[[str], None]):
        """The ImageNet-trained model, logits out; its weights file comes from Keras' download (or
        its cache, ~/.keras/models, or $KERAS_HOME/models)."""
        from harness.errors import ConfigError

        log(f"{self.name}: keras.applications.{self.builder}(weights='imagenet'): the weights file from "
            "Keras' cache, or downloaded into it")
        try:
            return getattr(keras.applications, self.builder)(
                weights="imagenet", input_shape=(size, size, 3), classes=1000, classifier_activation=None)
        except Exception as exc:  # urllib's URLError, Keras' "URL fetch failure", a proxy refusing...
            why = " ".join(str(exc).split())[:300]
            raise ConfigError(self.plan, f"{self.where}.weights" if self.where else "weights",
                              f"keras.applications.{self.builder}(weights='imagenet') needs its weights file, which "
                              "Keras downloads from storage.googleapis.com into ~/.keras/models (or $KERAS_HOME/models) "
                              f"the first time, and this machine could not get it ({type(exc).__name__}: {why}). Run "
                              "once where the network is reachable, or copy the file into that folder, or leave out "
                              "`weights:` for seeded weights") from None

    def _calibrate_batchnorm(self, keras, model) -> None:
        """Set every BatchNorm's moving statistics to those of one batch of sample-image crops."""
        layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        momenta = [layer.momentum for layer in layers]
        for layer in layers:
            layer.momentum = 0.0
        model(self._scale(image_crops(SETTINGS["batchnorm_examples"], SETTINGS["size"], seed=5)), training=True)
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum

    def _scale(self, pixels: np.ndarray) -> np.ndarray:
        return pixels / 127.5 - 1.0 if self.scaling == "minus1_1" else pixels

    def representative(self, model) -> np.ndarray:
        return self._scale(image_crops(SETTINGS["calibration_examples"], SETTINGS["size"], seed=1))

    def eval_set(self, model) -> EvalSet:
        size = SETTINGS["size"]
        crops = image_crops(SETTINGS["eval_crops"], size, seed=2)
        synthetic = synthetic_inputs((size, size, 3), SETTINGS["eval_synthetic"], seed=3, high=255.0)
        x = self._scale(np.concatenate([crops, synthetic])).astype(np.float32)
        return EvalSet(x, None, f"{len(crops)} crops of scikit-learn's sample images + "
                                f"{len(synthetic)} seeded synthetic images, {size}x{size}")

    def fine_tune(self, model) -> FineTune:
        x = self._scale(image_crops(SETTINGS["fine_tune_examples"], SETTINGS["size"], seed=4))
        return distillation(model, x, SETTINGS["fine_tune_epochs"], SETTINGS["batch_size"])
