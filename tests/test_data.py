"""The data layer (data/): real files written into tmp_path (scikit-learn's digits as PNG class
folders, the TFLite ImageNet-evaluation layout, .npz and .npy pairs), read back through parse_data
and load_split, every preprocess step against numbers worked out by hand, every bad input as one
ConfigError naming the file and the key, and the content hash."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from data import (DataSource, DataSpec, Preprocess, Split, check_labels, check_metric, content_sha256, load_split,
                  parse_data, spec_key)
from data.images import crop_box
from harness.errors import ConfigError

PLAN = "plans/mine.yaml"
WHERE = "models[0].data"


def digits_folder(root: Path, per_class: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """The first `per_class` digits of each class, upscaled to 28x28, as root/<digit>/<i>.png.
    Returns the written pixels (N, 28, 28) uint8 and labels, in the loader's order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels, labels = [], []
    for label in range(10):
        for j, index in enumerate(np.flatnonzero(digits.target == label)[:per_class]):
            small = (digits.images[index] * (255 / 16)).astype(np.uint8)
            big = Image.fromarray(small, "L").resize((28, 28), Image.Resampling.BILINEAR)
            (root / str(label)).mkdir(parents=True, exist_ok=True)
            big.save(root / str(label) / f"{j:03d}.png")
            pixels.append(np.asarray(big))
            labels.append(label)
    return np.stack(pixels), np.asarray(labels)


def parse(raw, base: Path) -> DataSpec:
    return parse_data(raw, base, PLAN, WHERE)


def refused(raw, base: Path) -> ConfigError:
    before = sorted(p for p in base.rglob("*"))
    with pytest.raises(ConfigError) as caught:
        parse(raw, base)
    assert sorted(p for p in base.rglob("*")) == before  # nothing written
    assert str(caught.value).startswith(f"{PLAN}: {WHERE}")
    return caught.value


def rgb_image(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), "RGB").save(path)
    return path


# -- image folders -----------------------------------------------------------------------------


def test_digits_class_folders_load_back_in_order(tmp_path):
    pixels, labels = digits_folder(tmp_path / "val")
    spec = parse({"eval": "val", "calibration": {"images": "val", "limit": 7}}, tmp_path)
    assert spec.eval == DataSource("images", tmp_path / "val")
    assert spec.calibration.limit == 7
    seen = []
    split = load_split(spec.eval, Preprocess(scale=1 / 255), (28, 28, 1), PLAN, f"{WHERE}.eval",
                       progress=lambda done, total: seen.append((done, total)))
    assert split.x.shape == (60, 28, 28, 1) and split.x.dtype == np.float32
    order = np.lexsort((labels, np.tile(np.arange(6), 10)))  # classes in turn: 0, 1, ..., 9, 0, 1, ...
    assert split.y.dtype == np.int64 and split.y.tolist() == labels[order].tolist() == list(range(10)) * 6
    assert split.class_names == tuple(str(d) for d in range(10))
    np.testing.assert_allclose(split.x[..., 0], pixels[order] / 255, atol=1e-6)  # PNG: lossless; 28x28: no resize
    assert 0 <= split.x.min() and split.x.max() <= 1
    assert seen[-1] == (60, 60) and all(a <= b for (a, _), (b, _) in zip(seen, seen[1:]))
    assert split.description == f"60 images in 10 class folders of {tmp_path / 'val'}"
    gray = load_split(spec.calibration, Preprocess(), (28, 28), PLAN, f"{WHERE}.calibration")
    assert gray.x.shape == (7, 28, 28) and gray.y.tolist() == list(range(7))  # a limit samples every class
    assert gray.description.startswith("first 7 of 60 images")
    check_labels(split, 10, None, PLAN, f"{WHERE}.eval")
    with pytest.raises(ConfigError, match=r"models\[0\]\.data\.eval: 10 class folders for the model's 8 outputs"):
        check_labels(gray, 8, None, PLAN, f"{WHERE}.eval")
    with pytest.raises(ConfigError, match=r"models\[0\]\.data\.eval: label 9 is outside the model's 8 outputs"):
        check_labels(Split(split.x, split.y, "", None), 8, None, PLAN, f"{WHERE}.eval")
    with pytest.raises(ConfigError, match=r"models\[0\]\.data\.top_k: top_k 20 is more than the model's 10"):
        check_labels(split, 10, None, PLAN, f"{WHERE}.eval", top_k=20)


