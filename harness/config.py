"""Typed configuration at the boundary: inventory and plans are parsed once into frozen dataclasses.
Unknown keys, unknown names and wrong types are rejected with the file and the key named; code
past this module never sees a raw dict."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import types
import typing
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import devices
import models
from devices import coral
from devices.base import MeasurementProtocol
from harness.config_checks import checked_number, clip, first_repeat, key_text, model_file, refuse_repeats, show
from harness.edgetpu import CompilerSettings
from harness.errors import ConfigError
from harness.lock import machine_of
from harness.variants import ALL as ALL_VARIANTS
from harness.variants import GIVEN
from lab.placement import LAB_HOST

DELEGATES = ("cpu", "xnnpack", "reference", "gpu", "nnapi", "edgetpu")
EMBEDDED_INVENTORY = """\
# The embedded default: this host only, so a sweep runs anywhere.
devices:
  - name: local
    transport: local
    delegates: [cpu, xnnpack]
"""


@dataclass(frozen=True)
class Inventory:
    source: str
    devices: tuple[Any, ...]  # one transport config dataclass per device
    # device name -> the lab host it is attached to (`lab_host:`); a device without one is reached from here
    lab_hosts: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def get(self, name: str) -> Any:
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(name)

    def machine(self, name: str) -> str:
        """The machine a device measures on (harness.lock.machine_of), qualified by its lab host:
        `local` on lab host lab-a is `lab-a/local`, not this host."""
        machine = machine_of(self.get(name))
        return f"{self.lab_hosts[name]}/{machine}" if name in self.lab_hosts else machine


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str  # zoo | tflite | keras | saved_model
    variants: tuple[str, ...]
    zoo: str | None = None
    path: Path | None = None
    data: Any = None  # data.DataSpec: the user's calibration / eval / fine-tune data (`data:`), or None
    weights: str | None = None  # a Keras application's trained weights (`weights: imagenet`); None: seeded


@dataclass(frozen=True)
class Target:
    device: str
    delegates: tuple[str, ...] | None = None  # default: what the inventory says the device offers
    threads: tuple[int, ...] | None = None  # default: the plan's `threads`
    nnapi_accelerator_name: str | None = None  # the NNAPI device for `nnapi` cells, e.g. google-edgetpu


@dataclass(frozen=True)
class Timeouts:
    run_timeout_s: float = 600.0
    convert_timeout_s: float = 3600.0


@dataclass(frozen=True)
class Plan:
    name: str
    source: str
    sha256: str
    models: tuple[ModelEntry, ...]
    targets: tuple[Target, ...]
    protocol: MeasurementProtocol
    timeouts: Timeouts
    threads: tuple[int, ...] = (1,)  # for targets that do not list their own
    quarantine_after: int = 3  # consecutive device failures that end a device's part of the sweep
    description: str | None = None
    edgetpu_compiler: CompilerSettings = CompilerSettings()  # for `edgetpu` cells (harness/edgetpu.py)


# -- parsing helpers ---------------------------------------------------------------------------


def _read(path: Path | str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), None, "no such file") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), None, f"cannot read: {exc}") from None


def _load_yaml(source: str, data: bytes | str) -> Any:
    """The document in `data` (UTF-8, or UTF-16 with a BOM); anything PyYAML cannot read is malformed."""
    import yaml

    try:
        return yaml.load(data, _loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(source, None, f"malformed YAML{where}: {clip(problem, 200)}") from None
    except RecursionError:  # PyYAML's composer recurses once per level of nesting
        raise ConfigError(source, None, "malformed YAML: nested too deeply") from None


@functools.cache
def _loader() -> type:
    """yaml.SafeLoader whose scalars that their tag cannot take (`!!int abc`, `2001-02-30`, an int of
    5000 digits) are YAML errors with a line, not ValueError, KeyError or AttributeError from PyYAML."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_object(self, node, deep=False):
            try:
                return super().construct_object(node, deep)
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
                tag = node.tag.replace("tag:yaml.org,2002:", "!!")
                why = f" ({clip(str(exc))})" if isinstance(exc, (ValueError, OverflowError)) else ""
                problem = f"not a valid {tag}: {show(node.value)}{why}"
                raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None

        def construct_mapping(self, node, deep=False):
            """A key written twice in one mapping is an error, not the last one silently winning
            (`variants:` twice measures only the second list)."""
            if isinstance(node, yaml.MappingNode):
                seen: dict[tuple[str, str], Any] = {}
                for key, _ in node.value:
                    if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                        continue
                    first = seen.setdefault((key.tag, key.value), key.start_mark)
                    if first is not key.start_mark:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"{show(key.value)} is given twice in one mapping (first at line "
                                        f"{first.line + 1})", key.start_mark)
            return super().construct_mapping(node, deep)

    return Loader


