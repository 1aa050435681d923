"""The gate, pure: verdicts on synthetic timings, matching of cells, the renderings; the
statistics under it (the bootstrap of the median, step detection); device locks; the store's
baselines and its upgrade from schema 2."""

from __future__ import annotations

import sqlite3
from xml.etree import ElementTree

import numpy as np
import pytest

from harness import gate, stats
from harness.gate import Sampled, Settings

RNG = np.random.default_rng(7)


def timings(n: int, median: float = 1000.0, cv: float = 0.05, seed: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed) if seed is not None else RNG
    return median * np.exp(rng.normal(0.0, cv, n))


def cell(samples, fingerprint="fp-a", device="pixel", variant="int8", runtime="litert 2.3.0", status="ok",
         reason=None, threads=4) -> Sampled:
    return Sampled(device, fingerprint, "mobilenet_v2", variant, "xnnpack", threads, status, reason, runtime,
                   np.asarray(samples, dtype=np.float64))


# -- one configuration -------------------------------------------------------------------------


def test_a_clear_regression():
    verdict, reason, found = gate.judge(timings(50), timings(50, 1150.0), Settings())
    assert verdict == "regression", reason
    assert 1.10 < found["ratio"] < 1.20 and found["ci_low"] > 1.05 and found["p_value"] < 1e-6
    assert "slower" in reason and "beyond the 5% threshold" in reason


def test_a_clear_improvement():
    verdict, reason, found = gate.judge(timings(50), timings(50, 850.0), Settings())
    assert verdict == "improvement" and found["ratio"] < 0.9 and "faster" in reason


def test_identical_timings_are_unchanged():
    same = timings(60)
    verdict, reason, found = gate.judge(same, same.copy(), Settings())
    assert verdict == "unchanged", reason
    assert found["ratio"] == 1.0 and found["p_value"] > 0.4 and found["ci_low"] <= 1.0 <= found["ci_high"]


def test_too_few_samples_is_inconclusive_never_a_pass():
    verdict, reason, found = gate.judge(timings(5), timings(50, 2000.0), Settings())
    assert verdict == "inconclusive" and "too few samples: baseline 5, candidate 50" in reason
    assert "ratio" not in found  # nothing was tested


def test_a_spread_too_wide_to_decide_is_inconclusive():
    base, cand = timings(12, cv=0.3, seed=1), timings(12, cv=0.3, seed=2)
    verdict, reason, found = gate.judge(base, cand, Settings())
    assert verdict == "inconclusive" and "too noisy to decide" in reason
    assert found["ci_high"] - found["ci_low"] > 0.2


def test_a_significant_shift_smaller_than_the_threshold_is_not_a_regression():
    # 50,000 timings a side make a 1 % shift highly significant; the effect size keeps it unchanged
    base, cand = timings(50_000, cv=0.05, seed=3), timings(50_000, 1010.0, cv=0.05, seed=4)
    verdict, reason, found = gate.judge(base, cand, Settings(threshold=0.05))
    assert found["p_value"] < 1e-10 and verdict == "unchanged", reason
    assert gate.judge(base, cand, Settings(threshold=0.005))[0] == "regression"


def test_a_slowdown_past_the_threshold_without_significance_is_not_a_regression():
    base, cand = timings(12, cv=0.25, seed=5), timings(12, 1080.0, cv=0.25, seed=6)
    verdict, _, found = gate.judge(base, cand, Settings())
    assert found["p_value"] >= 0.01 and verdict == "inconclusive"


def test_a_change_within_the_run_to_run_noise_of_earlier_runs_is_inconclusive():
    from harness.gate import RunNoise

    base, cand = timings(50, seed=50), timings(50, 1150.0, seed=51)
    assert gate.judge(base, cand, Settings())[0] == "regression"
    noisy = RunNoise(sigma=0.10, dof=9, runs=10)  # p50 moves ~10 % from run to run
    verdict, reason, found = gate.judge(base, cand, Settings(), noisy)
    assert verdict == "inconclusive" and found["run_sigma"] == 0.10
    assert "moves 10.5% (sigma over 10 earlier runs) from run to run" in reason
    verdict, reason, _ = gate.judge(base, cand, Settings(), RunNoise(sigma=0.01, dof=9, runs=10))
    assert verdict == "regression" and "beyond run-to-run noise of 1.0% (sigma over 10 earlier runs)" in reason
    assert "run-to-run noise unknown" in gate.judge(base, cand, Settings())[1]


