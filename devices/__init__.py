"""Transports behind one protocol (devices.base). The registry maps an inventory `transport:`
to the module's config dataclass and device class, imported only when used."""

from __future__ import annotations

import importlib
from typing import Any

# transport name -> (module, config class, device class)
TRANSPORTS = {
    "local": ("devices.local", "LocalConfig", "LocalDevice"),
    "ssh": ("devices.ssh", "SSHConfig", "SSHDevice"),
    "adb": ("devices.adb", "ADBConfig", "ADBDevice"),
    "sim": ("devices.sim", "SimConfig", "SimDevice"),  # a device that only sleeps: benchmarks, rehearsals
}


def config_class(transport: str) -> type:
    module, config, _ = TRANSPORTS[transport]
    return getattr(importlib.import_module(module), config)


def open_device(config: Any, log=None):
    """The device for a parsed inventory entry (one of the transports' config dataclasses);
    `log` receives the transport's own messages (retries, transfers)."""
    module, _, device = TRANSPORTS[config.transport]
    return getattr(importlib.import_module(module), device)(config, log)