def test_image_folder_order_extensions_nesting_and_unlabelled(tmp_path):
    red = np.zeros((4, 4, 3)); red[..., 0] = 255
    rgb_image(tmp_path / "set/b/z.PNG", red)
    rgb_image(tmp_path / "set/b/deep/a.bmp", red)
    rgb_image(tmp_path / "set/a/y.jpg", red)
    (tmp_path / "set/a/notes.txt").write_text("not an image")
    (tmp_path / "set/a/.hidden.png").write_text("skipped")
    (tmp_path / "set/top.png").write_bytes(b"ignored: class folders exist")
    src = parse({"eval": {"images": "set"}}, tmp_path).eval
    split = load_split(src, Preprocess(), (2, 2, 3), PLAN, f"{WHERE}.eval")
    assert split.y.tolist() == [0, 1, 1] and split.class_names == ("a", "b")  # b: deep/a.bmp before z.PNG
    np.testing.assert_allclose(split.x[0], np.broadcast_to([255.0, 0, 0], (2, 2, 3)), atol=1.0)  # jpeg
    bgr = load_split(src, Preprocess(channels="bgr"), (2, 2, 3), PLAN, f"{WHERE}.eval")
    np.testing.assert_allclose(bgr.x[1], np.broadcast_to([0, 0, 255.0], (2, 2, 3)))
    chw = load_split(src, Preprocess(), (3, 2, 2), PLAN, f"{WHERE}.eval")
    assert chw.x.shape == (3, 3, 2, 2) and chw.x[1, 0].min() == 255 and chw.x[1, 1].max() == 0
    flat = tmp_path / "calib"
    rgb_image(flat / "b.png", red)
    rgb_image(flat / "a.png", red * 0)
    unlabelled = load_split(parse({"calibration": "calib"}, tmp_path).calibration, Preprocess(), (4, 4, 3),
                            PLAN, f"{WHERE}.calibration")
    assert unlabelled.y is None and unlabelled.x[0].max() == 0 and unlabelled.x[1].max() == 255


def test_crop_resize_and_gray_conversion(tmp_path):
    array = np.zeros((6, 10, 3), np.uint8)
    array[1:5, 3:7] = (30, 60, 90)  # the centred 4x4 square: crop 4/6 of the short side keeps exactly it
    src = DataSource("images", rgb_image(tmp_path / "one/c/x.png", array).parent.parent)
    assert crop_box(10, 6, 4 / 6) == (3, 1, 7, 5)
    split = load_split(src, Preprocess(center_crop=4 / 6, resize=(2, 2)), (None, None, 3), PLAN, f"{WHERE}.eval")
    np.testing.assert_allclose(split.x[0], np.broadcast_to([30.0, 60, 90], (2, 2, 3)))
    gray = load_split(src, Preprocess(center_crop=4 / 6, channels="gray"), (4, 4, 1), PLAN, f"{WHERE}.eval")
    luma = 30 * 299 / 1000 + 60 * 587 / 1000 + 90 * 114 / 1000  # ITU-R 601-2, Pillow's "L" conversion
    np.testing.assert_allclose(gray.x[0, ..., 0], np.full((4, 4), luma), atol=0.5)


@pytest.mark.parametrize("pre, expected", [
    (Preprocess(scale=1 / 255), [51 / 255, 102 / 255, 204 / 255]),
    (Preprocess(scale=0.5, mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 8.0)), [(25.5 - 1) / 2, (51 - 2) / 4, (102 - 3) / 8]),
    (Preprocess(mean=(127.5,), std=(127.5,)), [51 / 127.5 - 1, 102 / 127.5 - 1, 204 / 127.5 - 1]),
    # Keras: "tf" x/127.5 - 1; "torch" x/255 then ImageNet mean/std; "caffe" RGB->BGR then minus the BGR means
    (Preprocess(keras="mobilenet_v2"), [51 / 127.5 - 1, 102 / 127.5 - 1, 204 / 127.5 - 1]),
    (Preprocess(keras="densenet"), [(0.2 - 0.485) / 0.229, (0.4 - 0.456) / 0.224, (0.8 - 0.406) / 0.225]),
    (Preprocess(keras="resnet50"), [204 - 103.939, 102 - 116.779, 51 - 123.68]),
    (Preprocess(keras="vgg16"), [204 - 103.939, 102 - 116.779, 51 - 123.68]),
    (Preprocess(keras="efficientnet"), [51.0, 102.0, 204.0]),
    (Preprocess(keras="inception_v3"), [51 / 127.5 - 1, 102 / 127.5 - 1, 204 / 127.5 - 1]),
])
def test_normalization_steps_against_hand_computed_values(tmp_path, pre, expected):
    src = DataSource("images", rgb_image(tmp_path / "f/c/x.png", np.full((3, 3, 3), (51, 102, 204))).parent.parent)
    split = load_split(src, pre, (3, 3, 3), PLAN, f"{WHERE}.eval")
    np.testing.assert_allclose(split.x[0], np.broadcast_to(expected, (3, 3, 3)), rtol=1e-5, atol=1e-5)
    arrays = tmp_path / "a.npz"
    np.savez(arrays, x=np.full((2, 3, 3, 3), (51, 102, 204), np.uint8))
    same = load_split(DataSource("npz", arrays), pre, (3, 3, 3), PLAN, f"{WHERE}.eval")
    np.testing.assert_allclose(same.x, np.broadcast_to(expected, (2, 3, 3, 3)), rtol=1e-5, atol=1e-5)


# -- the TFLite ImageNet-evaluation layout -------------------------------------------------------


