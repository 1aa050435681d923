"""Property-based tests of the plan and inventory loaders: whatever the file holds, loading it gives
a valid Plan/Inventory or one ConfigError that names the file (and the key, where a key is to
blame), never another exception. The examples start from the repository's own plans and
inventories (plans/*.yaml, inventory.yaml, README.md's, the tests') and mutate them."""

from __future__ import annotations

import copy
import collections.abc
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import tempfile
import types
import typing
import zipfile
from pathlib import Path

import numpy
import pytest
import yaml
from hypothesis import HealthCheck, currently_in_test_context, event, given, note, settings
from hypothesis import strategies as st

from conftest import ROOT
from harness.config import DELEGATES, EMBEDDED_INVENTORY, Inventory, Plan, key_text, load_inventory, load_plan
from harness.errors import ConfigError

# Reproducible in CI (derandomized), nothing written into the repository: no example database, and
# Hypothesis's caches (unicode tables, constants) in the temporary directory, not in ./.hypothesis.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "hypothesis-harness"))
EXAMPLES = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])
TFLITE = b"\x1c\x00\x00\x00TFL3" + bytes(32)
_archive = io.BytesIO()
with zipfile.ZipFile(_archive, "w") as _zip:
    _zip.writestr("config.json", "{}")
KERAS = _archive.getvalue()
# A 1x1 PNG (the loaders list images by name; nothing decodes them before measuring).
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


def readme_yaml(section: str) -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"```yaml\n(.*?)```", text[text.index(f"## {section}\n"):], re.S).group(1)


# README's inventory names a benchmark_model binary on its author's host; ours is on the phone.
README_INVENTORY = readme_yaml("Inventory").replace(
    "benchmark_model: ~/bin/android_aarch64_benchmark_model", "benchmark_model: on_device:/data/local/tmp/bm")
INVENTORY_SEEDS = [
    (ROOT / "inventory.yaml").read_text(), README_INVENTORY, EMBEDDED_INVENTORY,
    "devices:\n  - name: pi4\n    transport: ssh\n    host: 192.168.1.40\n    user: pi\n"
    "    identity_file: ~/.ssh/id_ed25519\n    cooldown: {max_temp_c: 55, timeout_s: 120}\n",
    "devices:\n  - name: phone\n    transport: adb\n    serial: ABC123\n    cpu_mask: f0\n"
    "    delegates: [cpu, gpu]\n  - name: a\n    transport: local\n    delegates: [cpu]\n",
    "devices:\n  - {name: pixel, transport: adb, serial: ABC123, lab_host: lab-a}\n"
    "  - {name: rig, transport: sim, launch_s: 0.5, lab_host: lab.b_2}\n",
]
# README's plan sets delegate_search_step without search_delegate, which the loader refuses (-k needs -d).
README_PLAN = readme_yaml("Plans").replace("search_delegate: false", "search_delegate: true ")
PLAN_SEEDS = [
    (ROOT / "plans/quick.yaml").read_text(), (ROOT / "plans/nightly.yaml").read_text(), README_PLAN,
    "models:\n  - model: digits_cnn\n",
    "models:\n  - path: m.tflite\n  - path: m.keras\n    name: keras\n    variants: [fp32, int8]\n"
    "  - path: sm\n    name: saved\ntargets:\n  - device: local\n    threads: [1, 2]\n  - device: pixel7\n"
    "    delegates: [gpu, nnapi]\nedgetpu_compiler: /usr/bin/edgetpu_compiler\nquarantine_after: 2\n",
    # The user's data (README's second plan, with files of the `work` fixture): every kind of split.
    "models:\n  - model: digits_cnn\n    data:\n      eval: data/val\n"
    "      calibration: {images: data/train, limit: 300}\n      fine_tune: {images: data/train, limit: 2}\n"
    "      preprocess: {resize: [8, 8], center_crop: 0.875, scale: 0.0039, mean: [0.5], std: 0.25, channels: rgb}\n"
    "      top_k: 3\n      metric: team_metrics:f1\n"
    "  - path: m.keras\n    name: arrays\n    variants: [fp32, int8]\n"
    "    data: {eval: {npy: data/x.npy, labels: data/y.npy, limit: 5}, calibration: data/train.npz,\n"
    "           preprocess: {keras: mobilenet_v2}, task: classification}\n"
    "  - path: m.tflite\n    name: given\n    data: {eval: {imagenet: data/inet, ground_truth: data/truth.txt,\n"
    "           model_labels: data/labels.txt}}\n",
]

