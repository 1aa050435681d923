"""The part of pycoral.utils.edgetpu the harness uses, as documented at
coral.ai/docs/reference/py/pycoral.utils/ and written in google-coral/pycoral
(pycoral/utils/edgetpu.py, src/coral_wrapper.cc) and google-coral/libedgetpu.

What is real:

- `make_interpreter(model_path_or_content, device=None, delegate=None)`: a `str` is a model path,
  `bytes` the model itself; `device` is None or "" (any Edge TPU), ":<N>" (the N-th of
  list_edge_tpus), "usb", "usb:<N>", "pci" or "pci:<N>", matched as libedgetpu's
  tflite/edgetpu_delegate_for_custom_op_tflite_plugin.cc matches it (N a decimal >= 0); with a
  `delegate` the device is ignored. A device string of another form, or a TPU that is not
  attached, makes libedgetpu return no delegate, and tflite_runtime's load_delegate raises
  `ValueError("Failed to load delegate from libedgetpu.so.1\\n")` (as the tracebacks in
  google-coral/tflite#55 and #63 show; the empty second line is the delegate's error text, which
  libedgetpu leaves empty);
- `list_edge_tpus()`: a list of {"type": "usb" | "pci", "path": ...}, with paths as libedgetpu
  enumerates them: /sys/bus/usb/devices/2-1 for a USB Accelerator (google-coral/tflite#63),
  /dev/apex_0 for a PCIe one (google-coral/edgetpu#491); further TPUs count on from there
  (2-2, /dev/apex_1: assumed);
- `get_runtime_version()`: "BuildLabel(<label>), RuntimeVersion(14)", the format of libedgetpu's
  EdgeTpuManagerDirect::Version, with the label of the released Debian package as printed in
  google-coral/edgetpu#491.

What is not: there is no Edge TPU and no libedgetpu. The attached TPUs are PYCORAL_STANDIN_TPUS,
a comma-separated list of "usb" and "pci" in enumeration order (default "usb"; empty: none).
`make_interpreter` returns an `ai_edge_litert.interpreter.Interpreter` that runs the whole model on
CPU kernels; the real one returns tflite_runtime's Interpreter with the Edge TPU delegate, which
runs the compiled `edgetpu-custom-op` on the TPU.
"""

from __future__ import annotations

import os
import re

LIBRARY = "libedgetpu.so.1"
RUNTIME_VERSION = "BuildLabel(COMPILER=6.3.0 20170516,DATE=redacted,TIME=redacted), RuntimeVersion(14)"
PATHS = {"usb": "/sys/bus/usb/devices/2-{}", "pci": "/dev/apex_{}"}
INDEX = re.compile(r"\s*[+-]?\d+\s*")  # what absl::SimpleAtoi accepts


def list_edge_tpus() -> list[dict[str, str]]:
    """The attached Edge TPUs, [{'type': 'usb'|'pci', 'path': ...}]."""
    kinds = [k.strip() for k in os.environ.get("PYCORAL_STANDIN_TPUS", "usb").split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(PATHS))
    if unknown:
        raise ValueError(f"PYCORAL_STANDIN_TPUS: {', '.join(unknown)} is not usb or pci")
    seen = {"usb": 0, "pci": 0}
    tpus = []
    for kind in kinds:
        number = seen[kind] + (kind == "usb")  # USB ports count from 1, apex nodes from 0
        seen[kind] += 1
        tpus.append({"type": kind, "path": PATHS[kind].format(number)})
    return tpus


def get_runtime_version() -> str:
    return RUNTIME_VERSION


def _opened(device: str) -> dict[str, str] | None:
    """The TPU a device string names, None when it names none."""
    tpus = list_edge_tpus()
    if device in ("", "usb", "pci"):
        return next((t for t in tpus if device in ("", t["type"])), None)
    kind, colon, index = device.partition(":")
    if not colon or kind not in ("", "usb", "pci") or not INDEX.fullmatch(index) or int(index) < 0:
        return None
    candidates = [t for t in tpus if kind in ("", t["type"])]
    return candidates[int(index)] if int(index) < len(candidates) else None


def make_interpreter(model_path_or_content: str | bytes, device: str | None = None, delegate=None):
    """An interpreter for the model on the Edge TPU `device` (here: on CPU kernels)."""
    from ai_edge_litert.interpreter import Interpreter

    if not delegate and _opened(device or "") is None:
        raise ValueError(f"Failed to load delegate from {LIBRARY}\n")
    if isinstance(model_path_or_content, bytes):
        return Interpreter(model_content=model_path_or_content)
    return Interpreter(model_path=model_path_or_content)