def test_the_run_to_run_spread_is_taken_around_levels_and_needs_three_runs():
    assert gate.run_noise([100.0, 102.0]) is None
    rng = np.random.default_rng(54)
    steady = list(100 * np.exp(rng.normal(0, 0.02, 12)))
    noise = gate.run_noise(steady)
    assert noise.runs == 12 and noise.dof == 11 and 0.01 < noise.sigma < 0.035
    # newest first: the last four runs moved up 30 % for good; that is a level, not noise
    moved = [v * 1.3 for v in steady[:4]] + steady[4:]
    shifted = gate.run_noise(moved)
    assert shifted.dof == 10 and shifted.sigma < 1.5 * noise.sigma
    cell_with_history = cell(timings(50, 1150.0, seed=52))
    cell_with_history.history = [1000.0, 1150.0, 880.0, 1210.0, 950.0, 1100.0]
    v = gate.compare([cell(timings(50, seed=53))], [cell_with_history], Settings())[0]
    assert v.verdict == "inconclusive" and v.run_sigma > 0.1


# -- matching cells of two runs ----------------------------------------------------------------


def test_cells_are_matched_by_fingerprint_and_configuration_not_by_name():
    base = [cell(timings(40, seed=10), device="pixel-7"), cell(timings(40, cv=0.02, seed=11), threads=1)]
    cand = [cell(timings(40, 1300.0, seed=12), device="pixel-7-renamed"), cell(timings(40, cv=0.02, seed=13), threads=1)]
    verdicts = {(v.device, v.threads): v for v in gate.compare(base, cand, Settings())}
    assert verdicts[("pixel-7-renamed", 4)].verdict == "regression"
    assert verdicts[("pixel", 1)].verdict == "unchanged"
    assert gate.failing(list(verdicts.values())) == [verdicts[("pixel-7-renamed", 4)]]


def test_a_different_fingerprint_is_listed_never_compared():
    verdicts = gate.compare([cell(timings(40), fingerprint="fp-a")], [cell(timings(40, 3000.0), fingerprint="fp-b")],
                            Settings())
    assert len(verdicts) == 1
    v = verdicts[0]
    assert v.verdict == "not comparable" and v.ratio is None
    assert "device fingerprint differs: baseline fp-a, candidate fp-b" in v.reason
    assert gate.failing(verdicts) == [] and gate.failing(verdicts, strict=True) == verdicts


def test_a_different_runtime_failed_cells_and_cells_of_one_run_are_listed():
    base = [cell(timings(40), variant="fp32"), cell(timings(40), variant="int8"), cell(timings(40), variant="float16"),
            cell(timings(40), variant="dynamic")]
    cand = [cell(timings(40, 2000.0), variant="fp32", runtime="litert 2.4.0"),
            cell([], variant="int8", status="failed", reason="invoke failed: boom"),
            cell(timings(40), variant="int16x8")]
    verdicts = {v.variant: v for v in gate.compare(base, cand, Settings())}
    assert {v.verdict for v in verdicts.values()} == {"not comparable"}
    assert "runtime differs: baseline litert 2.3.0, candidate litert 2.4.0" in verdicts["fp32"].reason
    assert verdicts["int8"].reason == "failed in the candidate: invoke failed: boom"
    assert verdicts["int16x8"].reason == "only in the candidate run"
    assert verdicts["float16"].reason == verdicts["dynamic"].reason == "only in the baseline run"


def test_a_device_that_did_not_answer_is_paired_by_name_and_says_why():
    base = [cell(timings(40))]
    cand = [cell([], fingerprint=None, status="failed", reason="device did not answer: connection refused")]
    verdicts = gate.compare(base, cand, Settings())
    assert [(v.verdict, v.reason) for v in verdicts] == [
        ("not comparable", "failed in the candidate: device did not answer: connection refused")]