def imagenet_layout(root: Path) -> None:
    colours = {"ILSVRC2012_val_00000002.JPEG": 10, "ILSVRC2012_val_00000001.JPEG": 200, "b.png": 90}
    for name, value in colours.items():
        rgb_image(root / "ilsvrc_images" / name, np.full((8, 8, 3), value))
    # sorted by file name in byte order (upper case first): ..._00000001, ..._00000002, b.png
    (root / "ilsvrc_validation_labels.txt").write_text("tench\r\ngoldfish\ngoldfish\n")
    (root / "model_output_labels.txt").write_text("background\ntench\ngoldfish\ngreat white shark\n")


def test_imagenet_layout_labels_index_into_the_model_labels_with_background(tmp_path):
    imagenet_layout(tmp_path / "in")
    explicit = {"imagenet": "in/ilsvrc_images", "ground_truth": "in/ilsvrc_validation_labels.txt",
                "model_labels": "in/model_output_labels.txt"}
    spec = parse({"eval": explicit, "calibration": "in"}, tmp_path)
    assert spec.calibration == spec.eval
    split = load_split(spec.eval, Preprocess(), (4, 4, 3), PLAN, f"{WHERE}.eval")
    assert split.y.tolist() == [1, 2, 2]  # background is output 0
    assert split.x[:, 0, 0, 0].round().tolist() == [200, 10, 90]
    assert split.outputs_named and len(split.class_names) == 4
    check_labels(split, 4, None, PLAN, f"{WHERE}.eval")
    with pytest.raises(ConfigError, match=r"eval\.model_labels: the model labels file has 4 lines and the model 3"):
        check_labels(split, 3, None, PLAN, f"{WHERE}.eval")
    limited = load_split(DataSource("imagenet", spec.eval.path, spec.eval.labels_path, spec.eval.model_labels, 2),
                         Preprocess(), (4, 4, 3), PLAN, f"{WHERE}.eval")
    assert limited.y.tolist() == [1, 2] and limited.description.startswith("first 2 of 3 images")


def test_imagenet_layout_mistakes(tmp_path):
    imagenet_layout(tmp_path / "in")
    base = {"imagenet": "in/ilsvrc_images", "ground_truth": "in/ilsvrc_validation_labels.txt",
            "model_labels": "in/model_output_labels.txt"}
    (tmp_path / "short.txt").write_text("tench\n")
    (tmp_path / "numbers.txt").write_text("1\n2\n3\n")
    (tmp_path / "empty.txt").write_text("")
    cases = [({**base, "ground_truth": "short.txt"}, "eval.ground_truth", "has 1 lines for 3 files"),
             ({**base, "ground_truth": "numbers.txt"}, "eval.ground_truth", "label names"),
             ({**base, "model_labels": "empty.txt"}, "eval.model_labels", "is empty"),
             ({k: v for k, v in base.items() if k != "model_labels"}, "eval.model_labels", "missing required key")]
    for raw, key, message in cases:
        error = refused({"eval": raw}, tmp_path)
        assert error.key == f"{WHERE}.{key}" and message in str(error)


# -- arrays ------------------------------------------------------------------------------------


def test_npz_and_npy_pairs_classification_and_regression(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 13)).astype(np.float64)
    np.savez(tmp_path / "cls.npz", x=x, y=np.arange(20) % 3)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", x[:, :2].sum(axis=1).astype(np.float32))
    np.save(tmp_path / "img.npy", rng.integers(0, 255, size=(5, 28, 28, 1)).astype(np.uint8))
    spec = parse({"eval": "cls.npz", "fine_tune": {"npy": "x.npy", "labels": "y.npy", "limit": 5},
                  "calibration": "img.npy", "preprocess": {"scale": 2}}, tmp_path)
    cls = load_split(spec.eval, spec.preprocess, (13,), PLAN, f"{WHERE}.eval")
    assert cls.y.dtype == np.int64 and cls.task == "classification" and cls.y.tolist() == (np.arange(20) % 3).tolist()
    np.testing.assert_allclose(cls.x, (x * 2).astype(np.float32))
    reg = load_split(spec.fine_tune, Preprocess(), (13,), PLAN, f"{WHERE}.fine_tune")
    assert reg.y.dtype == np.float32 and reg.task == "regression" and reg.x.shape == (5, 13)
    check_labels(reg, 1, None, PLAN, f"{WHERE}.fine_tune")
    with pytest.raises(ConfigError, match="regression targets have 1 value"):
        check_labels(reg, 2, None, PLAN, f"{WHERE}.fine_tune")
    forced = load_split(spec.eval, Preprocess(), (13,), PLAN, f"{WHERE}.eval", task="regression")
    assert forced.y.dtype == np.float32
    dropped = load_split(spec.calibration, Preprocess(), (28, 28), PLAN, f"{WHERE}.calibration")
    assert dropped.x.shape == (5, 28, 28) and dropped.y is None
    np.save(tmp_path / "flat.npy", np.zeros((4, 28, 28)))
    added = load_split(DataSource("npy", tmp_path / "flat.npy"), Preprocess(), (28, 28, 1), PLAN, f"{WHERE}.eval")
    assert added.x.shape == (4, 28, 28, 1)
    with pytest.raises(ConfigError) as caught:
        load_split(spec.eval, Preprocess(), (12,), PLAN, f"{WHERE}.eval")
    assert str(caught.value) == f"{PLAN}: {WHERE}.eval: x's examples have shape (13,), the model's input is (12,)"


