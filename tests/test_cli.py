"""The command line's surface: help everywhere, no TensorFlow on import, doctor and devices."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import harness_cli


@pytest.mark.parametrize("command", [[], ["sweep"], ["report"], ["devices"], ["doctor"], ["parse"], ["gate"],
                                     ["baseline"], ["history"], ["export"]])
def test_every_command_has_help(command):
    result = harness_cli(*command, "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: harness")


def test_the_cli_does_not_import_tensorflow():
    code = ("import sys, harness.cli, harness.sweep, harness.report, harness.build, harness.config, harness.gate;"
            "heavy = [m for m in ('tensorflow', 'tf_keras', 'tensorflow_model_optimization', 'keras') if m in sys.modules];"
            "print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_doctor_reports_what_is_missing():
    result = harness_cli("doctor")
    assert result.returncode == 0
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert " ok " in rows["ai-edge-litert"] and "2.3.0" in rows["ai-edge-litert"]
    assert " missing " in rows["edgetpu_compiler"] and "coral.ai" in rows["edgetpu_compiler"]
    assert " missing " in rows["libedgetpu"] and "libedgetpu.so.1" in rows["libedgetpu"]
    assert " missing " in rows["pycoral"] and "not on PyPI" in rows["pycoral"]
    assert " missing " in rows["Edge"] and "none attached" in rows["Edge"]
    assert "apt-get install edgetpu-compiler" in rows["edgetpu_compiler"]
    assert "apt-get install libedgetpu1-std" in rows["libedgetpu"]


def test_devices_table_shows_the_local_device():
    result = harness_cli("devices")
    assert result.returncode == 0, result.stderr
    local = next(line for line in result.stdout.splitlines() if line.startswith("local "))
    assert " yes " in local and "ai_edge_litert 2.3.0" in local


def test_report_without_a_store_is_a_clear_error(tmp_path):
    result = harness_cli("report", "--db", str(tmp_path / "none.sqlite"))
    assert result.returncode == 2 and "none.sqlite: no results store here" in result.stderr
    assert not (tmp_path / "none.sqlite").exists()