# -- values, keys and mutations of parsed documents ----------------------------------------------


def walk(node, path=()):
    """(path, node) for every node; a path is a tuple of ("k", key) and ("i", index) steps."""
    yield path, node
    if isinstance(node, dict):
        for key, value in list(node.items()):
            yield from walk(value, (*path, ("k", key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, (*path, ("i", i)))


PARSED_SEEDS = [yaml.safe_load(text) for text in INVENTORY_SEEDS + PLAN_SEEDS]
KEY_NAMES = sorted({k for doc in PARSED_SEEDS for _, n in walk(doc) if isinstance(n, dict) for k in n})
LEAVES = sorted({n for doc in PARSED_SEEDS for _, n in walk(doc) if isinstance(n, (str, int, float))}, key=repr)
NASTY_STRINGS = ["", " ", "\x00", "a\x00b", "\x07\x1b[31m", "\u202eevil\u202c", "\u200f\u05d0\u05d1", "🚀", "\ud800",
                 "x\udfffy", "\ufeff", "\u2028", "x" * 300, "a/" * 150, "~nosuchuser_zz9/m.tflite", "all", "usb:0",
                 "on_device:", "m.tflite", "sm", ".", "..", "/", "1e308", "null", "nan"]
NUMBERS = [0, -1, 1, 2, 2**63, -2**63 - 1, 10**40, -10**40, 10**400, 2**1024, 1e308, -1e308, 1e-308, math.nan,
           math.inf, -math.inf, 0.5, -0.0, 65535, 65536, True, False]
characters = st.one_of(st.characters(), st.characters(categories=["Cs", "Cc", "Cf"]),
                       st.sampled_from("\u202e\u200f\ufeff🚀\x85\u2028\t\n"))
strings = st.one_of(st.text(characters, max_size=12), st.sampled_from(NASTY_STRINGS))
scalars = st.one_of(st.sampled_from(LEAVES), st.sampled_from(NUMBERS), strings, st.none(), st.booleans(),
                    st.integers(), st.floats())
hashable_keys = st.one_of(strings, st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False))
values = st.one_of(scalars, st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(hashable_keys, st.sampled_from(KEY_NAMES)), inner,
                                                 max_size=4)), max_leaves=8))


def at(node, path):
    for _, step in path:
        node = node[step]
    return node


def put(doc, path, value):
    if not path:
        return value
    at(doc, path[:-1])[path[-1][1]] = value
    return doc


def render(path) -> str:
    """A path as the loaders name keys: models[1].variants."""
    text = ""
    for kind, step in path:
        text += f"[{step}]" if kind == "i" else (f".{key_text(step)}" if text else key_text(step))
    return text


OPS = ("replace", "delete", "repeat", "unknown_key", "list_for_map", "map_for_list", "nest", "rename", "copy")


