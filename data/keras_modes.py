"""Keras applications' `preprocess_input`, as a table: application module -> mode, and the modes.

Facts from Keras 3.15.1 (the version pinned here), keras/src/applications/:
- imagenet_utils.py `preprocess_input(x, data_format=None, mode="caffe")` and its docstring:
  "tf" scales pixels 0..255 to -1..1 (`x /= 127.5; x -= 1.0`); "torch" divides by 255 and then
  normalizes each channel with the ImageNet mean [0.485, 0.456, 0.406] and std
  [0.229, 0.224, 0.225]; "caffe" reverses RGB to BGR and subtracts the ImageNet BGR mean pixel
  [103.939, 116.779, 123.68], without scaling.
- Which application calls which mode: mobilenet, mobilenet_v2, inception_v3, inception_resnet_v2,
  xception, nasnet, resnet_v2 -> "tf"; densenet -> "torch"; resnet (exported also as resnet50),
  vgg16, vgg19 -> "caffe".
- efficientnet, efficientnet_v2, mobilenet_v3 and convnext: `preprocess_input` "does nothing and
  only kept as a placeholder" (their docstrings): the models rescale inside (a Rescaling /
  Normalization layer), so they take pixels 0..255 as they are.

The modes are written here in numpy: the harness must not import TensorFlow to read a plan, and
a mode is three lines of arithmetic."""

from __future__ import annotations

import numpy as np

TF, TORCH, CAFFE, IDENTITY = "tf", "torch", "caffe", "identity"

KERAS_MODES = {
    "convnext": IDENTITY,
    "densenet": TORCH,
    "efficientnet": IDENTITY,
    "efficientnet_v2": IDENTITY,
    "inception_resnet_v2": TF,
    "inception_v3": TF,
    "mobilenet": TF,
    "mobilenet_v2": TF,
    "mobilenet_v3": IDENTITY,
    "nasnet": TF,
    "resnet": CAFFE,
    "resnet50": CAFFE,
    "resnet_v2": TF,
    "vgg16": CAFFE,
    "vgg19": CAFFE,
    "xception": TF,
}

TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


def needs_three_channels(application: str) -> bool:
    """torch and caffe work per colour channel (caffe also reorders them): an RGB image only."""
    return KERAS_MODES[application] in (TORCH, CAFFE)


def apply_keras(x: np.ndarray, application: str) -> np.ndarray:
    """x: float32 pixels 0..255, channels last (RGB for torch and caffe). Returns a new array."""
    mode = KERAS_MODES[application]
    if mode == TF:
        return x / np.float32(127.5) - np.float32(1.0)
    if mode == TORCH:
        return (x / np.float32(255.0) - np.float32(TORCH_MEAN)) / np.float32(TORCH_STD)
    if mode == CAFFE:
        return x[..., ::-1] - np.float32(CAFFE_BGR_MEAN)
    return x.copy()


def apply_affine(x: np.ndarray, scale: float | None, mean: tuple[float, ...] | None,
                 std: tuple[float, ...] | None) -> np.ndarray:
    """scale, then subtract mean, then divide by std; one value each, or one per channel (last axis)."""
    out = x.astype(np.float32, copy=True)
    if scale is not None:
        out *= np.float32(scale)
    if mean is not None:
        out -= np.asarray(mean, np.float32)
    if std is not None:
        out /= np.asarray(std, np.float32)
    return out
