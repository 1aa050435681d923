"""Coral Edge TPUs: an accelerator on a host the harness reaches locally or over SSH.

A Coral USB Accelerator, an M.2/PCIe module, or the Dev Board's built-in TPU is not a transport:
the host it hangs off runs `runner.py` as any Linux board does, and its inventory entry says that
it has one:

    - name: coral-usb
      transport: local            # or ssh; the Coral Dev Board is an ssh host with a pci TPU
      accelerator: edgetpu
      edgetpu_device: usb:0       # libedgetpu's device string: usb, usb:N, pci, pci:N, :N

Such a device offers the `edgetpu` delegate in addition to the delegates it lists. The runner
opens the TPU with pycoral's `make_interpreter` where pycoral is installed, and otherwise loads
`libedgetpu.so.1` (`libedgetpu.1.dylib`, `edgetpu.dll`) as a delegate with the device option.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from harness.errors import ConfigError

ACCELERATORS = ("edgetpu",)
# libedgetpu / pycoral device strings (coral.ai/docs/reference/py/pycoral.utils/#pycoral.utils.edgetpu.make_interpreter)
DEVICE_STRING = re.compile(r"^(?:usb|pci)(?::\d+)?$|^:\d+$")
INSTALL_HINT = ("the Edge TPU runtime from Coral's apt repository: echo 'deb https://packages.cloud.google.com/apt "
                "coral-edgetpu-stable main' | sudo tee /etc/apt/sources.list.d/coral-edgetpu.list && curl "
                "https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add - && sudo apt-get "
                "update && sudo apt-get install libedgetpu1-std (optionally python3-pycoral); "
                "see https://coral.ai/docs/accelerator/get-started/")


def check_accelerator(config: Any, source: str, where: str) -> Any:
    """The entry with its accelerator keys checked, and `edgetpu` added to its delegates when it
    has a TPU. A config without these keys (an ADB phone) is returned as it is."""
    if not hasattr(config, "accelerator"):
        return config
    if config.accelerator is not None and config.accelerator not in ACCELERATORS:
        raise ConfigError(source, f"{where}.accelerator",
                          f"unknown accelerator {config.accelerator!r} (known: {', '.join(ACCELERATORS)})")
    if config.edgetpu_device is not None:
        if config.accelerator != "edgetpu":
            raise ConfigError(source, f"{where}.edgetpu_device", "needs `accelerator: edgetpu`")
        if not DEVICE_STRING.match(config.edgetpu_device):
            raise ConfigError(source, f"{where}.edgetpu_device",
                              f"not an Edge TPU device string: {config.edgetpu_device!r} "
                              "(usb, usb:N, pci, pci:N or :N)")
    if config.accelerator is None:
        if "edgetpu" in config.delegates:
            raise ConfigError(source, f"{where}.delegates",
                              "the edgetpu delegate needs `accelerator: edgetpu` on the device")
        return config
    if "edgetpu" in config.delegates:
        return config
    return dataclasses.replace(config, delegates=(*config.delegates, "edgetpu"))


def delegate_options(config: Any, delegate: str) -> dict[str, str]:
    """What the runner passes to the Edge TPU delegate of this device (its device string)."""
    if delegate == "edgetpu" and getattr(config, "edgetpu_device", None):
        return {"device": config.edgetpu_device}
    return {}


def describe(probe: dict[str, Any] | None) -> tuple[str, str | None]:
    """A one-line state of a host's Edge TPU side from the runner's probe, and what to do when
    the TPU cannot be used (None when it can)."""
    if not probe:
        return "not probed", None
    tpus = probe.get("tpus") or []
    found = ", ".join(f"{t['type']}:{t.get('path', '?')}" for t in tpus) or "no Edge TPU attached"
    if probe.get("pycoral"):
        api = f"pycoral {probe['pycoral']}"
    elif probe.get("library_loads"):
        api = probe["library"]
    else:
        return (f"{found}; no runtime", f"{probe.get('library')} does not load "
                f"({probe.get('library_error')}) and pycoral is not installed; install {INSTALL_HINT}")
    version = f" ({probe['runtime_version']})" if probe.get("runtime_version") else ""
    return f"{found}; {api}{version}", None if tpus else "the runtime is there but no Edge TPU was found"