def mutate(data, doc, op: str):
    """(the document with one mutation applied, the path it was applied at); not at the top, which
    test_random_text replaces whole."""
    paths = [p for p, _ in walk(doc)][1:]
    if not paths:  # earlier mutations left nothing below the top
        return data.draw(values, label="value"), ()
    path = data.draw(st.sampled_from(paths), label="path")
    node = at(doc, path)
    if op == "delete":
        del at(doc, path[:-1])[path[-1][1]]
        return doc, path
    if op == "repeat":
        lists = [p for p, n in walk(doc) if isinstance(n, list) and n]
        if lists:
            path = data.draw(st.sampled_from(lists), label="list")
            items = at(doc, path)
            item = copy.deepcopy(items[data.draw(st.integers(0, len(items) - 1))])
            items.insert(data.draw(st.integers(0, len(items))), item)
            return doc, path
    if op == "unknown_key":
        maps = [p for p, n in walk(doc) if isinstance(n, dict)]
        if maps:
            path = data.draw(st.sampled_from(maps), label="mapping")
            known = {k for _, n in walk(doc) if isinstance(n, dict) for k in n} | set(KEY_NAMES)
            key = data.draw(hashable_keys.filter(lambda k: k not in known and not str(k).startswith("<<")))
            at(doc, path)[key] = data.draw(values)
            return doc, (*path, ("k", key))
    if op == "list_for_map" and isinstance(node, dict):
        shapes = [[node], list(node.values()), [[k, v] for k, v in node.items()]]
        return put(doc, path, data.draw(st.sampled_from(shapes))), path
    if op == "map_for_list" and isinstance(node, list):
        return put(doc, path, data.draw(st.sampled_from([dict(enumerate(node)), {"items": node}]))), path
    if op == "nest":
        value, as_list = node, data.draw(st.booleans())
        for _ in range(data.draw(st.sampled_from([1, 2, 5, 50, 150]), label="depth")):
            value = [value] if as_list else {"k": value}
        return put(doc, path, value), path
    if op == "rename" and path[-1][0] == "k":
        parent, new = at(doc, path[:-1]), data.draw(hashable_keys, label="new key")
        if new not in parent:
            parent[new] = parent.pop(path[-1][1])
            return doc, path
    if op == "copy":  # a subtree of the document where another one was
        source = data.draw(st.sampled_from(paths), label="from")
        if source[:len(path)] != path:
            return put(doc, path, copy.deepcopy(at(doc, source))), path
    return put(doc, path, data.draw(values, label="value")), path


# What YAML can say that a dump of plain data never does: tags, aliases, merge keys, timestamps,
# directives, BOMs, huge literals, deep nesting, several documents.
SNIPPETS = ["!!int abc", "!!float x", "!!timestamp 2001-02-30", "2001-02-30", "2001-12-14t21:59:43.10-05:00",
            "!!binary aGVsbG8=", "!!python/object:os.system {}", "!!python/name:os.system", "!!set {a, b}",
            "!!omap [a: 1, a: 2]", "!!str [1]", "&a [*a]", "*undefined", "&x {k: *x}", "0x" + "f" * 4000,
            "1" * 5000, "1e99999", "-.inf", ".nan", "0o777", "0b1010", "1_000", "[" * 600 + "]" * 600,
            "- " * 400 + "x", "{a: " * 400 + "1" + "}" * 400, "? [1, 2]\n  : x", "{<<: 1}", "{<<: [1]}",
            '"\\ud800"', '"\\x00\\x07"', '"\\U0010FFFF"', "'unterminated", '"bad \\q escape"', "\ufeff",
            "%YAML 9.9\n---\n", "---\n---\n", "...\n", "\t", "|\n  block", "!<tag:yaml.org,2002:int> 1",
            "!!null ''", "!!bool yes", "yes", "no", "~", "{a: 1, a: 2}", "[1, 2, 1]"]


# An alias bomb: 10**8 leaves in 63 aliases (a repr of it would not end).
BOMB = "&b0 [x, x, x, x, x, x, x, x, x, x]"
for _i in range(1, 8):
    BOMB = f"&b{_i} [{BOMB}, {', '.join([f'*b{_i - 1}'] * 9)}]"