def test_settings_out_of_range_name_their_option():
    assert Settings().problems() == []
    options = [o for o, _ in Settings(threshold=5, alpha=0.9, min_samples=1).problems()]
    assert options == ["--threshold", "--alpha", "--min-samples"]


# -- renderings --------------------------------------------------------------------------------


def test_markdown_and_junit_show_every_cell_and_fail_the_regression():
    base = [cell(timings(40, seed=20), variant="fp32"), cell(timings(40, cv=0.02, seed=21), variant="int8"),
            cell(timings(3, seed=22), variant="float16")]
    cand = [cell(timings(40, 1400.0, seed=23), variant="fp32"), cell(timings(40, cv=0.02, seed=24), variant="int8"),
            cell(timings(40, seed=25), variant="float16")]
    verdicts = gate.compare(base, cand, Settings())
    table = gate.markdown(verdicts, "release-1 (r1)", "r2", Settings())
    rows = [line for line in table.splitlines() if line.startswith("| pixel |")]
    assert len(rows) == 3 and "**regression**" in rows[0] and "| fp32 |" in rows[0]  # regressions first
    assert "**1 regression, 1 unchanged, 1 inconclusive**" in table
    shift = next(line for line in table.splitlines() if line.startswith("- pixel: "))
    assert shift.startswith("- pixel: 2 cells compared, median ratio 1.") and "1 slower and 0 faster" in shift
    fp32 = rows[0].split(" | ")
    assert fp32[5].endswith(" µs") and fp32[6].endswith(" ms") and fp32[7].startswith("1.") and "[" in fp32[7] and fp32[9] == "40 / 40"

    root = ElementTree.fromstring(gate.junit(verdicts, "release-1 (r1)", "r2"))
    suite = root.find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("skipped") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"fp32 xnnpack 4t", "int8 xnnpack 4t", "float16 xnnpack 4t"}
    assert cases["fp32 xnnpack 4t"].find("failure").get("type") == "regression"
    assert cases["float16 xnnpack 4t"].find("skipped") is not None
    assert cases["int8 xnnpack 4t"].find("failure") is None and cases["int8 xnnpack 4t"].find("skipped") is None
    strict = ElementTree.fromstring(gate.junit(verdicts, "r1", "r2", strict=True)).find("testsuite")
    assert strict.get("failures") == "2"


# -- the statistics under the gate --------------------------------------------------------------


@pytest.mark.parametrize("n", [51, 50])
def test_the_bootstrap_of_the_median_matches_resampling(n):
    x = timings(n, cv=0.1, seed=30)
    rng = np.random.default_rng(31)
    resampled = np.median(rng.choice(x, (20_000, n)), axis=1)
    drawn = stats.bootstrap_medians(x, 20_000, rng)
    for q in (2.5, 25, 50, 75, 97.5):
        assert np.percentile(drawn, q) == pytest.approx(np.percentile(resampled, q), rel=0.004), q
    if n % 2:  # an odd resample's median is one of the timings
        assert set(np.unique(drawn)) <= set(x)


def test_the_interval_of_the_median_covers_it():
    x = timings(200, seed=32)
    low, high = stats.median_ci(x, 0.95)
    assert low < np.median(x) < high and high - low < 0.05 * np.median(x)


def test_mann_whitney_is_one_sided():
    base, slow = timings(30, seed=33), timings(30, 1200.0, seed=34)
    assert stats.mann_whitney_p(base, slow, "greater") < 1e-6 < 0.5 < stats.mann_whitney_p(base, slow, "less")
    with pytest.raises(ValueError):
        stats.mann_whitney_p(base, slow, "two-sided")


