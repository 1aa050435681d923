"""The cool-down rule (pure, with a scripted thermometer and clock), the runner's reading of
thermal zones, CPU frequencies and `vcgencmd`, and `sweep --resume`'s refusals."""

from __future__ import annotations

import sqlite3

import pytest

from conftest import harness_cli, write
from devices import runner
from devices.base import Cooldown
from harness.sweep import cool_down


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_cool_down_waits_until_under_the_limit():
    temps, clock = iter([71.0, 66.5, 59.9]), Clock()
    waited, warning = cool_down(lambda: next(temps), Cooldown(max_temp_c=60, timeout_s=300, poll_s=5),
                                sleep=clock.sleep, clock=clock)
    assert (waited, warning, clock.sleeps) == (10.0, None, [5, 5])


def test_cool_down_gives_up_after_its_timeout_with_a_warning():
    clock = Clock()
    waited, warning = cool_down(lambda: 80.0, Cooldown(max_temp_c=60, timeout_s=12, poll_s=5),
                                sleep=clock.sleep, clock=clock)
    assert waited == 12 and clock.sleeps == [5, 5, 2]
    assert warning == "cool-down timed out after 12 s at 80.0 C (limit 60 C); measured anyway"


def test_cool_down_without_a_sensor_measures_at_once():
    clock = Clock()
    waited, warning = cool_down(lambda: None, Cooldown(max_temp_c=60), sleep=clock.sleep, clock=clock)
    assert waited == 0 and clock.sleeps == [] and "reports no temperature" in warning


def test_runner_reads_thermal_zones_and_frequencies(tmp_path):
    for zone, kind, milli in (("thermal_zone0", "cpu-thermal", "48312"), ("thermal_zone1", "gpu-thermal", "51000"),
                              ("thermal_zone2", "broken", "n/a")):
        write(tmp_path / "sys/class/thermal" / zone / "temp", milli + "\n")
        write(tmp_path / "sys/class/thermal" / zone / "type", kind + "\n")
    for cpu, khz in (("cpu0", "1500000"), ("cpu1", "600000")):
        write(tmp_path / "sys/devices/system/cpu" / cpu / "cpufreq/scaling_cur_freq", khz + "\n")
    t = runner.telemetry(root=str(tmp_path))
    assert t["zones"] == {"thermal_zone0:cpu-thermal": 48.312, "thermal_zone1:gpu-thermal": 51.0}
    assert t["temp_c"] == 51.0 and t["freq_khz"] == [1500000, 600000]


@pytest.mark.parametrize("text, value", [("temp=48.3'C\n", 48.3), ("temp=61.0'C", 61.0), ("", None),
                                         ("VCHI initialization failed", None)])
def test_vcgencmd_measure_temp_output(text, value):
    assert runner.parse_vcgencmd_temp(text) == value


def test_resume_refuses_an_unknown_run_and_a_changed_plan(tmp_path):
    plan = write(tmp_path / "plan.yaml", "models:\n  - model: digits_cnn\n    variants: [fp32]\n")
    db = tmp_path / "r.sqlite"
    missing = harness_cli("sweep", "--resume", "latest", "--db", str(db), cwd=tmp_path)
    assert missing.returncode == 2 and "no results store here" in missing.stderr
    from harness.store import Store

    store = Store(db)
    run_id = store.create_run(plan_path=str(plan), plan_sha256="0" * 64, argv_json='["sweep"]')
    store.close()
    unknown = harness_cli("sweep", "--resume", "20000101", "--db", str(db), cwd=tmp_path)
    assert unknown.returncode == 2 and "no run '20000101'" in unknown.stderr
    changed = harness_cli("sweep", "--resume", run_id, "--db", str(db), cwd=tmp_path)
    assert changed.returncode == 2 and "changed since run" in changed.stderr and str(plan) in changed.stderr
    with sqlite3.connect(db) as con:  # nothing was written by the refused resumes
        assert con.execute("SELECT COUNT(*), MAX(status) FROM runs").fetchone() == (1, "running")
        assert con.execute("SELECT COUNT(*) FROM cells").fetchone() == (0,)