RAW_DOCUMENTS = ["", "---", "null", "~", "[]", "{}", "- a", "devices:", "models:", "models: null", "devices: {}",
                 "0", "1e308", ".nan", "'text'", "[" * 5000, "- " * 2000 + "x", "&a [*a]", "&a {devices: *a}",
                 "&a {models: *a}", f"devices: {BOMB}", f"models: [{BOMB}]",
                 f"threads: {BOMB}\nmodels: [{{model: digits_cnn}}]", f"models: [{{model: {BOMB}}}]",
                 f"devices: [{{name: a, transport: local, delegates: {BOMB}}}]", "\x00", "\t",
                 "models:\n\t- model: digits_cnn\n", "models: [{model: digits_cnn}]\nthreads: " + "1" * 5000,
                 "devices: [{name: a, transport: ssh, host: h, port: 0x" + "f" * 4000 + "}]"]

# -- checking one load ---------------------------------------------------------------------------


def conforms(obj, hint) -> bool:
    """obj has the type its dataclass field says (recursively): no raw YAML leaks through."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(obj, option) for option in typing.get_args(hint))
    if origin is tuple:
        return isinstance(obj, tuple) and all(conforms(v, typing.get_args(hint)[0]) for v in obj)
    if origin is collections.abc.Mapping:
        key, value = typing.get_args(hint)
        return isinstance(obj, collections.abc.Mapping) and all(conforms(k, key) and conforms(v, value)
                                                                for k, v in obj.items())
    if hint is typing.Any:
        return True
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return isinstance(obj, hint) and all(conforms(getattr(obj, f.name), hints[f.name])
                                             for f in dataclasses.fields(hint))
    if hint is float:
        return isinstance(obj, float) and math.isfinite(obj)
    if hint is int:
        return isinstance(obj, int) and not isinstance(obj, bool) and -2**63 <= obj < 2**63
    return obj is None if hint is type(None) else isinstance(obj, hint)


def tally(what: str) -> None:  # --hypothesis-show-statistics shows how the examples ended
    if currently_in_test_context():
        event(what)


def no_repeats(values, what):
    assert len(set(values)) == len(values), f"{what} repeats a value: {values}"


def check_error(error: ConfigError, path: Path) -> None:
    tally(f"refused: {re.sub(r'[0-9]+', 'N', error.message.split(':')[0].split(' (')[0][:40])}")
    assert type(error) is ConfigError
    assert error.source == str(path) and error.message, error
    if error.key is not None:
        assert isinstance(error.key, str) and error.key, error
        assert str(error).startswith(f"{path}: {error.key}: "), error
    assert len(str(error)) < 2000, f"unbounded message ({len(str(error))} characters)"


def try_inventory(path: Path) -> Inventory | ConfigError:
    try:
        inventory = load_inventory(path)
    except ConfigError as error:
        check_error(error, path)
        return error
    tally("valid inventory")
    assert conforms(inventory, Inventory) and all(conforms(d, type(d)) for d in inventory.devices), inventory
    for device in inventory.devices:
        assert device.name.strip() and set(device.delegates) <= set(DELEGATES)
        no_repeats(device.delegates, f"{device.name}.delegates")
    no_repeats([d.name for d in inventory.devices], "device names")
    return inventory


def try_plan(path: Path, inventory: Inventory) -> Plan | ConfigError:
    try:
        plan = load_plan(path, inventory)
    except ConfigError as error:
        check_error(error, path)
        return error
    tally("valid plan")
    assert conforms(plan, Plan), plan
    no_repeats([m.name for m in plan.models], "model names")
    no_repeats([t.device for t in plan.targets], "targets")
    for model in plan.models:
        no_repeats(model.variants, f"{model.name}.variants")
    for threads in (plan.threads, *(t.threads or () for t in plan.targets)):
        no_repeats(threads, "threads")
        assert all(t >= 1 for t in threads)
    for target in plan.targets:
        no_repeats(target.delegates or (), "delegates")
    return plan


def write_text(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A plan directory with a model of each kind (README's plan names my_model.tflite)."""
    work = tmp_path_factory.mktemp("plans")
    for name in ("m.tflite", "my_model.tflite"):
        (work / name).write_bytes(TFLITE)
    (work / "m.keras").write_bytes(KERAS)
    (work / "sm").mkdir()
    (work / "sm" / "saved_model.pb").write_bytes(b"\x08\x01")
    data = work / "data"
    for split, classes in (("val", ("cat", "dog")), ("train", ("cat", "dog"))):
        for name in classes:
            (data / split / name).mkdir(parents=True)
            (data / split / name / "1.png").write_bytes(PNG)
    numpy.savez(data / "train.npz", x=numpy.zeros((4, 8), numpy.float32), y=numpy.arange(4) % 2)
    numpy.save(data / "x.npy", numpy.zeros((4, 8), numpy.float32))
    numpy.save(data / "y.npy", numpy.arange(4) % 2)
    (data / "inet").mkdir()
    (data / "inet" / "ILSVRC2012_val_00000001.JPEG").write_bytes(PNG)
    (data / "truth.txt").write_text("cat\n")
    (data / "labels.txt").write_text("background\ncat\n")
    (work / "team_metrics.py").write_text("def f1(labels, outputs):\n    return 0.0\n")
    return work