def test_array_mistakes_at_load(tmp_path):
    np.savez(tmp_path / "fraction.npz", x=np.zeros((3, 2)), y=np.array([0.5, 1, 2]))
    np.savez(tmp_path / "short.npz", x=np.zeros((3, 2)), y=np.array([0, 1]))
    np.savez(tmp_path / "nan.npz", x=np.array([[0, np.nan]]))
    np.savez(tmp_path / "ok.npz", x=np.zeros((3, 2)))
    np.savez(tmp_path / "strings.npz", x=np.array([["a", "b"]]))
    cases = [("fraction.npz", "classification", "not whole numbers"), ("short.npz", None, "one label per example"),
             ("nan.npz", None, "NaN"), ("strings.npz", None, "numeric array")]
    for name, task, message in cases:
        with pytest.raises(ConfigError, match=message) as caught:
            load_split(DataSource("npz", tmp_path / name), Preprocess(), (2,), PLAN, f"{WHERE}.eval", task=task)
        assert caught.value.key == f"{WHERE}.eval"
    with pytest.raises(ConfigError, match=r"data\.preprocess\.keras: resnet50's mode works on RGB"):
        load_split(DataSource("npz", tmp_path / "ok.npz"), Preprocess(keras="resnet50"), (2,), PLAN, f"{WHERE}.eval")
    with pytest.raises(ConfigError, match=r"data\.preprocess\.resize: applies to images only"):
        load_split(DataSource("npz", tmp_path / "short.npz"), Preprocess(resize=(2, 2)), (2,), PLAN, f"{WHERE}.eval")


def test_an_npz_member_that_is_not_an_npy_file_is_named(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "text.npz", "w") as archive:
        archive.writestr("x.npy", b"hello")
        archive.writestr("y.npy", b"hello")
    with pytest.raises(ConfigError) as caught:
        load_split(DataSource("npz", tmp_path / "text.npz"), Preprocess(), (2,), PLAN, f"{WHERE}.eval")
    assert caught.value.key == f"{WHERE}.eval"
    assert caught.value.message == f"{tmp_path / 'text.npz'}: x.npy is not a NumPy array file (no .npy header; it starts b'hello')"
    np.savez(tmp_path / "ytext.npz", x=np.zeros((2, 2), np.float32))
    with zipfile.ZipFile(tmp_path / "ytext.npz", "a") as archive:
        archive.writestr("y.npy", b"\x00\x01")
    with pytest.raises(ConfigError, match=r"y\.npy is not a NumPy array file \(no \.npy header; it starts b'\\x00\\x01'\)"):
        load_split(DataSource("npz", tmp_path / "ytext.npz"), Preprocess(), (2,), PLAN, f"{WHERE}.eval")


def test_an_array_split_is_checked_without_the_model(tmp_path):
    """What an array split must be whatever the model is checked by check_split_alone (before a
    model is built); its shape and labels against the model wait for it."""
    from data import check_split_alone

    np.savez(tmp_path / "ok.npz", x=np.zeros((3, 5, 7), np.float32), y=np.array([0, 40, 2]))
    np.savez(tmp_path / "nan.npz", x=np.array([[0, np.nan]]))
    np.savez(tmp_path / "short.npz", x=np.zeros((3, 2)), y=np.array([0, 1]))
    np.savez(tmp_path / "words.npz", x=np.zeros((2, 2)), y=np.array(["a", "b"]))
    np.savez(tmp_path / "complex.npz", x=np.zeros((2, 2), np.complex64))
    np.save(tmp_path / "x.npy", np.zeros((2, 2)))
    np.save(tmp_path / "fraction.npy", np.array([0.5, 1.0]))
    check_split_alone(parse({"eval": "ok.npz"}, tmp_path), "eval", PLAN, WHERE)  # any shape, any label
    digits_folder(tmp_path / "val", per_class=1)
    (tmp_path / "val/3/broken.png").write_bytes(b"not an image")
    check_split_alone(parse({"eval": "val"}, tmp_path), "eval", PLAN, WHERE)  # decoded at the model's size, later
    cases = [({"eval": "nan.npz"}, "eval", "holds NaN or infinite values"),
             ({"calibration": "short.npz"}, "calibration", "x has 3 examples and y has shape (2,)"),
             ({"eval": "words.npz"}, "eval", "labels must be numbers, got dtype <U1"),
             ({"fine_tune": "complex.npz"}, "fine_tune", "must be a non-empty numeric array, got dtype complex64"),
             ({"eval": {"npy": "x.npy", "labels": "fraction.npy"}, "task": "classification"}, "eval",
              "task is classification but the labels are not whole numbers")]
    for raw, split, words in cases:
        with pytest.raises(ConfigError) as caught:
            check_split_alone(parse(raw, tmp_path), split, PLAN, WHERE)
        assert caught.value.key == f"{WHERE}.{split}" and words in caught.value.message, caught.value


