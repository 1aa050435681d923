"""digits_cnn: the seeds' small CNN (3x3 convolutions with 12 and 24 filters, each followed by 2x2
max-pooling, then one dense layer), here a 10-way softmax trained on scikit-learn's digits
upscaled from 8x8 to 28x28, with a held-out stratified test split for accuracy.

Training is deterministic (seeded, deterministic TF ops); the trained model is cached by the
hash of this file, the settings below and the library versions, so a second sweep does not retrain."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from models.base import EvalSet, FineTune, ZooSource

SETTINGS = {
    "size": 28, "test_fraction": 0.2, "split_seed": 0, "seed": 0,
    "epochs": 30, "batch_size": 32, "learning_rate": 1e-3,
    "calibration_examples": 200, "fine_tune_epochs": 8,
}


@lru_cache(maxsize=1)
def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): 28x28 float32 images in [0, 1] and integer labels."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    size = SETTINGS["size"]
    images = np.stack([
        np.asarray(Image.fromarray((img / 16.0).astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))
        for img in digits.images
    ]).clip(0.0, 1.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=SETTINGS["test_fraction"], random_state=SETTINGS["split_seed"],
        stratify=digits.target)
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def build(keras):
    size = SETTINGS["size"]
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=(size, size)),
        keras.layers.Reshape((size, size, 1)),
        keras.layers.Conv2D(12, (3, 3), activation="relu"),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Conv2D(24, (3, 3), activation="relu"),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ], name="digits_cnn")


class DigitsCNN(ZooSource):
    name = "digits_cnn"
    seed = SETTINGS["seed"]

    def settings(self) -> dict:
        return SETTINGS

    def make(self, keras, workdir: Path, log: Callable[[str], None]):
        x_train, y_train, x_test, y_test = load_data()
        model = build(keras)
        model.compile(optimizer=keras.optimizers.Adam(SETTINGS["learning_rate"]),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        log(f"{self.name}: training {SETTINGS['epochs']} epochs on {len(x_train)} images")
        model.fit(x_train, y_train, epochs=SETTINGS["epochs"], batch_size=SETTINGS["batch_size"],
                  shuffle=True, verbose=0)
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        log(f"{self.name}: trained, Keras test accuracy {accuracy:.4f} on {len(x_test)} held-out images")
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "training.json").write_text(json.dumps(
            {"keras_test_accuracy": float(accuracy), "train_examples": len(x_train),
             "test_examples": len(x_test), "settings": SETTINGS}, indent=1))
        return model

    def representative(self, model) -> np.ndarray:
        return load_data()[0][: SETTINGS["calibration_examples"]]

    def eval_set(self, model) -> EvalSet:
        _, _, x_test, y_test = load_data()
        return EvalSet(x_test, y_test, f"scikit-learn digits, held-out {len(x_test)} of 1797, upscaled to 28x28")

    def fine_tune(self, model) -> FineTune:
        x_train, y_train, _, _ = load_data()
        return FineTune(x_train, y_train, "sparse_categorical_crossentropy",
                        epochs=SETTINGS["fine_tune_epochs"], batch_size=SETTINGS["batch_size"])
