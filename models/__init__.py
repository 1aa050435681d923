"""The model zoo. Names resolve to sources without importing TensorFlow (only the build worker
touches TensorFlow), so the plan can be validated and the cache checked in a blink."""

from __future__ import annotations

from models.base import EvalSet, FineTune, Source

# zoo name -> what it is (for --help and error messages)
ZOO = {
    "digits_cnn": "the seeds' small CNN, trained on scikit-learn digits (accuracy on a held-out split)",
    "mobilenet_v2": "Keras MobileNetV2, weights=None, 224x224 (fidelity against fp32)",
    "efficientnet_b0": "Keras EfficientNetB0, weights=None, 224x224 (fidelity against fp32)",
}
KERAS_APPS = ("mobilenet_v2", "efficientnet_b0")  # take `weights: imagenet` where it can be downloaded


def resolve(name: str, kind: str, zoo: str | None = None, path=None, data=None, plan: str = "",
            where: str = "", weights: str | None = None) -> Source:
    """The source for a plan's model entry, named as the plan names it; with the user's `data`
    (a data.DataSpec; errors name `plan` and `where`) its calibration, eval and fine-tune splits."""
    if kind == "zoo" and zoo == "digits_cnn":
        from models.digits import DigitsCNN

        source: Source = DigitsCNN()
    elif kind == "zoo":
        from models.keras_apps import KerasApplication

        source = KerasApplication(zoo, weights, plan, where)
    else:
        from models.byo import FileSource

        source = FileSource(name, path, kind)
    source.name = name
    if kind == "zoo":
        source.known_io = zoo_io(zoo)
    if data is not None:
        from models.user_data import WithData

        source = WithData(source, data, plan, where)
    return source


def zoo_io(zoo: str) -> tuple[tuple[int, ...], int]:
    """(input shape without the batch dimension, output units) of a zoo model as its definition
    builds it, without TensorFlow: digits_cnn takes size x size and ends in Dense(10) (models/digits.py
    build); a Keras application takes size x size x 3 and has 1000 classes (models/keras_apps.py
    make). tests/test_data.py holds these against the built models."""
    if zoo == "digits_cnn":
        from models.digits import SETTINGS

        return (SETTINGS["size"], SETTINGS["size"]), 10
    from models.keras_apps import SETTINGS

    return (SETTINGS["size"], SETTINGS["size"], 3), 1000


__all__ = ["ZOO", "EvalSet", "FineTune", "Source", "resolve", "zoo_io"]
