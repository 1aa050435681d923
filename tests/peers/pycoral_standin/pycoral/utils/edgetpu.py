"""The part of pycoral.utils.edgetpu the harness uses, with its documented signatures
(coral.ai/docs/reference/py/pycoral.utils/): make_interpreter(model_path_or_content, device=None,
delegate=None), list_edge_tpus() -> [{'type': 'usb'|'pci', 'path': ...}], get_runtime_version().

What is real: the signatures, the device strings (":N", "usb", "usb:N", "pci", "pci:N"; None is
the first TPU), the shape of what list_edge_tpus returns, and the ValueError that
tflite_runtime's load_delegate raises when the TPU asked for is not there ("Failed to load
delegate from libedgetpu.so.1").

What is not: there is no TPU. The attached TPUs are PYCORAL_STANDIN_TPUS (comma-separated types,
default "usb"), and make_interpreter returns a LiteRT interpreter running the model on CPU
kernels; the real one returns tflite_runtime's, with the Edge TPU delegate."""

from __future__ import annotations

import os
import re

USB_PATHS = "/sys/bus/usb/devices/2-{}"
PCI_PATHS = "/dev/apex_{}"
DEVICE = re.compile(r"^(?:(usb|pci)(?::(\d+))?|:(\d+))$")


def list_edge_tpus():
    tpus, counts = [], {"usb": 0, "pci": 0}
    for kind in filter(None, os.environ.get("PYCORAL_STANDIN_TPUS", "usb").split(",")):
        path = (USB_PATHS if kind == "usb" else PCI_PATHS).format(counts[kind] + (kind == "usb"))
        counts[kind] += 1
        tpus.append({"type": kind, "path": path})
    return tpus


def get_runtime_version():
    return "BuildLabel(COMPILER=6.3.0 20170516,DATE=redacted,TIME=redacted), RuntimeVersion(14)"


def _find(device):
    tpus = list_edge_tpus()
    if device is None:
        return tpus[0] if tpus else None
    match = DEVICE.match(device)
    if not match:
        return None
    kind, index, any_index = match.groups()
    if any_index is not None:
        candidates, n = tpus, int(any_index)
    else:
        candidates, n = [t for t in tpus if t["type"] == kind], int(index or 0)
    return candidates[n] if n < len(candidates) else None


def make_interpreter(model_path_or_content, device=None, delegate=None):
    from ai_edge_litert.interpreter import Interpreter

    if delegate is None and _find(device) is None:
        raise ValueError("Failed to load delegate from libedgetpu.so.1\n")
    if isinstance(model_path_or_content, bytes):
        return Interpreter(model_content=model_path_or_content)
    return Interpreter(model_path=model_path_or_content)