@pytest.fixture(scope="module")
def inventory(work) -> Inventory:
    return load_inventory(write_text(work / "inventory.yaml", README_INVENTORY))


def test_seeds_are_valid(work, inventory):
    for i, text in enumerate(INVENTORY_SEEDS):
        assert isinstance(try_inventory(write_text(work / f"inv{i}.yaml", text)), Inventory), text
    for i, text in enumerate(PLAN_SEEDS):
        assert isinstance(try_plan(write_text(work / f"plan{i}.yaml", text), inventory), Plan), text


def mutated(data, seeds) -> tuple[str, list]:
    """A seed, parsed, mutated 1-3 times, dumped (sometimes with a snippet of raw YAML spliced in)."""
    doc, done = yaml.safe_load(data.draw(st.sampled_from(seeds), label="seed")), []
    for _ in range(data.draw(st.sampled_from([1, 1, 1, 2, 3]), label="mutations")):
        doc, path = mutate(data, doc, op := data.draw(st.sampled_from(OPS), label="op"))
        done.append((op, path))
    text = yaml.safe_dump(doc, allow_unicode=data.draw(st.booleans()), sort_keys=False,
                          default_flow_style=data.draw(st.sampled_from([False, None, True])))
    if data.draw(st.integers(0, 4), label="splice") == 0:
        snippet, lines = data.draw(st.sampled_from(SNIPPETS), label="snippet"), text.splitlines()
        i = data.draw(st.integers(0, len(lines) - 1), label="line")
        if ": " in lines[i] and data.draw(st.booleans()):  # in place of a value
            text = "\n".join([*lines[:i], lines[i][:lines[i].index(": ") + 2] + snippet, *lines[i + 1:]]) + "\n"
        else:
            offset = data.draw(st.integers(0, len(text)), label="offset")
            text = text[:offset] + snippet + text[offset:]
        done.append(("splice", ()))
    note(f"mutations: {done}\n{text[:3000]}")
    return text, done


# Lists that are one value (a size, a value per channel), where equal items are normal.
VECTORS = ("resize", "mean", "std")


def check_single_mutation(result, done) -> None:
    """What one structural mutation of a valid document must give."""
    if len(done) != 1:
        return
    op, path = done[0]
    if op == "repeat" and path and path[-1][1] in VECTORS:  # [8, 8] -> [8, 8, 8]: a length, not a repeat
        assert not isinstance(result, ConfigError) or result.key == render(path), (done, result)
    elif op == "repeat":  # every other list of a plan or an inventory refuses repeats
        assert isinstance(result, ConfigError), f"a repeat at {render(path)} was accepted"
        assert result.key.startswith(render(path) + "["), (done, result)
        assert "twice" in result.message or "duplicate" in result.message, result
    if op == "unknown_key":
        assert isinstance(result, ConfigError) and result.key == render(path), (done, result)
        assert "unknown key" in result.message, result
    if isinstance(result, ConfigError) and not result.message.startswith("malformed YAML"):
        assert result.key is not None, (done, result)  # something below the top is wrong: it says where


