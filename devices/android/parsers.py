"""Pure parsers of what an Android phone prints: `getprop`, `dumpsys thermalservice`, the
thermal zones the telemetry command lists, compound command output, `cpu/possible`."""

from __future__ import annotations

import re
from typing import Any

# Android's thermal status (PowerManager.THERMAL_STATUS_*), as `dumpsys thermalservice` prints it.
THERMAL_STATUS = ("none", "light", "moderate", "severe", "critical", "emergency", "shutdown")
PLAUSIBLE_C = (-30.0, 150.0)  # thermal zones outside this are not temperatures (disabled, raw ADC…)

_GETPROP_LINE = re.compile(r"^\[(?P<key>[^\]]+)\]: \[(?P<value>.*)\]\s*$")
_HAL_TEMPERATURE = re.compile(r"Temperature\{mValue=(?P<value>[-+0-9.eE]+|NaN), mType=(?P<type>-?\d+), "
                              r"mName=(?P<name>[^,]*), mStatus=(?P<status>-?\d+)\}")
_THERMAL_STATUS = re.compile(r"^\s*Thermal Status:\s*(\d+)", re.MULTILINE)


def parse_getprop(text: str) -> dict[str, str]:
    """`getprop` with no argument prints every property as `[key]: [value]`."""
    props = {}
    for line in text.splitlines():
        match = _GETPROP_LINE.match(line.strip("\r"))
        if match:
            props[match["key"]] = match["value"]
    return props


def parse_thermalservice(text: str) -> dict[str, Any]:
    """`dumpsys thermalservice` (Android 10+): the thermal status (0 none … 6 shutdown) and the
    temperatures the thermal HAL reports now (degrees C; the cached ones when HAL's are absent)."""
    status = _THERMAL_STATUS.search(text)
    current = text.split("Current temperatures from HAL:", 1)
    section = current[1] if len(current) == 2 else text
    temperatures = {}
    for match in _HAL_TEMPERATURE.finditer(section):
        if match["value"] != "NaN":
            temperatures[match["name"]] = {"value_c": float(match["value"]), "type": int(match["type"]),
                                           "status": int(match["status"])}
    code = int(status.group(1)) if status else None
    return {"status": code, "status_name": THERMAL_STATUS[code] if code is not None and code < len(THERMAL_STATUS)
            else None, "hal_temperatures": temperatures}


def parse_thermal_zones(text: str) -> dict[str, float]:
    """Lines `ZONE|TYPE|MILLIDEGREES` (what the telemetry command prints for each
    /sys/class/thermal zone) -> {"thermal_zoneN:TYPE": degrees C}, implausible readings dropped."""
    zones = {}
    for line in text.splitlines():
        parts = line.strip("\r").split("|")
        if len(parts) != 3 or not parts[2].lstrip("-").isdigit():
            continue
        celsius = int(parts[2]) / 1000.0
        if PLAUSIBLE_C[0] <= celsius <= PLAUSIBLE_C[1]:
            zones[f"{parts[0].rsplit('/', 1)[-1]}:{parts[1] or '?'}"] = celsius
    return zones


def sections(text: str, marker: str) -> dict[str, str]:
    """Split the output of a compound command whose parts each start with `marker NAME`."""
    parts: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        line = line.rstrip("\r")
        if line.startswith(marker):
            current = line[len(marker):].strip()
            parts[current] = []
        else:
            parts.setdefault(current, []).append(line)
    return {k: "\n".join(v) for k, v in parts.items()}


def cpu_count(possible: str) -> int | None:
    """`/sys/devices/system/cpu/possible` ("0-7", "0-3,6") -> the number of CPUs."""
    total = 0
    for part in possible.strip().split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return None
        total += int(hi) - int(lo) + 1 if hi else 1
    return total or None
