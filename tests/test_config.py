"""Bad input is rejected at the boundary with the file and the key named (and, through the command
line, exit code 2 with one message and no run written)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, harness_cli, write
from harness.config import load_inventory, load_plan, select_devices
from harness.errors import ConfigError
from harness.variants import ALL

INVENTORY = load_inventory(ROOT / "inventory.yaml")


def plan_error(tmp_path: Path, text: str, inventory=INVENTORY) -> ConfigError:
    path = write(tmp_path / "plan.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_plan(path, inventory)
    assert str(path) in str(info.value)
    return info.value


def test_repository_plans_load():
    quick = load_plan(ROOT / "plans/quick.yaml", INVENTORY)
    assert [m.name for m in quick.models] == ["digits_cnn", "mobilenet_v2"]
    assert quick.models[0].variants == ALL and len(ALL) == 9
    assert quick.models[1].variants == ("fp32", "dynamic", "float16", "int8")
    assert quick.targets[0].delegates == ("cpu", "xnnpack") and quick.targets[0].threads == (1, 2)
    nightly = load_plan(ROOT / "plans/nightly.yaml", INVENTORY)
    assert {m.name for m in nightly.models} == {"digits_cnn", "mobilenet_v2", "efficientnet_b0"}
    assert all(m.variants == ALL for m in nightly.models)
    assert [t.device for t in nightly.targets] == [d.name for d in INVENTORY.devices]
    assert nightly.targets[0].threads is None and nightly.threads == (1, 2, 4)
    assert quick.threads == (1,)


def test_embedded_inventory_is_the_local_device():
    inventory = load_inventory(None)
    assert [(d.name, d.transport, d.delegates) for d in inventory.devices] == [("local", "local", ("cpu", "xnnpack"))]


@pytest.mark.parametrize("text, key, words", [
    ("models:\n  - model: resnet9000\n", "models[0].model", "unknown model 'resnet9000'"),
    ("models:\n  - model: digits_cnn\n    variants: [fp32, int4]\n", "models[0].variants[1]", "unknown variant 'int4'"),
    ("models:\n  - model: digits_cnn\n    pruning: yes\n", "models[0].pruning", "unknown key"),
    ("models:\n  - model: digits_cnn\nflavour: spicy\n", "flavour", "unknown key"),
    ("models:\n  - model: digits_cnn\nprotocol: {num_runz: 3}\n", "protocol.num_runz", "unknown key"),
    ("models:\n  - model: digits_cnn\nprotocol: {num_runs: 0}\n", "protocol.num_runs", "must be > 0"),
    ("models:\n  - model: digits_cnn\nprotocol: {max_secs: fast}\n", "protocol.max_secs", "expected float"),
    ("models:\n  - model: digits_cnn\ntargets:\n  - device: pixel9\n", "targets[0].device", "no device 'pixel9'"),
    ("models:\n  - model: digits_cnn\ntargets:\n  - device: local\n    delegates: [tpu]\n",
     "targets[0].delegates", "unknown delegate 'tpu'"),
    ("models:\n  - model: digits_cnn\ntargets:\n  - device: local\n    threads: [0]\n", "targets[0].threads", ">= 1"),
    ("models:\n  - model: digits_cnn\nthreads: [2, -1]\n", "threads", ">= 1"),
    ("models:\n  - model: digits_cnn\nthreads: 2\n", "threads", "non-empty list"),
    ("models:\n  - model: digits_cnn\n  - model: digits_cnn\n", "models[1].name", "duplicate model name"),
    ("models:\n  - path: nowhere.tflite\n", "models[0].path", "no such file"),
    ("models: []\n", "models", "non-empty list"),
    ("models:\n  - model: digits_cnn\n    path: x.tflite\n", "models[0]", "exactly one of"),
])
def test_plan_rejections_name_the_key(tmp_path, text, key, words):
    error = plan_error(tmp_path, text)
    assert error.key == key
    assert words in error.message


def test_malformed_yaml_names_the_line(tmp_path):
    error = plan_error(tmp_path, "models:\n  - model: digits_cnn\n  variants: [fp32\n")
    assert "malformed YAML at line" in error.message


def test_missing_plan_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_plan(tmp_path / "absent.yaml", INVENTORY)


def test_a_tflite_that_is_not_a_model(tmp_path):
    write(tmp_path / "fake.tflite", "this is text, not a flatbuffer")
    error = plan_error(tmp_path, "models:\n  - path: fake.tflite\n")
    assert error.key == "models[0].path" and "not a TFLite model" in error.message


def test_given_tflite_takes_no_other_variant(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(32))
    plan = load_plan(write(tmp_path / "ok.yaml", "models:\n  - path: m.tflite\n"), INVENTORY)
    assert plan.models[0].kind == "tflite" and plan.models[0].variants == ("given",)
    error = plan_error(tmp_path, "models:\n  - path: m.tflite\n    variants: [int8]\n")
    assert "benchmarked as it is" in error.message


@pytest.mark.parametrize("text, key, words", [
    ("devices:\n  - name: a\n    transport: carrier-pigeon\n", "devices[0].transport", "unknown transport"),
    ("devices:\n  - name: a\n    transport: local\n    colour: red\n", "devices[0].colour", "unknown key"),
    ("devices:\n  - name: a\n    transport: local\n  - name: a\n    transport: local\n", "devices[1].name", "duplicate"),
    ("devices:\n  - name: a\n    transport: local\n    delegates: [warp]\n", "devices[0].delegates", "unknown delegate"),
    ("devices:\n  - transport: local\n", "devices[0].name", "missing required key"),
    ("hosts: []\n", "hosts", "unknown key (known: devices)"),
    ("[]\n", None, "single key 'devices'"),
    ("devices:\n  - name: pi\n    transport: ssh\n", "devices[0].host", "missing required key"),
    ("devices:\n  - name: pi\n    transport: ssh\n    host: pi.lan\n    port: 70000\n", "devices[0].port", "not a TCP port"),
    ("devices:\n  - name: pi\n    transport: ssh\n    host: pi.lan\n    connect_timeout_s: 0\n",
     "devices[0].connect_timeout_s", "must be > 0"),
    ("devices:\n  - name: pi\n    transport: ssh\n    host: pi.lan\n    cooldown: {max_temp: 60}\n",
     "devices[0].cooldown.max_temp", "unknown key"),
    ("devices:\n  - name: pi\n    transport: ssh\n    host: pi.lan\n    cooldown: {max_temp_c: 60, timeout_s: -1}\n",
     "devices[0].cooldown.timeout_s", "must be > 0"),
    ("devices:\n  - name: pi\n    transport: ssh\n    host: pi.lan\n    retries: -1\n", "devices[0].retries", ">= 0"),
])
def test_inventory_rejections(tmp_path, text, key, words):
    path = write(tmp_path / "inventory.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    assert info.value.key == key and words in info.value.message and str(path) in str(info.value)


def test_devices_filter_must_name_a_target():
    plan = load_plan(ROOT / "plans/quick.yaml", INVENTORY)
    assert [t.device for t in select_devices(plan, INVENTORY, "local")] == ["local"]
    with pytest.raises(ConfigError, match="not a target"):
        select_devices(plan, INVENTORY, "local,pixel7")


@pytest.mark.parametrize("text, words", [
    ("models:\n  - model: resnet9000\n", "models[0].model: unknown model 'resnet9000'"),
    ("models:\n  - model: digits_cnn\n  variants: [fp32\n", "malformed YAML"),
])
def test_cli_exits_2_with_one_message_and_writes_no_run(tmp_path, text, words):
    plan = write(tmp_path / "bad.yaml", text)
    db = tmp_path / "results.sqlite"
    result = harness_cli("sweep", "--plan", str(plan), "--db", str(db), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(plan) in lines[0] and words in lines[0], result.stderr
    assert result.stdout == ""
    assert not db.exists()
    assert not (tmp_path / "cache").exists()


def test_variants_of_a_model_are_measured_back_to_back_per_target():
    from harness.sweep import plan_cells

    plan = load_plan(ROOT / "plans/quick.yaml", INVENTORY)
    cells = plan_cells(plan, plan.targets, INVENTORY)
    assert len(cells) == (9 + 4) * 2 * 2
    first = [(c.model, c.variant, c.delegate, c.threads) for c in cells[:10]]
    assert first[:9] == [("digits_cnn", v, "cpu", 1) for v in ALL] and first[9] == ("digits_cnn", "fp32", "cpu", 2)
    assert len(set(cells)) == len(cells)


def test_ssh_inventory_entry_with_defaults_and_cooldown(tmp_path):
    inventory = load_inventory(write(tmp_path / "inventory.yaml", (
        "devices:\n  - name: pi4\n    transport: ssh\n    host: 192.168.1.40\n    user: pi\n"
        "    identity_file: ~/.ssh/id_ed25519\n    cooldown: {max_temp_c: 55, timeout_s: 120}\n")))
    pi = inventory.get("pi4")
    assert (pi.host, pi.port, pi.user, pi.python, pi.workdir) == ("192.168.1.40", 22, "pi", "python3", "~/.cache/harness")
    assert (pi.cooldown.max_temp_c, pi.cooldown.timeout_s, pi.cooldown.poll_s) == (55.0, 120.0, 5.0)
    assert pi.known_hosts == "~/.ssh/known_hosts" and pi.run_timeout_s is None


def test_quarantine_after_must_be_positive(tmp_path):
    error = plan_error(tmp_path, "models:\n  - model: digits_cnn\nquarantine_after: 0\n")
    assert error.key == "quarantine_after" and ">= 1" in error.message


# -- a value repeated in a list is refused before anything is measured ----------------------------


@pytest.mark.parametrize("text, key, message", [
    ("models:\n  - model: digits_cnn\n    variants: [fp32, int8, fp32]\n", "models[0].variants[2]",
     "'fp32' is listed twice (first at models[0].variants[0])"),
    ("models:\n  - model: digits_cnn\ntargets:\n  - device: local\n    delegates: [cpu, xnnpack, cpu]\n",
     "targets[0].delegates[2]", "'cpu' is listed twice (first at targets[0].delegates[0])"),
    ("models:\n  - model: digits_cnn\nthreads: [1, 2, 2]\n", "threads[2]", "2 is listed twice (first at threads[1])"),
    ("models:\n  - model: digits_cnn\ntargets:\n  - device: local\n    threads: [4, 4]\n", "targets[0].threads[1]",
     "4 is listed twice (first at targets[0].threads[0])"),
    ("models:\n  - model: digits_cnn\n  - model: mobilenet_v2\n    name: digits_cnn\n", "models[1].name",
     "duplicate model name 'digits_cnn' (first at models[0])"),
    ("models:\n  - model: digits_cnn\ntargets:\n  - device: local\n  - device: local\n    threads: [2]\n",
     "targets[1].device", "duplicate target device 'local' (first at targets[0])"),
])
def test_a_value_repeated_in_a_plan_list_is_refused(tmp_path, text, key, message):
    error = plan_error(tmp_path, text)
    assert (error.key, error.message) == (key, message)


@pytest.mark.parametrize("text, key, message", [
    ("devices:\n  - name: a\n    transport: local\n  - name: a\n    transport: ssh\n    host: h\n", "devices[1].name",
     "duplicate device name 'a' (first at devices[0])"),
    ("devices:\n  - name: a\n    transport: local\n    delegates: [cpu, xnnpack, cpu]\n", "devices[0].delegates[2]",
     "'cpu' is listed twice (first at devices[0].delegates[0])"),
])
def test_a_value_repeated_in_an_inventory_list_is_refused(tmp_path, text, key, message):
    path = write(tmp_path / "inventory.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    assert (info.value.source, info.value.key, info.value.message) == (str(path), key, message)


# -- a model path must be what its name says --------------------------------------------------------


def model_path_message(tmp_path: Path, given: str) -> str:
    error = plan_error(tmp_path, f"models:\n  - path: {given}\n")
    assert error.key == "models[0].path"
    return error.message


def test_a_tflite_without_the_flatbuffer_identifier(tmp_path):
    (tmp_path / "fake.tflite").write_bytes(b"\x1c\x00\x00\x00TFL2" + bytes(32))
    assert model_path_message(tmp_path, "fake.tflite") == (
        f"{tmp_path / 'fake.tflite'} is not a TFLite model (no TFL3 identifier at bytes 4..8)")


def test_a_keras_file_that_is_not_a_zip_archive(tmp_path):
    (tmp_path / "old.keras").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(32))  # an HDF5 model renamed
    assert model_path_message(tmp_path, "old.keras") == (
        f"{tmp_path / 'old.keras'} is not a Keras model (a .keras file is a zip archive)")


def test_a_saved_model_directory_without_its_graph(tmp_path):
    (tmp_path / "exported" / "variables").mkdir(parents=True)
    assert model_path_message(tmp_path, "exported") == f"{tmp_path / 'exported'} is a directory without saved_model.pb"
    (tmp_path / "odd" / "saved_model.pb").mkdir(parents=True)
    assert model_path_message(tmp_path, "odd") == f"{tmp_path / 'odd'}/saved_model.pb is not a file"


def test_a_directory_where_a_file_is_expected(tmp_path):
    (tmp_path / "model.tflite").mkdir()
    assert model_path_message(tmp_path, "model.tflite") == (
        f"{tmp_path / 'model.tflite'} is a directory, not a .tflite file")
    (tmp_path / "model.keras").mkdir()
    (tmp_path / "model.keras" / "saved_model.pb").write_bytes(b"")
    assert model_path_message(tmp_path, "model.keras") == (
        f"{tmp_path / 'model.keras'} is a directory, not a .keras file")


def test_a_file_where_a_directory_is_expected(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(32))
    assert model_path_message(tmp_path, "m.tflite/") == f"{tmp_path / 'm.tflite'} is a file, not a directory"
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "saved_model.pb").write_bytes(b"")
    assert model_path_message(tmp_path, "export/saved_model.pb") == (
        f"{tmp_path / 'export' / 'saved_model.pb'} is a file: give the SavedModel directory that holds it")


def test_a_model_path_that_is_no_regular_file(tmp_path):
    os.mkfifo(tmp_path / "pipe.tflite")  # opening it would block the loader
    assert model_path_message(tmp_path, "pipe.tflite") == f"{tmp_path / 'pipe.tflite'} is not a regular file"


def test_model_paths_expand_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(32))
    plan = load_plan(write(tmp_path / "plans" / "p.yaml", "models:\n  - path: ~/m.tflite\n"), INVENTORY)
    assert plan.models[0].path == tmp_path / "home" / "m.tflite"


# -- what used to escape the loaders as another exception ----------------------------------------


@pytest.mark.parametrize("text, key, message", [
    ("models:\n  - model: !!int abc\n", None,
     "malformed YAML at line 2, column 12: not a valid !!int: 'abc' (invalid literal for int() with base 10: 'abc')"),
    ("models:\n  - model: digits_cnn\nname: 2001-02-30\n", None,
     "malformed YAML at line 3, column 7: not a valid !!timestamp: '2001-02-30' (day is out of range for month)"),
    ("models:\n  - model: digits_cnn\nname: !!timestamp 2001-13-45x\n", None,
     "malformed YAML at line 3, column 7: not a valid !!timestamp: '2001-13-45x'"),
    ("[" * 3000, None, "malformed YAML: nested too deeply"),
    ("models:\n  - model: [digits_cnn]\n", "models[0].model",
     "unknown model ['digits_cnn'] (known: digits_cnn, mobilenet_v2, efficientnet_b0)"),
    ("models:\n  - model: digits_cnn\nprotocol: {max_secs: " + "9" * 400 + "}\n", "protocol.max_secs",
     "expected a finite number, got <an integer of 1329 bits>"),
    ("models:\n  - model: digits_cnn\nprotocol: {max_secs: .nan}\n", "protocol.max_secs",
     "expected a finite number, got nan"),
    ("models:\n  - model: digits_cnn\nthreads: [0x" + "f" * 4000 + "]\n", "threads[0]",
     "<an integer of 16000 bits> is out of range (at most 9223372036854775807)"),
    ("models:\n  - model: digits_cnn\n'': 1\n", "''", "unknown key (known: name, description, models, targets, "
     "threads, protocol, timeouts, quarantine_after, edgetpu_compiler)"),
    ("models:\n  - model: digits_cnn\ndescription: [1]\n", "description", "expected str, got [1]"),
    ("models:\n  - model: digits_cnn\nprotocol: []\n", "protocol", "expected a mapping, got []"),
    ("models:\n  - path: \"a\\0b.tflite\"\n", "models[0].path",
     "not a usable path: 'a\\x00b.tflite' (a NUL character)"),
])
def test_bad_input_that_crashed_the_plan_loader(tmp_path, text, key, message):
    error = plan_error(tmp_path, text)
    assert (error.key, error.message) == (key, message)


@pytest.mark.parametrize("text, key, message", [
    ("devices:\n  - name: a\n    transport: [local]\n", "devices[0].transport",
     "unknown transport ['local'] (known: local, ssh, adb, sim)"),
    ("devices:\n  - name: a\n    transport: local\n  - name: a\n    transport: local\nextra: 1\n", "extra",
     "unknown key (known: devices)"),
    ("{}\n", "devices", "missing required key"),
    ("devices:\n  - name: \"a\\0\"\n    transport: local\n", "devices[0].name",
     "must not contain a NUL character, got 'a\\x00'"),
    ("devices:\n  - name: p\n    transport: adb\n    host: h\n    benchmark_model: ~nosuchuser_zz9/bm\n", "devices[0]",
     "cannot check this device: Could not determine home directory."),
])
def test_bad_input_that_crashed_the_inventory_loader(tmp_path, text, key, message):
    path = write(tmp_path / "inventory.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    assert (info.value.source, info.value.key, info.value.message) == (str(path), key, message)


# -- what a model file holds, checked before a sweep builds or measures it --------------------------


def contents_message(kind: str, path: Path) -> str:
    from harness.config_checks import model_contents

    with pytest.raises(ConfigError) as info:
        model_contents(kind, path, "plan.yaml", "models[0].path")
    assert (info.value.source, info.value.key) == ("plan.yaml", "models[0].path")
    return info.value.message


def _keras_zip(path: Path, members: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_a_keras_archive_must_hold_a_model_config_and_its_weights(tmp_path):
    from harness.config_checks import model_contents

    h5 = b"\x89HDF\r\n\x1a\n" + bytes(8)
    good = {"config.json": '{"class_name": "Sequential", "config": {"layers": []}}', "metadata.json": "{}",
            "model.weights.h5": h5}
    model_contents("keras", _keras_zip(tmp_path / "good.keras", good), "plan.yaml", "models[0].path")
    model_contents("keras", _keras_zip(tmp_path / "npz.keras", {**{k: v for k, v in good.items() if k != "model.weights.h5"},
                                                                 "model.weights.npz": b"PK"}), "p", "k")
    cases = [
        ({"readme.txt": "hi"}, "is not a Keras model: its archive holds no config.json (it holds: ['readme.txt'])"),
        ({"config.json": good["config.json"]}, "its archive holds no model.weights.h5"),
        ({**good, "config.json": "{not json"}, "config.json is not JSON"),
        ({**good, "config.json": "[1, 2]"}, "config.json names no model (no 'class_name' at its top)"),
        ({**good, "config.json": '{"config": {}}'}, "config.json names no model"),
        ({**good, "config.json": '{"class_name": "Sequential", "config": {"layers": 5}}'},
         "config.json's Sequential has no list of layers (config.layers is 5)"),
        ({**good, "model.weights.h5": b"junk"}, "model.weights.h5 is not an HDF5 file"),
    ]
    for i, (members, words) in enumerate(cases):
        path = _keras_zip(tmp_path / f"m{i}.keras", members)
        assert contents_message("keras", path).startswith(f"{path}") and words in contents_message("keras", path)


def test_a_saved_model_pb_must_be_a_saved_model_protobuf(tmp_path):
    from harness.config_checks import model_contents

    (tmp_path / "sm").mkdir()
    pb = tmp_path / "sm" / "saved_model.pb"
    # schema version 1, one meta graph holding a graph_def (field 2) of one byte-string field
    meta_graph = b"\x12\x04\x0a\x02ab"
    pb.write_bytes(b"\x08\x01\x12" + bytes([len(meta_graph)]) + meta_graph)
    model_contents("saved_model", tmp_path / "sm", "plan.yaml", "models[0].path")
    for data, words in [(b"junk\n", "field 13 at byte 0 runs 114 bytes past its end"),
                        (b"", "it holds no meta graph"), (b"\x08\x01", "it holds no meta graph"),
                        (b"\x08\xff", "a varint runs past byte 2"), (b"\x00\x01", "no protobuf field at byte 0 (tag 0)"),
                        (b"\x0f", "no protobuf field at byte 0 (tag 15)"),
                        (b"\x12\x02\x0f\x00", "no protobuf field at byte 2 (tag 15)"),
                        (b"\x0a\x00\x12\x00", "its fields 1 and 2 are not a schema version and meta graphs")]:
        pb.write_bytes(data)
        assert contents_message("saved_model", tmp_path / "sm") == f"{pb} is not a SavedModel ({words})"


def test_the_sweep_verifies_a_tflite_flatbuffer_with_litert(tmp_path):
    """A .tflite with the TFL3 identifier whose FlatBuffer is cut short or damaged is refused at its
    `path:` (harness/build.py check_model_files), not a cell that fails to load on every device."""
    from harness.build import verify_tflite

    convert = ("import sys\nfrom harness.tfenv import import_tf\ntf, keras = import_tf()\n"
               "model = keras.Sequential([keras.layers.InputLayer(input_shape=(8,)), keras.layers.Dense(3)])\n"
               "sys.stdout.buffer.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())\n")
    real = subprocess.run([sys.executable, "-c", convert], capture_output=True, check=True, cwd=ROOT).stdout
    (tmp_path / "real.tflite").write_bytes(real)
    verify_tflite(tmp_path / "real.tflite", "plan.yaml", "models[0].path")
    model = tmp_path / "m.tflite"
    for data in (b"\x1c\x00\x00\x00TFL3" + bytes(64), real[:len(real) // 2], real[:64]):
        model.write_bytes(data)
        with pytest.raises(ConfigError) as info:
            verify_tflite(model, "plan.yaml", "models[0].path")
        assert info.value.key == "models[0].path"
        assert info.value.message.startswith(f"{model} is not a valid TFLite model (LiteRT: '")
        assert info.value.message.endswith("'; cut short or corrupted?)")


def test_loading_plans_imports_no_tensorflow(tmp_path):
    """The loaders stay pure: validating a plan converts nothing and imports no TensorFlow."""
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(32))
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    write(tmp_path / "byo.yaml", "models:\n  - path: m.tflite\n  - path: m.keras\n    name: k\n  - path: sm\n")
    plans = [str(p) for p in sorted((ROOT / "plans").glob("*.yaml"))] + [str(tmp_path / "byo.yaml")]
    code = ("import sys\nfrom harness.config import load_inventory, load_plan\n"
            f"inventory = load_inventory({str(ROOT / 'inventory.yaml')!r})\n"
            f"for plan in {plans!r}:\n    load_plan(plan, inventory)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras', "
            "'tensorflow_model_optimization', 'ai_edge_litert', 'tflite_runtime')))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