def _coerce(value: Any, hint: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _coerce(value, options[0], source, key)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list) or not value:
            raise ConfigError(source, key, f"expected a non-empty list, got {show(value)}")
        return tuple(_coerce(v, item, source, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return build(hint, value, source, key)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return checked_number(value, float, source, key)
    if hint in (str, int, bool) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return checked_number(value, int, source, key) if hint is int else value
    raise ConfigError(source, key, f"expected {getattr(hint, '__name__', hint)}, got {show(value)}")


def build(cls: type, raw: Any, source: str, where: str) -> Any:
    """A dataclass from a YAML mapping: unknown keys, missing keys and wrong types are errors."""
    if not isinstance(raw, dict):
        raise ConfigError(source, where or None, f"expected a mapping, got {show(raw)}")
    known = {f.name: f for f in fields(cls)}
    prefix = f"{where}." if where else ""
    for key in raw:
        if key not in known:
            raise ConfigError(source, f"{prefix}{key_text(key)}", f"unknown key (known: {', '.join(known)})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in known.items():
        if name in raw:
            values[name] = _coerce(raw[name], hints[name], source, f"{prefix}{name}")
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(source, f"{prefix}{name}", "missing required key")
    return cls(**values)


def _positive(obj: Any, source: str, where: str, names: tuple[str, ...], allow_zero: tuple[str, ...] = ()):
    for name in names:
        value = getattr(obj, name)
        if value < 0 or (value == 0 and name not in allow_zero):
            raise ConfigError(source, f"{where}.{name}", f"must be {'>= 0' if name in allow_zero else '> 0'}")


# -- inventory ---------------------------------------------------------------------------------


def load_inventory(path: Path | str | None) -> Inventory:
    """The inventory at `path`; None means the embedded default (this host only)."""
    source = str(path) if path is not None else "<embedded inventory>"
    raw = _load_yaml(source, EMBEDDED_INVENTORY if path is None else _read(path))
    if not isinstance(raw, dict):
        raise ConfigError(source, None, "expected a mapping with the single key 'devices'")
    for key in raw:
        if key != "devices":
            raise ConfigError(source, key_text(key), "unknown key (known: devices)")
    if "devices" not in raw:
        raise ConfigError(source, "devices", "missing required key")
    if not isinstance(raw["devices"], list) or not raw["devices"]:
        raise ConfigError(source, "devices", "expected a non-empty list of devices")
    parsed, names, lab_hosts = [], {}, {}
    for i, entry in enumerate(raw["devices"]):
        where = f"devices[{i}]"
        host = None
        if isinstance(entry, dict) and "lab_host" in entry:  # where it is, not what it is: no transport's key
            entry = dict(entry)
            host = entry.pop("lab_host")
            if not isinstance(host, str) or not LAB_HOST.fullmatch(host):
                raise ConfigError(source, f"{where}.lab_host", f"expected a lab host's name (letters, digits, '_', "
                                                               f"'.', '-', at most 63), got {show(host)}")
        transport = entry.get("transport") if isinstance(entry, dict) else None
        if not isinstance(transport, str) or transport not in devices.TRANSPORTS:
            raise ConfigError(source, f"{where}.transport",
                              f"unknown transport {show(transport)} (known: {', '.join(devices.TRANSPORTS)})")
        config = build(devices.config_class(transport), entry, source, where)
        if not config.name.strip():
            raise ConfigError(source, f"{where}.name", "must not be empty")
        if config.name in names:
            raise ConfigError(source, f"{where}.name",
                              f"duplicate device name {show(config.name)} (first at devices[{names[config.name]}])")
        _check_strings(config, source, where)
        _check_numbers(config, source, where)
        if hasattr(config, "check"):  # what only the transport knows (an address, a file, a mask)
            try:
                config.check(source, where)
            except (OSError, ValueError, RuntimeError) as exc:  # a host path this OS cannot take
                raise ConfigError(source, where, f"cannot check this device: {clip(str(exc))}") from None
        config = coral.check_accelerator(config, source, where)
        for delegate in config.delegates:
            if delegate not in DELEGATES:
                raise ConfigError(source, f"{where}.delegates",
                                  f"unknown delegate {show(delegate)} (known: {', '.join(DELEGATES)})")
        refuse_repeats(config.delegates, source, f"{where}.delegates")
        names[config.name] = i
        if host is not None:
            lab_hosts[config.name] = host
        parsed.append(config)
    return Inventory(source, tuple(parsed), lab_hosts)


def _check_strings(obj: Any, source: str, where: str) -> None:
    """No NUL in a name, an address or a path: no OS, shell or device takes one."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_strings(value, source, f"{where}.{f.name}")
        for i, text in enumerate(value if isinstance(value, tuple) else (value,)):
            if isinstance(text, str) and "\x00" in text:
                key = f"{where}.{f.name}" + (f"[{i}]" if isinstance(value, tuple) else "")
                raise ConfigError(source, key, f"must not contain a NUL character, got {show(text)}")


def _check_numbers(obj: Any, source: str, where: str) -> None:
    """Durations (`*_s`, `*_c` aside) must be > 0, counts >= 0, ports 1..65535; nested sections too."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_numbers(value, source, f"{where}.{f.name}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if f.name.endswith("_s") and value <= 0:
                raise ConfigError(source, f"{where}.{f.name}", f"must be > 0 (seconds), got {value!r}")
            if f.name == "port" and not 0 < value < 65536:
                raise ConfigError(source, f"{where}.{f.name}", f"not a TCP port: {value!r}")
            if f.name == "retries" and value < 0:
                raise ConfigError(source, f"{where}.{f.name}", f"must be >= 0, got {value!r}")


# -- plans -------------------------------------------------------------------------------------


def _model_entry(raw: Any, source: str, where: str, base: Path) -> ModelEntry:
    if not isinstance(raw, dict):
        raise ConfigError(source, where, f"expected a mapping with 'model' or 'path', got {show(raw)}")
    for key in raw:
        if key not in ("model", "path", "name", "variants", "data", "weights"):
            raise ConfigError(source, f"{where}.{key_text(key)}",
                              "unknown key (known: model, path, name, variants, data, weights)")
    if ("model" in raw) == ("path" in raw):
        raise ConfigError(source, where, "give exactly one of 'model' (a zoo name) or 'path' (a file)")
    if "model" in raw:
        zoo = raw["model"]
        if not isinstance(zoo, str) or zoo not in models.ZOO:
            raise ConfigError(source, f"{where}.model", f"unknown model {show(zoo)} (known: {', '.join(models.ZOO)})")
        kind, path, name = "zoo", None, raw.get("name", zoo)
    else:
        if not isinstance(raw["path"], str):
            raise ConfigError(source, f"{where}.path", f"expected a path, got {show(raw['path'])}")
        kind, path = model_file(raw["path"], base, source, f"{where}.path")
        name = raw.get("name", path.stem if path.suffix else path.name)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(source, f"{where}.name", f"expected a non-empty name, got {show(name)}")
    allowed = (GIVEN,) if kind == "tflite" else ALL_VARIANTS
    variants = raw.get("variants", "all")
    if variants == "all":
        variants = list(allowed)
    if not isinstance(variants, list) or not variants:
        raise ConfigError(source, f"{where}.variants", f"expected 'all' or a list of variants, got {show(variants)}")
    for i, v in enumerate(variants):
        if not isinstance(v, str) or v not in allowed:
            why = " (a .tflite file is benchmarked as it is)" if kind == "tflite" else ""
            raise ConfigError(source, f"{where}.variants[{i}]",
                              f"unknown variant {show(v)}{why} (known: {', '.join(allowed)})")
    refuse_repeats(variants, source, f"{where}.variants")
    spec = _data(raw.get("data"), kind, base, source, f"{where}.data") if "data" in raw else None
    weights = raw.get("weights")
    if weights is not None and (kind != "zoo" or raw["model"] not in models.KERAS_APPS):
        raise ConfigError(source, f"{where}.weights", "trained weights are for the Keras applications only "
                          f"({', '.join(models.KERAS_APPS)}), not {show(raw.get('model') or str(path))}")
    if weights is not None and weights != "imagenet":
        raise ConfigError(source, f"{where}.weights", f"expected 'imagenet' (or no weights: for seeded ones), "
                          f"got {show(weights)}")
    return ModelEntry(name=name, kind=kind, variants=tuple(variants), zoo=raw.get("model"), path=path, data=spec,
                      weights=weights)


def _data(raw: Any, kind: str, base: Path, source: str, where: str):
    """`data:`: parsed and its files checked (data/); a given .tflite is measured as it is, so only
    its evaluation set can be the user's; a metric entry point must import."""
    from data import check_metric, parse_data

    spec = parse_data(raw, base, source, where)
    if kind == "tflite":
        for split in ("calibration", "fine_tune"):
            if getattr(spec, split) is not None:
                raise ConfigError(source, f"{where}.{split}", "a .tflite file is measured as it is: "
                                  "only its eval data can be given (calibration and fine-tuning need a Keras model)")
    if spec.metric:
        check_metric(spec, source, where, base)
    return spec


def load_plan(path: Path | str, inventory: Inventory) -> Plan:
    source = str(path)
    data = _read(path)
    raw = _load_yaml(source, data)
    if not isinstance(raw, dict):
        raise ConfigError(source, None, "expected a mapping with at least 'models'")
    known = ("name", "description", "models", "targets", "threads", "protocol", "timeouts", "quarantine_after",
             "edgetpu_compiler")
    for key in raw:
        if key not in known:
            raise ConfigError(source, key_text(key), f"unknown key (known: {', '.join(known)})")
    if not isinstance(raw.get("models"), list) or not raw["models"]:
        raise ConfigError(source, "models", "expected a non-empty list of models")
    base = Path(path).resolve().parent
    entries = tuple(_model_entry(m, source, f"models[{i}]", base) for i, m in enumerate(raw["models"]))
    repeat = first_repeat([entry.name for entry in entries])
    if repeat:
        i, first = repeat
        raise ConfigError(source, f"models[{i}].name",
                          f"duplicate model name {show(entries[i].name)} (first at models[{first}])")
    targets = _targets(raw.get("targets"), inventory, source)
    threads = _thread_counts(_coerce(raw.get("threads", [1]), tuple[int, ...], source, "threads"), source, "threads")
    protocol = build(MeasurementProtocol, _section(raw, "protocol"), source, "protocol")
    _positive(protocol, source, "protocol",
              ("warmup_runs", "warmup_min_secs", "num_runs", "min_secs", "max_secs", "repetitions"),
              allow_zero=("warmup_runs", "warmup_min_secs", "min_secs"))
    if protocol.min_secs > protocol.max_secs:
        raise ConfigError(source, "protocol.max_secs", f"{protocol.max_secs:g} s is below min_secs "
                                                       f"{protocol.min_secs:g} s: a launch could not satisfy both")
    timeouts = build(Timeouts, _section(raw, "timeouts"), source, "timeouts")
    _positive(timeouts, source, "timeouts", ("run_timeout_s", "convert_timeout_s"))
    quarantine_after = _coerce(raw.get("quarantine_after", 3), int, source, "quarantine_after")
    if quarantine_after < 1:
        raise ConfigError(source, "quarantine_after", f"must be >= 1, got {quarantine_after}")
    compiler = _compiler_settings(raw.get("edgetpu_compiler"), source)
    name = raw.get("name", Path(path).stem)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(source, "name", f"expected a non-empty string, got {show(name)}")
    description = _coerce(raw.get("description"), str | None, source, "description")
    return Plan(name=name, source=source, sha256=hashlib.sha256(data).hexdigest(), models=entries,
                targets=targets, protocol=protocol, timeouts=timeouts, threads=threads,
                quarantine_after=quarantine_after, description=description, edgetpu_compiler=compiler)


def _section(raw: dict, key: str) -> Any:
    """A plan's optional mapping: absent or empty (`key:` alone) is the defaults."""
    return {} if raw.get(key) is None else raw[key]


def _compiler_settings(raw: Any, source: str) -> CompilerSettings:
    """`edgetpu_compiler: PATH` or a mapping of CompilerSettings' keys."""
    if raw is None:
        return CompilerSettings()
    if isinstance(raw, str):
        raw = {"path": raw}
    settings = build(CompilerSettings, raw, source, "edgetpu_compiler")
    for key, problem in settings.problems():
        raise ConfigError(source, f"edgetpu_compiler.{key}", problem)
    return settings


def _targets(raw: Any, inventory: Inventory, source: str) -> tuple[Target, ...]:
    if raw is None:
        return tuple(Target(device=d.name) for d in inventory.devices)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(source, "targets", "expected a non-empty list of targets")
    names = [d.name for d in inventory.devices]
    targets = []
    for i, entry in enumerate(raw):
        target = build(Target, entry, source, f"targets[{i}]")
        if target.device not in names:
            raise ConfigError(source, f"targets[{i}].device", f"no device {show(target.device)} in "
                              f"{inventory.source} (known: {', '.join(names)})")
        for delegate in target.delegates or ():
            if delegate not in DELEGATES:
                raise ConfigError(source, f"targets[{i}].delegates",
                                  f"unknown delegate {show(delegate)} (known: {', '.join(DELEGATES)})")
        refuse_repeats(target.delegates or (), source, f"targets[{i}].delegates")
        _thread_counts(target.threads or (), source, f"targets[{i}].threads")
        targets.append(target)
    repeat = first_repeat([t.device for t in targets])
    if repeat:
        i, first = repeat
        raise ConfigError(source, f"targets[{i}].device",
                          f"duplicate target device {show(targets[i].device)} (first at targets[{first}])")
    return tuple(targets)


def _thread_counts(threads: tuple[int, ...], source: str, key: str) -> tuple[int, ...]:
    if any(t < 1 for t in threads):
        raise ConfigError(source, key, "thread counts must be >= 1")
    refuse_repeats(threads, source, key)
    return threads


def select_devices(plan: Plan, inventory: Inventory, wanted: str | None) -> tuple[Target, ...]:
    """The plan's targets, narrowed to `--devices a,b` when given."""
    if wanted is None:
        return plan.targets
    names = [n.strip() for n in wanted.split(",")]
    known = {t.device for t in plan.targets}
    if not any(names) or not all(names):
        raise ConfigError("--devices", None, f"expected device names separated by commas, got {wanted!r} "
                                             f"(targets of plan {plan.source}: {', '.join(sorted(known))})")
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError("--devices", name, "listed twice")
        if name not in known:
            raise ConfigError("--devices", name, f"not a target of plan {plan.source} (targets: {', '.join(sorted(known))})")
    return tuple(t for t in plan.targets if t.device in names)
