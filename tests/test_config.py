"""Bad input is rejected at the boundary with the file and the key named (and, through the command
line, exit code 2 with one message and no run written)."""

from __future__ import annotations

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
    ("models:\n  - model: digits_cnn\n    variants: [fp32, int4]\n", "models[0].variants", "unknown variant 'int4'"),
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
    ("hosts: []\n", None, "single key 'devices'"),
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