def test_a_zoo_models_data_is_checked_before_it_is_built(tmp_path):
    """A zoo model's input and outputs are known from its definition (models.zoo_io), so its splits
    are loaded for it before anything is trained: shape, channels, labels against its outputs, top_k."""
    import models

    np.savez(tmp_path / "e.npz", x=np.zeros((4, 28, 28), np.float32), y=np.array([0, 1, 2, 9]))
    np.savez(tmp_path / "rgb.npz", x=np.zeros((4, 224, 224, 3), np.float32), y=np.array([0, 1, 2, 999]))
    np.savez(tmp_path / "eleven.npz", x=np.zeros((4, 28, 28), np.float32), y=np.array([0, 1, 2, 10]))
    digits_folder(tmp_path / "val", per_class=1)
    (tmp_path / "val/3/broken.png").write_bytes(b"not an image")

    def source(zoo: str, raw: dict):
        return models.resolve(zoo, "zoo", zoo, data=parse(raw, tmp_path), plan=PLAN, where="models[0]")

    assert source("digits_cnn", {"eval": "e.npz"}).known_io == ((28, 28), 10)
    source("digits_cnn", {"eval": "e.npz", "top_k": 10}).check_data()
    source("mobilenet_v2", {"calibration": "rgb.npz"}).check_data()
    cases = [("digits_cnn", {"eval": "e.npz", "top_k": 11}, f"{WHERE}.top_k", "top_k 11 is more than the model's 10 outputs"),
             ("digits_cnn", {"eval": "eleven.npz"}, f"{WHERE}.eval", "label 10 is outside the model's 10 outputs"),
             ("digits_cnn", {"eval": "e.npz", "task": "regression"}, f"{WHERE}.eval",
              "regression targets have 1 value(s) per example and the model 10 output(s)"),
             ("digits_cnn", {"eval": "e.npz", "preprocess": {"std": [0.1, 0.2, 0.3]}}, f"{WHERE}.preprocess.std",
              "has 3 values"),
             ("digits_cnn", {"eval": "val"}, f"{WHERE}.eval", "broken.png"),
             ("efficientnet_b0", {"eval": "e.npz"}, f"{WHERE}.eval", "x's examples have shape (28, 28), the model's input is (224, 224, 3)")]
    for zoo, raw, key, words in cases:
        with pytest.raises(ConfigError) as caught:
            source(zoo, raw).check_data()
        assert caught.value.key == key and words in caught.value.message, caught.value
    # a Keras file's input is known only once it is loaded: its arrays are checked alone
    np.savez(tmp_path / "nan.npz", x=np.array([[0, np.nan]]))
    (tmp_path / "m.keras").write_bytes(b"")
    file_source = models.resolve("m", "keras", path=tmp_path / "m.keras", data=parse({"eval": "e.npz", "top_k": 11}, tmp_path),
                                 plan=PLAN, where="models[0]")
    assert file_source.known_io is None
    file_source.check_data()
    file_source = models.resolve("m", "keras", path=tmp_path / "m.keras", data=parse({"eval": "nan.npz"}, tmp_path),
                                 plan=PLAN, where="models[0]")
    with pytest.raises(ConfigError, match="NaN"):
        file_source.check_data()


ZOO_IO_OF_BUILT = """
import json, sys
from harness.tfenv import import_tf
from models import digits, keras_apps
tf, keras = import_tf()
built = {"digits_cnn": digits.build(keras)}
for name in ("mobilenet_v2", "efficientnet_b0"):
    size = keras_apps.SETTINGS["size"]
    built[name] = getattr(keras.applications, keras_apps.APPS[name][0])(
        weights=None, input_shape=(size, size, 3), classes=1000, classifier_activation=None)
print(json.dumps({name: [list(m.inputs[0].shape[1:]), int(m.outputs[0].shape[-1])] for name, m in built.items()}))
"""


def test_the_zoo_io_is_what_the_zoo_builds():
    import json
    import subprocess
    import sys

    import models

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", ZOO_IO_OF_BUILT], capture_output=True, text=True, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    built = json.loads(done.stdout.strip().splitlines()[-1])
    assert built == {zoo: [list(models.zoo_io(zoo)[0]), models.zoo_io(zoo)[1]] for zoo in models.ZOO}


# -- bad input at the boundary -------------------------------------------------------------------


