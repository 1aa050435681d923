"""One image file -> one model input, with Pillow and numpy.

The steps, in order: decode, convert to RGB or L (gray), reverse to BGR if asked, crop a centred
square of `center_crop` x the short side, resize bilinearly to the target size, then scale / mean /
std or a Keras mode (data/keras_modes.py), and lay the result out as the model's input wants it:
(H, W), (H, W, C) or (C, H, W). Pillow's bilinear filter widens its support when it shrinks, so a
large photo is antialiased rather than sampled (the same as Keras' `antialias` resizing mode, not
TensorFlow's default `tf.image.resize`): small differences from a TensorFlow pipeline are expected."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.keras_modes import apply_affine, apply_keras, needs_three_channels
from data.spec import Preprocess
from harness.config_checks import clip, show_path
from harness.errors import ConfigError


@dataclass(frozen=True)
class ImagePlan:
    """What load_split decided once for every image of a split."""

    height: int
    width: int
    mode: str  # Pillow mode: RGB or L
    bgr: bool
    layout: str  # hw | hwc | chw
    pre: Preprocess

    @property
    def shape(self) -> tuple[int, ...]:
        channels = 1 if self.mode == "L" else 3
        return {"hw": (self.height, self.width), "hwc": (self.height, self.width, channels),
                "chw": (channels, self.height, self.width)}[self.layout]


def image_plan(pre: Preprocess, input_shape: tuple, source: str, where: str, pre_where: str) -> ImagePlan:
    """How to turn images into inputs of `input_shape` (no batch axis; None = any size)."""
    shape = tuple(input_shape)
    if len(shape) == 2:
        layout, channels, (height, width) = "hw", 1, shape
    elif len(shape) == 3 and shape[-1] in (1, 3):
        layout, channels, (height, width) = "hwc", shape[-1], shape[:2]
    elif len(shape) == 3 and shape[0] in (1, 3):
        layout, channels, (height, width) = "chw", shape[0], shape[1:]
    else:
        raise ConfigError(source, where, f"images cannot feed this model: its input is {shape}, and an image "
                          "input is (H, W), (H, W, C) or (C, H, W) with 1 or 3 channels (give an .npz instead)")
    wanted = pre.channels or ("gray" if channels == 1 else "rgb")
    if (wanted == "gray") != (channels == 1):
        raise ConfigError(source, f"{pre_where}.channels",
                          f"{wanted} images have {1 if wanted == 'gray' else 3} channel(s), the model's input {shape} "
                          f"has {channels}")
    check_channel_steps(pre, channels, f"the model's input {shape} has {channels} channel(s)", source, pre_where)
    if pre.resize is not None:
        if any(fixed is not None and fixed != size for fixed, size in zip((height, width), pre.resize)):
            raise ConfigError(source, f"{pre_where}.resize", f"{list(pre.resize)} does not fit the model's input "
                              f"{shape} (height {height}, width {width})")
        height, width = pre.resize
    if height is None or width is None:
        raise ConfigError(source, f"{pre_where}.resize",
                          f"the model's input {shape} has no fixed size: give resize: [height, width]")
    return ImagePlan(int(height), int(width), "L" if wanted == "gray" else "RGB", wanted == "bgr", layout, pre)


def load_image(path: Path, plan: ImagePlan, source: str, where: str) -> np.ndarray:
    """The model input for one image file, float32 in plan.shape."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            image = image.convert(plan.mode)
    except Exception as exc:  # a damaged file can make any of Pillow's decoders raise anything
        raise ConfigError(source, where, f"cannot read image {show_path(path)}: {type(exc).__name__}: "
                          f"{clip(str(exc))}") from None
    if plan.pre.center_crop is not None:
        image = image.crop(crop_box(image.width, image.height, plan.pre.center_crop))
    if image.size != (plan.width, plan.height):
        image = image.resize((plan.width, plan.height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)
    if plan.bgr:
        pixels = pixels[..., ::-1]
    pixels = normalize(pixels, plan.pre)
    if plan.layout == "hwc" and pixels.ndim == 2:
        pixels = pixels[..., None]
    elif plan.layout == "chw":
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def crop_box(width: int, height: int, fraction: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred square whose side is `fraction` of the short side."""
    side = max(1, round(min(width, height) * fraction))
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def normalize(x: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Pixels 0..255 (channels last) -> what the model takes."""
    if pre.keras is not None:
        return apply_keras(x, pre.keras)
    return apply_affine(x, pre.scale, pre.mean, pre.std)


def check_channel_steps(pre: Preprocess, channels: int, what: str, source: str, pre_where: str) -> None:
    """A Keras mode needs RGB, and mean / std give one value or one per channel; `what` says
    where the channel count comes from (the model's input, or an array's last axis)."""
    if pre.keras and needs_three_channels(pre.keras) and channels != 3:
        raise ConfigError(source, f"{pre_where}.keras", f"{pre.keras}'s mode works on RGB (3 channels), and {what}")
    for key in ("mean", "std"):
        values = getattr(pre, key)
        if values is not None and len(values) not in (1, channels):
            raise ConfigError(source, f"{pre_where}.{key}",
                              f"has {len(values)} values and {what}: give 1 or {channels}")