@settings(EXAMPLES, max_examples=400)
@given(data=st.data())
def test_mutated_plans(work, inventory, data):
    text, done = mutated(data, PLAN_SEEDS)
    check_single_mutation(try_plan(write_text(work / "mutant.yaml", text), inventory), done)


@settings(EXAMPLES, max_examples=300)
@given(data=st.data())
def test_mutated_inventories(work, data):
    text, done = mutated(data, INVENTORY_SEEDS)
    check_single_mutation(try_inventory(write_text(work / "mutant-inventory.yaml", text)), done)


@settings(EXAMPLES, max_examples=150)
@given(text=st.one_of(st.text(characters, max_size=200), st.sampled_from(RAW_DOCUMENTS + SNIPPETS)))
def test_random_text(work, inventory, text):
    try_plan(write_text(work / "random.yaml", text), inventory)
    try_inventory(write_text(work / "random-inventory.yaml", text))


@settings(EXAMPLES, max_examples=100)
@given(blob=st.one_of(st.binary(max_size=200), st.sampled_from([
    b"\xff\xfe\xfd", b"\xef\xbb\xbfmodels: []", "models: [{model: digits_cnn}]".encode("utf-16"),
    "devices: [{name: a, transport: local}]".encode("utf-32"), b"models:\n  - model: \xff\n", b"\x00" * 8])))
def test_random_bytes(work, inventory, blob):
    (work / "bytes.yaml").write_bytes(blob)
    try_plan(work / "bytes.yaml", inventory)
    try_inventory(work / "bytes.yaml")


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path).encode() + (path.read_bytes() if path.is_file() else b"/"))
    return digest.hexdigest()


@settings(EXAMPLES, max_examples=150)
@given(shape=st.sampled_from(["file", "dir", "dir+pb", "dir+pb-dir", "missing"]),
       suffix=st.sampled_from([".tflite", ".keras", "", ".pb", ".h5", ".TFLITE"]),
       content=st.one_of(st.binary(max_size=16), st.sampled_from([TFLITE, KERAS, b"PK\x03\x04junk", TFLITE[:7]])),
       given_as=st.sampled_from(["name", "name/", "absolute"]))
def test_model_paths(tmp_path_factory, inventory, shape, suffix, content, given_as):
    """A model `path:` is refused (at models[0].path) unless it is what its name says."""
    work = tmp_path_factory.mktemp("model")
    model = work / f"model{suffix}"
    if shape == "file":
        model.write_bytes(content)
    elif shape.startswith("dir"):
        model.mkdir()
        if shape == "dir+pb":
            (model / "saved_model.pb").write_bytes(content)
        elif shape == "dir+pb-dir":
            (model / "saved_model.pb").mkdir()
    written = {"name": model.name, "name/": model.name + "/", "absolute": str(model)}[given_as]
    plan_path = write_text(work / "plan.yaml", f"models:\n  - path: {json.dumps(written)}\n")
    before = tree_digest(work)
    plan = try_plan(plan_path, inventory)
    assert tree_digest(work) == before  # the loader reads, never writes
    if isinstance(plan, ConfigError):
        assert plan.key == "models[0].path", plan
        return
    entry = plan.models[0]
    if entry.kind == "tflite":
        assert model.is_file() and suffix == ".tflite" and content[4:8] == b"TFL3" and given_as != "name/"
    elif entry.kind == "keras":
        assert model.is_file() and suffix == ".keras" and zipfile.is_zipfile(model) and given_as != "name/"
    else:
        assert entry.kind == "saved_model" and (model / "saved_model.pb").is_file()
        assert suffix not in (".tflite", ".keras")