def test_every_bad_data_block_is_one_config_error_naming_file_and_key(tmp_path):
    digits_folder(tmp_path / "val", per_class=1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.npz").write_text("not a zip")
    (tmp_path / "fake.npy").write_text("not numpy")
    np.savez(tmp_path / "noxy.npz", a=np.zeros(3))
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    cases = [
        (None, WHERE, "expected a mapping"),
        ({}, WHERE, "expected a mapping"),
        ({"preprocess": {"scale": 1}}, WHERE, "give at least one of"),
        ({"eval": "val", "evaluation": "val"}, f"{WHERE}.evaluation", "unknown key"),
        ({"eval": 3}, f"{WHERE}.eval", "expected a path or a mapping"),
        ({"eval": "missing"}, f"{WHERE}.eval", "no such file or folder"),
        ({"eval": " "}, f"{WHERE}.eval", "expected a path"),
        ({"eval": "empty"}, f"{WHERE}.eval", "no images"),
        ({"eval": "notes.txt"}, f"{WHERE}.eval", "expected an .npz or .npy file"),
        ({"eval": "fake.npz"}, f"{WHERE}.eval", "not a zip archive"),
        ({"eval": "noxy.npz"}, f"{WHERE}.eval", "no array 'x' (it has: a"),
        ({"eval": {"npy": "fake.npy"}}, f"{WHERE}.eval.npy", "no NumPy header"),
        ({"eval": {"npy": "x.npy", "labels": "gone.npy"}}, f"{WHERE}.eval.labels", "no such file"),
        ({"eval": {"images": "val", "npz": "x.npz"}}, f"{WHERE}.eval", "exactly one of"),
        ({"eval": {"path": "val"}}, f"{WHERE}.eval", "exactly one of"),
        ({"eval": {"images": "val", "labels": "y.npy"}}, f"{WHERE}.eval.labels", "unknown key for images"),
        ({"eval": {"images": "val", "limit": 0}}, f"{WHERE}.eval.limit", ">= 1"),
        ({"eval": {"images": "val", "limit": True}}, f"{WHERE}.eval.limit", ">= 1"),
        ({"eval": {"images": "val", "limit": 2.5}}, f"{WHERE}.eval.limit", ">= 1"),
        ({"eval": {"images": ["val"]}}, f"{WHERE}.eval.images", "expected a path"),
        ({"eval": {"images": "va\x00l"}}, f"{WHERE}.eval.images", "NUL"),
        ({"eval": {"images": "notes.txt"}}, f"{WHERE}.eval.images", "is not a folder"),
        ({"eval": "val", "task": "ranking"}, f"{WHERE}.task", "classification, regression"),
        ({"eval": "val", "task": "regression"}, f"{WHERE}.task", "regression needs an .npz"),
        ({"eval": "val", "top_k": 0}, f"{WHERE}.top_k", "from 1 to 1000"),
        ({"eval": "val", "metric": "no colon"}, f"{WHERE}.metric", "package.module:function"),
        ({"eval": "val", "preprocess": [1]}, f"{WHERE}.preprocess", "expected a mapping"),
        ({"eval": "val", "preprocess": {"size": 3}}, f"{WHERE}.preprocess.size", "unknown key"),
        ({"eval": "val", "preprocess": {"resize": [1, 2, 3]}}, f"{WHERE}.preprocess.resize", "[height, width]"),
        ({"eval": "val", "preprocess": {"center_crop": 1.5}}, f"{WHERE}.preprocess.center_crop", "(0, 1]"),
        ({"eval": "val", "preprocess": {"scale": float("nan")}}, f"{WHERE}.preprocess.scale", "finite"),
        ({"eval": "val", "preprocess": {"std": [1, 0, 1]}}, f"{WHERE}.preprocess.std", "> 0"),
        ({"eval": "val", "preprocess": {"mean": [1] * 5}}, f"{WHERE}.preprocess.mean", "1 to 4 numbers"),
        ({"eval": "val", "preprocess": {"channels": "cmyk"}}, f"{WHERE}.preprocess.channels", "rgb, bgr, gray"),
        ({"eval": "val", "preprocess": {"keras": "alexnet"}}, f"{WHERE}.preprocess.keras", "unknown Keras"),
        ({"eval": "val", "preprocess": {"keras": "vgg16", "scale": 1}}, f"{WHERE}.preprocess.scale", "either keras"),
        ({"eval": "val", "preprocess": {"keras": "vgg16", "channels": "bgr"}}, f"{WHERE}.preprocess.channels", "RGB"),
        ({"eval": {"npy": "x.npy"}, "preprocess": {"center_crop": 0.5}}, f"{WHERE}.preprocess.center_crop",
         "applies to images only"),
    ]
    for raw, key, message in cases:
        error = refused(raw, tmp_path)
        assert error.key == key, (raw, str(error))
        assert message in error.message, (raw, str(error))


def test_model_dependent_mistakes_name_the_key(tmp_path):
    digits_folder(tmp_path / "val", per_class=1)
    (tmp_path / "val/3/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    src = parse({"eval": "val"}, tmp_path).eval
    cases = [(Preprocess(), (28, 28, 1), f"{WHERE}.eval", "broken.png"),
             (Preprocess(), (13,), f"{WHERE}.eval", "images cannot feed this model"),
             (Preprocess(channels="gray"), (28, 28, 3), f"{WHERE}.preprocess.channels", "has 3"),
             (Preprocess(keras="densenet"), (28, 28, 1), f"{WHERE}.preprocess.keras", "RGB"),
             (Preprocess(mean=(1, 2)), (28, 28, 3), f"{WHERE}.preprocess.mean",
              "has 2 values and the model's input (28, 28, 3) has 3 channel(s): give 1 or 3"),
             (Preprocess(resize=(20, 20)), (28, 28, 1), f"{WHERE}.preprocess.resize", "does not fit"),
             (Preprocess(), (None, None, 3), f"{WHERE}.preprocess.resize", "no fixed size")]
    for pre, shape, key, message in cases:
        with pytest.raises(ConfigError) as caught:
            load_split(src, pre, shape, PLAN, f"{WHERE}.eval")
        assert caught.value.key == key and message in str(caught.value), str(caught.value)
        assert str(caught.value).startswith(f"{PLAN}: {key}: ")


def test_metric_entry_point(tmp_path, monkeypatch):
    digits_folder(tmp_path / "val", per_class=1)
    (tmp_path / "mymetrics.py").write_text("def f1(labels, outputs):\n    return 1.0\nCONSTANT = 3\n")
    (tmp_path / "broken_metrics.py").write_text("raise RuntimeError('no GPU here')\n")
    (tmp_path / "exiting_metrics.py").write_text("raise SystemExit(3)\n")
    (tmp_path / "interrupted_metrics.py").write_text("raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    check_metric(parse({"eval": "val", "metric": "mymetrics:f1"}, tmp_path), PLAN, WHERE)
    for metric, message in [("mymetrics:f2", "has no f2"), ("mymetrics:CONSTANT", "not callable"),
                            ("broken_metrics:f", "RuntimeError: no GPU here"), ("nosuchmodule:f", "cannot import"),
                            ("exiting_metrics:f", "cannot import exiting_metrics: SystemExit: 3")]:
        with pytest.raises(ConfigError, match=message) as caught:
            check_metric(parse({"eval": "val", "metric": metric}, tmp_path), PLAN, WHERE)
        assert caught.value.key == f"{WHERE}.metric"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C while importing is the user's, not the module's
        check_metric(parse({"eval": "val", "metric": "interrupted_metrics:f"}, tmp_path), PLAN, WHERE)


def test_importing_the_data_layer_imports_no_tensorflow():
    import subprocess
    import sys

    code = "import sys, data; assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


# -- content hash ------------------------------------------------------------------------------


def test_content_hash_ignores_times_and_sees_every_byte_name_and_limit(tmp_path):
    digits_folder(tmp_path / "val", per_class=3)
    src = DataSource("images", tmp_path / "val")
    first = content_sha256(src)
    for path in (tmp_path / "val").rglob("*.png"):
        os.utime(path, (1, 1))
    assert content_sha256(src) == first
    copy = tmp_path / "elsewhere" / "val"
    shutil.copytree(tmp_path / "val", copy)
    assert content_sha256(DataSource("images", copy)) == first  # another machine, another folder
    assert content_sha256(DataSource("images", src.path, limit=4)) != first
    victim = tmp_path / "val/5/001.png"
    data = bytearray(victim.read_bytes())
    data[-5] ^= 1
    victim.write_bytes(bytes(data))
    assert content_sha256(src) != first
    victim.write_bytes(bytes(data[:-5]) + bytes([data[-5] ^ 1]) + bytes(data[-4:]))
    assert content_sha256(src) == first
    (tmp_path / "val/5/001.png").rename(tmp_path / "val/5/009.png")
    assert content_sha256(src) != first
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 2)))
    spec = parse({"eval": "a.npz", "calibration": "val", "preprocess": {"scale": 0.5}}, tmp_path)
    key = spec_key(spec)
    assert key["splits"]["eval"] == content_sha256(spec.eval) and key["splits"]["fine_tune"] is None
    assert key["preprocess"]["scale"] == 0.5 and key["top_k"] is None
    import json
    json.dumps(key)