def test_steps_are_found_where_a_series_moved():
    rng = np.random.default_rng(40)
    flat = 100 * np.exp(rng.normal(0, 0.02, 30))
    assert stats.detect_steps(flat) == []
    stepped = flat.copy()
    stepped[18:] *= 1.12
    assert stats.detect_steps(stepped) == [18]
    one_bad_night = flat.copy()
    one_bad_night[10] *= 1.6
    assert stats.detect_steps(one_bad_night) == []
    back_and_forth = flat.copy()
    back_and_forth[10:20] *= 1.15
    assert stats.detect_steps(back_and_forth) == [10, 20]
    # 0.6 % a night for 40 nights: no night-to-night change reaches 5 %, the detector still sees it move
    drift = 100 * 1.006 ** np.arange(40) * np.exp(rng.normal(0, 0.005, 40))
    assert np.all(np.abs(np.diff(np.log(drift))) < np.log(1.05)) and stats.detect_steps(drift)
    assert stats.detect_steps([100, 110]) == []  # too short to tell


# -- device locks ------------------------------------------------------------------------------


def test_a_device_is_locked_by_what_it_is_not_its_name(tmp_path):
    from devices.adb import ADBConfig
    from devices.local import LocalConfig
    from harness.lock import DeviceBusy, DeviceLocks

    messages = []
    first = DeviceLocks([LocalConfig(name="local"), ADBConfig(name="pixel", serial="1A2B")], directory=tmp_path)
    first.acquire({"plan": "nightly"})
    try:
        with pytest.raises(DeviceBusy, match=r"device 'this-host' is being measured by another sweep \(pid \d+, "
                                             r"plan nightly"):
            DeviceLocks([LocalConfig(name="this-host")], directory=tmp_path).acquire()
        # the ADB phone is free again after the failed attempt above released what it took
        other = DeviceLocks([ADBConfig(name="phone", serial="9Z"), ADBConfig(name="pixel-2", serial="1A2B")],
                            wait_s=0.3, log=messages.append, directory=tmp_path, poll_s=0.05)
        with pytest.raises(DeviceBusy, match="after waiting 0.3 s"):
            other.acquire()
        assert other.held == [] and any("waiting for another sweep" in m for m in messages)
    finally:
        first.release()
    with DeviceLocks([LocalConfig(name="this-host"), ADBConfig(name="pixel-2", serial="1A2B")], directory=tmp_path):
        pass


def test_one_device_twice_in_an_inventory_is_locked_once(tmp_path):
    from devices.ssh import SSHConfig
    from harness.lock import DeviceLocks

    messages = []
    same = [SSHConfig(name="pi", host="10.0.0.5", user="pi"), SSHConfig(name="pi-again", host="10.0.0.5", user="pi")]
    with DeviceLocks(same, log=messages.append, directory=tmp_path) as locks:
        assert len(locks.held) == 1
    assert "'pi', 'pi-again' are one device (ssh:pi@10.0.0.5:22)" in messages[0]


# -- the store's baselines ---------------------------------------------------------------------


def test_baselines_name_runs_and_a_schema_2_store_is_upgraded(tmp_path):
    from harness.errors import ConfigError
    from harness.store import SCHEMA_VERSION, Store

    path = tmp_path / "old.sqlite"
    store = Store(path)
    run = store.create_run(plan_name="nightly")
    store.close()
    db = sqlite3.connect(path)  # what a store written before baselines existed looks like
    db.executescript("DROP TABLE baselines; UPDATE meta SET value = '2' WHERE key = 'schema_version';")
    db.commit()
    db.close()

    store = Store(path)
    try:
        assert store.db.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION) == "3"
        assert store.set_baseline("release-1", run, "shipped") is None
        assert store.resolve_baseline("release-1") == (run, "release-1")
        assert store.resolve_baseline(run[:10]) == (run, None)
        other = store.create_run(plan_name="nightly")
        assert store.set_baseline("release-1", other) == run
        assert [(b["tag"], b["run_id"], b["plan_name"]) for b in store.baselines()] == [("release-1", other, "nightly")]
        with pytest.raises(ConfigError, match=r"'nope' is neither a baseline tag \(release-1\) nor a run id"):
            store.resolve_baseline("nope")
        assert store.remove_baseline("release-1") and not store.remove_baseline("release-1")
    finally:
        store.close()