def test_content_hash_of_ten_thousand_small_files_is_fast(tmp_path):
    """Written to a RAM disk where there is one: creating 10,000 files on a busy disk takes seconds,
    and what is measured is the hashing (of files in the page cache either way)."""
    import tempfile
    import time

    shm = Path("/dev/shm")
    scratch = tempfile.TemporaryDirectory(dir=shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    root = (Path(scratch.name) if scratch else tmp_path) / "many"
    for c in range(10):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(1000):
            (root / f"c{c}/{i:04d}.png").write_bytes(b"%d-%d" % (c, i) * 20)
    try:
        start = time.perf_counter()
        content_sha256(DataSource("images", root))
        assert time.perf_counter() - start < 2.0
    finally:
        if scratch:
            scratch.cleanup()


# -- random data: blocks -----------------------------------------------------------------------

_PATHS = ["val", "flat", "x.npy", "y.npy", "a.npz", "in", "missing", "notes.txt", "", "~nouser_xyz/a", "val/0"]
_KEYS = ["calibration", "eval", "fine_tune", "preprocess", "task", "top_k", "metric", "images", "imagenet", "npz",
         "npy", "labels", "limit", "ground_truth", "model_labels", "resize", "center_crop", "scale", "mean", "std",
         "channels", "keras", "other"]
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True), st.sampled_from(_PATHS),
                     st.sampled_from(["rgb", "gray", "mobilenet_v2", "resnet50", "classification", "regression",
                                      "m:f", "in/ilsvrc_images", "in/ilsvrc_validation_labels.txt",
                                      "in/model_output_labels.txt"]),
                     st.text(max_size=6))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4)), max_leaves=12)


_SPLIT = st.one_of(
    st.sampled_from(["val", "flat", "a.npz", "x.npy", "in", "missing", "notes.txt"]),
    st.fixed_dictionaries({"images": st.sampled_from(["val", "flat", "in", "x.npy"])},
                          optional={"limit": _SCALARS}),
    st.fixed_dictionaries({"npy": st.sampled_from(["x.npy", "y.npy", "a.npz"])},
                          optional={"labels": st.sampled_from(["y.npy", "val"]), "limit": st.integers(-1, 5)}),
    st.fixed_dictionaries({"imagenet": st.sampled_from(["in/ilsvrc_images", "val"]),
                           "ground_truth": st.sampled_from(["in/ilsvrc_validation_labels.txt", "notes.txt"]),
                           "model_labels": st.sampled_from(["in/model_output_labels.txt", "in"])},
                          optional={"limit": st.integers(0, 3)}))
_PREPROCESS = st.fixed_dictionaries({}, optional={
    "resize": st.one_of(st.integers(0, 300), st.lists(st.integers(-1, 300), max_size=3)),
    "center_crop": st.one_of(st.floats(-1, 2), st.integers(0, 2)), "scale": st.one_of(st.floats(0.001, 10), _SCALARS),
    "mean": st.one_of(st.floats(), st.lists(st.floats(-300, 300), max_size=5)),
    "std": st.one_of(st.floats(), st.lists(st.floats(-1, 300), max_size=5)),
    "channels": st.sampled_from(["rgb", "bgr", "gray", "RGB"]),
    "keras": st.sampled_from(["mobilenet_v2", "vgg16", "efficientnet", "alexnet"])})
_BLOCKS = st.fixed_dictionaries({"calibration": _SPLIT}, optional={
    "eval": st.one_of(_SPLIT, _VALUES), "fine_tune": _SPLIT, "preprocess": st.one_of(_PREPROCESS, _VALUES),
    "task": st.sampled_from(["classification", "regression", None, 3]), "top_k": st.integers(-1, 2000),
    "metric": st.sampled_from(["m:f", "a.b:c.d", "m", ":f", None])})


@pytest.fixture(scope="module")
def random_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("random-data")
    digits_folder(base / "val", per_class=1)
    rgb_image(base / "flat/a.png", np.zeros((2, 2, 3)))
    imagenet_layout(base / "in")
    np.save(base / "x.npy", np.zeros((3, 2)))
    np.save(base / "y.npy", np.arange(3))
    np.savez(base / "a.npz", x=np.zeros((3, 2)), y=np.arange(3))
    (base / "notes.txt").write_text("text")
    return base


@settings(derandomize=True, database=None, max_examples=200, deadline=None)
@given(raw=st.one_of(_BLOCKS, _BLOCKS, _BLOCKS, _BLOCKS, _VALUES,
                    st.dictionaries(st.sampled_from(_KEYS[:7]), _VALUES, max_size=5)))
def test_random_data_blocks_give_a_spec_or_one_config_error(random_base, raw):
    text = yaml.safe_dump({"data": raw})
    value = yaml.safe_load(text)["data"]
    try:
        spec = parse(value, random_base)
    except ConfigError as error:
        assert str(error).startswith(f"{PLAN}: {WHERE}")
        return
    assert isinstance(spec, DataSpec) and spec.splits()
    spec_key(spec)
    for name, src in spec.splits().items():
        for shape in ((4, 4, 3), (2,), (28, 28)):
            try:
                split = load_split(src, spec.preprocess, shape, PLAN, f"{WHERE}.{name}", task=spec.task)
            except ConfigError as error:
                assert str(error).startswith(f"{PLAN}: {WHERE}")
                continue
            assert split.x.dtype == np.float32 and split.x.shape[1:] == shape
            try:
                check_labels(split, 3, spec.task, PLAN, f"{WHERE}.{name}", top_k=spec.top_k)
            except ConfigError as error:
                assert str(error).startswith(f"{PLAN}: {WHERE}")


def test_a_split_too_large_for_memory_is_refused_with_the_limit_that_fits(tmp_path, monkeypatch):
    import data.load

    monkeypatch.setattr(data.load, "MAX_SPLIT_BYTES", 28 * 28 * 4 * 10)  # ten digits' worth
    np.savez(tmp_path / "big.npz", x=np.zeros((12, 28, 28), np.float32))
    with pytest.raises(ConfigError) as caught:
        load_split(DataSource("npz", tmp_path / "big.npz"), Preprocess(), (28, 28), PLAN, f"{WHERE}.eval")
    assert caught.value.key == f"{WHERE}.eval" and "give `limit: 10` or less" in str(caught.value)
    fits = load_split(DataSource("npz", tmp_path / "big.npz", limit=10), Preprocess(), (28, 28), PLAN, f"{WHERE}.eval")
    assert fits.x.shape == (10, 28, 28)
