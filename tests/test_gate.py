"""The gate, pure: verdicts on synthetic launches, Holm across cells, matching by device identity,
coverage, the renderings; the confirmation's sequential test; launch orders; step detection and
device locks."""

from __future__ import annotations

import math
from xml.etree import ElementTree

import numpy as np
import pytest

from harness import gate, gate_report, stats
from harness.gate import RunNoise, Sampled, Settings
from harness.schedule import ab_blocks, rounds
from harness.sequential import LOOKS, PairedSequential


def launches(n: int, median: float = 1000.0, sigma: float = 0.02, seed: int = 0) -> np.ndarray:
    """Launch medians: each launch lands at its own level around the cell's median."""
    return median * np.exp(np.random.default_rng(seed).normal(0.0, sigma, n))


def cell(values, identity="pixel-7#A", device="pixel", variant="int8", runtime="litert 2.3.0", status="ok",
         reason=None, threads=4, artifact=None) -> Sampled:
    return Sampled(device, identity, "fp", "mobilenet_v2", variant, "xnnpack", threads, status, reason, runtime,
                   np.asarray(values, dtype=np.float64), artifact=artifact or f"sha-{variant}", runner="r1",
                   protocol="{}")


def judge(base, cand, settings=Settings(), history=()):
    c = cell(cand)
    c.history = history
    return gate.compare([cell(base)], [c], settings)[0]


# -- one configuration -------------------------------------------------------------------------


def test_a_clear_regression_over_five_launches_a_side():
    v = judge(launches(5, seed=1), launches(5, 1150.0, seed=2))
    assert v.verdict == "regression", v.reason
    assert 1.10 < v.ratio < 1.20 and v.ci_low > 1.05 and v.p_adjusted < 1e-3 and v.n_candidate == 5
    assert "slower over 5 / 5 clean launches" in v.reason
    assert v.decided_by == "first pass"


def test_a_clear_improvement():
    v = judge(launches(5, seed=3), launches(5, 850.0, seed=4))
    assert v.verdict == "improvement" and v.ratio < 0.9 and "faster" in v.reason


def test_steady_launches_are_unchanged_and_say_what_they_could_have_caught():
    v = judge(launches(8, sigma=0.003, seed=5), launches(8, sigma=0.003, seed=6))
    assert v.verdict == "unchanged", v.reason
    assert 0.99 < v.ratio < 1.01 and v.ci_low >= 0.95 and v.ci_high <= 1.05
    assert 0.05 < v.detectable < 0.08  # above the threshold: the evidence cannot see 5 % with 95 % power alone


def test_too_few_launches_is_inconclusive_never_a_pass():
    v = judge(launches(1), launches(5, 2000.0))
    assert v.verdict == "inconclusive" and "baseline 1 of 1, candidate 5 of 5" in v.reason


def test_invokes_of_one_process_are_not_evidence():
    # thousands of invokes per launch would make any shift "significant"; the gate sees 5 launch
    # medians a side, whose spread (each launch at its own level) says how little that is
    noisy = judge(launches(5, sigma=0.10, seed=7), launches(5, 1080.0, sigma=0.10, seed=8))
    assert noisy.verdict == "inconclusive" and noisy.p_value > 0.01 and noisy.detectable > 0.1
    assert "could catch a slowdown of" in noisy.reason


def test_the_run_to_run_level_from_history_widens_the_evidence():
    base, cand = launches(6, seed=9), launches(6, 1150.0, seed=10)
    assert judge(base, cand).verdict == "regression"
    # six earlier runs, each off by ~10 % up or down (no lasting step), launches tight inside
    history = [list((1 + off) * launches(6, seed=11 + i)) for i, off in
               enumerate((0.10, -0.10, 0.08, -0.09, 0.11, -0.07))]
    v = judge(base, cand, history=history)
    assert v.verdict == "inconclusive" and 0.06 < v.run_sigma < 0.15
    assert "run-to-run spread" in v.reason and "from 6 earlier runs included" in v.reason
    assert "run-to-run spread unknown" in judge(base, cand).reason


def test_run_noise_is_taken_around_levels_beyond_launch_noise_and_needs_three_runs():
    assert gate.run_noise([[100.0, 101.0], [102.0, 100.0]]) is None
    rng = np.random.default_rng(12)
    steady = [list(100 * math.exp(rng.normal(0, 0.03)) * np.exp(rng.normal(0, 0.01, 5))) for _ in range(12)]
    noise = gate.run_noise(steady)
    assert noise.runs == 12 and noise.dof == 11 and 0.015 < noise.sigma < 0.05
    # newest first: the last four runs moved up 30 % for good; that is a level, not noise
    moved = [[x * 1.3 for x in run] for run in steady[:4]] + steady[4:]
    shifted = gate.run_noise(moved)
    assert shifted.dof == 10 and shifted.sigma < 1.5 * noise.sigma
    # runs that differ no more than their launches do have no run level of their own
    flat = [list(100 * np.exp(rng.normal(0, 0.02, 5))) for _ in range(10)]
    assert gate.run_noise(flat).sigma < 0.012


def test_holm_controls_the_night_not_each_cell():
    assert gate.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    # 162 unchanged cells, 5 launches a side: each p is uniform, the night's smallest is not
    rng = np.random.default_rng(13)
    false_nights = raw_nights = 0
    for night in range(200):
        base = [cell(launches(5, sigma=0.03, seed=int(rng.integers(1 << 30))), variant=f"v{i}") for i in range(162)]
        cand = [cell(launches(5, sigma=0.03, seed=int(rng.integers(1 << 30))), variant=f"v{i}") for i in range(162)]
        verdicts = gate.compare(base, cand, Settings(threshold=0.02))
        false_nights += any(v.verdict == "regression" for v in verdicts)
        # unadjusted, most nights of 162 cells have a "significant" slower cell past the threshold
        raw_nights += any(v.p_slower < 0.01 and v.ratio > 1.02 for v in verdicts)
        assert all(v.p_adjusted >= v.p_value for v in verdicts)
    assert raw_nights >= 100 and false_nights <= 4  # <= 1 % expected: Holm, not per-cell alpha


# -- matching cells of two runs ----------------------------------------------------------------


def test_two_boards_of_one_image_are_never_cross_matched():
    # pi-a and pi-b share every fingerprint key; their identities (host keys) differ; pi-b is 10 % slower
    base = [cell(launches(5, seed=20), identity="fp#pi-a", device="pi-a"),
            cell(launches(5, 1100.0, seed=21), identity="fp#pi-b", device="pi-b")]
    cand = [cell(launches(5, seed=22), identity="fp#pi-a", device="pi-a")]
    verdicts = gate.compare(base, cand, Settings())
    by_device = {v.device: v for v in verdicts}
    assert 0.95 < by_device["pi-a"].ratio < 1.05 and by_device["pi-a"].verdict != "regression"
    assert by_device["pi-b"].verdict == "not comparable" and by_device["pi-b"].reason == "only in the baseline run"


def test_a_renamed_entry_of_the_same_board_is_matched_and_said_so():
    verdicts = gate.compare([cell(launches(5, seed=23), device="pixel-7")],
                            [cell(launches(5, 1300.0, seed=24), device="pixel-7-lab")], Settings())
    assert [v.verdict for v in verdicts] == ["regression"]
    assert verdicts[0].renamed_from == "pixel-7" and "this device was 'pixel-7' in the baseline" in verdicts[0].reason


def test_another_board_under_the_same_name_is_listed_never_compared():
    verdicts = gate.compare([cell(launches(5), identity="fp#board-1")],
                            [cell(launches(5, 3000.0), identity="fp#board-2")], Settings())
    assert len(verdicts) == 1 and verdicts[0].verdict == "not comparable" and verdicts[0].ratio is None
    assert "device identity differs: baseline fp#board-1, candidate fp#board-2" in verdicts[0].reason
    assert gate.failing(verdicts) == [] and gate.failing(verdicts, strict=True) == verdicts


def test_a_different_runtime_failed_cells_and_cells_of_one_run_are_listed():
    base = [cell(launches(5), variant="fp32"), cell(launches(5), variant="int8"), cell(launches(5), variant="float16"),
            cell(launches(5), variant="dynamic")]
    cand = [cell(launches(5, 2000.0), variant="fp32", runtime="litert 2.4.0"),
            cell([], variant="int8", status="failed", reason="invoke failed: boom"),
            cell(launches(5), variant="int16x8")]
    verdicts = {v.variant: v for v in gate.compare(base, cand, Settings())}
    assert {v.verdict for v in verdicts.values()} == {"not comparable"}
    assert "runtime differs: baseline litert 2.3.0, candidate litert 2.4.0" in verdicts["fp32"].reason
    assert verdicts["int8"].reason == "failed in the candidate: invoke failed: boom"
    assert verdicts["int16x8"].reason == "only in the candidate run"
    assert verdicts["float16"].reason == verdicts["dynamic"].reason == "only in the baseline run"


def test_a_device_that_did_not_answer_is_paired_by_name_and_says_why():
    cand = [cell([], identity=None, status="failed", reason="device did not answer: connection refused")]
    verdicts = gate.compare([cell(launches(5))], cand, Settings())
    assert [(v.verdict, v.reason) for v in verdicts] == [
        ("not comparable", "failed in the candidate: device did not answer: connection refused")]


def test_same_bytes_same_runner_same_runtime_is_marked_identical():
    same = gate.compare([cell(launches(5), artifact="abc")], [cell(launches(5), artifact="abc")], Settings())[0]
    other = gate.compare([cell(launches(5), artifact="abc")], [cell(launches(5), artifact="def")], Settings())[0]
    assert same.identical and not other.identical


def test_coverage_counts_what_could_be_compared():
    base = [cell(launches(5), variant=f"v{i}") for i in range(4)]
    cand = [cell(launches(5), variant="v0"), cell(launches(5), variant="v1", identity="fp#new-board")]
    verdicts = gate.compare(base, cand, Settings())
    assert gate.coverage(verdicts, base) == (1, 4)
    assert gate_report.coverage_line(1, 4) == "compared 1 of the baseline's 4 measured cells (25%)"


def test_settings_out_of_range_name_their_option():
    assert Settings().problems() == []
    options = [o for o, _ in Settings(threshold=5, alpha=0.9, min_launches=1, catch=0.001).problems()]
    assert options == ["--threshold", "--alpha", "--min-launches", "--catch"]
    assert Settings(threshold=0.02).target == pytest.approx(0.06)


# -- renderings --------------------------------------------------------------------------------


def test_markdown_and_junit_show_every_cell_and_fail_the_regression():
    base = [cell(launches(5, seed=30), variant="fp32"), cell(launches(8, sigma=0.003, seed=31), variant="int8"),
            cell(launches(1, seed=32), variant="float16")]
    cand = [cell(launches(5, 1400.0, seed=33), variant="fp32"), cell(launches(8, sigma=0.003, seed=34), variant="int8"),
            cell(launches(5, seed=35), variant="float16")]
    verdicts = gate.compare(base, cand, Settings())
    table = gate_report.markdown(verdicts, "release-1 (r1)", "r2", Settings(), ["compared 3 of 3"])
    rows = [line for line in table.splitlines() if line.startswith("| pixel |")]
    assert len(rows) == 3 and "**regression**" in rows[0] and "| fp32 |" in rows[0]  # regressions first
    assert "**1 regression, 1 unchanged, 1 inconclusive**" in table and "- compared 3 of 3" in table
    shift = next(line for line in table.splitlines() if line.startswith("- pixel: "))
    assert shift.startswith("- pixel: 3 cells compared, median ratio 1.") and "1 slower and 0 faster" in shift
    fp32 = rows[0].split(" | ")
    assert fp32[5].endswith(" ms") and fp32[6].endswith(" ms") and "[" in fp32[7] and fp32[10] == "5 / 5"
    unchanged = next(r for r in rows if "| int8 |" in r).split(" | ")
    assert unchanged[11].startswith("≥ ") and unchanged[13] == "first pass"

    root = ElementTree.fromstring(gate_report.junit(verdicts, "release-1 (r1)", "r2"))
    suite = root.find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("skipped") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["fp32 xnnpack 4t"].find("failure").get("type") == "regression"
    assert cases["float16 xnnpack 4t"].find("skipped") is not None
    assert cases["int8 xnnpack 4t"].find("failure") is None and cases["int8 xnnpack 4t"].find("skipped") is None
    strict = ElementTree.fromstring(gate_report.junit(verdicts, "r1", "r2", strict=True)).find("testsuite")
    assert strict.get("failures") == "2"


# -- the confirmation's sequential test ----------------------------------------------------------


def arms(n: int, slowdown: float, sigma: float, rng, interfered: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Launch centers of n A/B pairs: each pair shares the device's state of the moment; a launch
    is slowed by 20-60 % with probability `interfered`."""
    now = rng.normal(0.0, 0.05, n)

    def arm(shift):
        hit = rng.random(n) < interfered
        return 1000.0 * np.exp(now + shift + rng.normal(0.0, sigma / math.sqrt(2), n) + hit * rng.uniform(0.2, 0.6, n))

    return arm(0.0), arm(math.log1p(slowdown))


def run_sequential(test: PairedSequential, slowdown: float, sigma: float, rng,
                   interfered: float = 0.0) -> tuple[str | None, int, float]:
    a, b = arms(LOOKS[-1], slowdown, sigma, rng, interfered)
    looks = []
    for n in LOOKS:
        looks.append(test.look(a[:n], b[:n]))
        if looks[-1].decision:
            break
    return looks[-1].decision, looks[-1].pairs, test.p_value(looks)


def test_the_sequential_test_confirms_a_slowdown_and_clears_a_steady_cell():
    rng = np.random.default_rng(40)
    test = PairedSequential(threshold=0.02, alpha=0.01, catch=0.05, family=3)
    decision, pairs, p = run_sequential(test, 0.10, 0.03, rng)
    assert decision == "regression" and pairs <= 16 and p < 0.01 / 3
    decision, pairs, _ = run_sequential(test, 0.0, 0.03, rng)
    assert decision == "unchanged" and pairs <= 16
    faster = run_sequential(test, -0.10, 0.03, rng)  # no slowdown to confirm: stops soon
    assert faster[0] in ("improvement", "unchanged") and faster[1] <= 16


def test_the_looks_spend_alpha_where_their_pairs_can_reach_it():
    from harness.sequential import alpha_shares, plan_looks

    assert plan_looks(96) == LOOKS and alpha_shares(5) == (0.0, 0.125, 0.125, 0.25, 0.5)
    for most in (24, 48, 192, 384):  # the last look always spends half; all of them, alpha
        assert plan_looks(most)[-1] == most and math.isclose(sum(alpha_shares(len(plan_looks(most)))), 1.0)
        assert alpha_shares(len(plan_looks(most)))[-1] == 0.5
    with pytest.raises(ValueError, match="6 x 2"):
        plan_looks(100)
    test = PairedSequential(threshold=0.02, alpha=0.01, catch=0.05, family=2)
    a = 1000.0 * np.exp(np.random.default_rng(7).normal(0.0, 0.003, 12))
    b = a * 1.10  # every pair 10 % slower: the smallest p a look of n pairs can give, 2^-n
    six, twelve = test.look(a[:6], b[:6]), test.look(a, b)
    assert six.p_slower == pytest.approx(2.0 ** -6) and six.decision is None  # 1/64: never below alpha
    assert twelve.p_slower == pytest.approx(2.0 ** -12) and twelve.decision == "regression"
    assert 2.0 ** -12 <= test.alpha_look(12) == pytest.approx(0.01 * 0.125 / 2)
    # the cell's p-value: the least p / share over its looks; the first look's p counts for nothing
    assert test.p_value([six]) == 1.0 and test.p_value([six, twelve]) == pytest.approx(2.0 ** -12 / 0.125)


def test_interfered_launches_leave_their_pairs_out():
    from harness.sequential import kept_pairs

    a = np.array([100.0, 101.0, 150.0, 99.0, 100.5, 100.0])
    b = np.array([105.0, 104.0, 106.0, 160.0, 105.5, 104.0])  # 5 % slower; launch 3 of A, 4 of B interfered
    d = kept_pairs(a, b)
    assert d.size == 4 and np.allclose(np.exp(d), [1.05, 1.0297, 1.0498, 1.04], atol=1e-3)
    look = PairedSequential(threshold=0.02, alpha=0.5, catch=0.05).look(a, b)
    assert look.pairs == 6 and look.kept == 4 and 1.03 < look.ratio < 1.05


def test_the_sequential_test_keeps_its_error_rates_whatever_the_stopping():
    rng = np.random.default_rng(41)
    test = PairedSequential(threshold=0.02, alpha=0.01, catch=0.05, family=1)
    null = [run_sequential(test, 0.0, 0.03, rng, interfered=0.25) for _ in range(1000)]
    assert sum(d == "regression" for d, _, _ in null) <= 10  # <= alpha 0.01, whatever the look it stops at
    slow = [run_sequential(test, 0.06, 0.03, rng, interfered=0.25) for _ in range(300)]
    caught = sum(d == "regression" for d, _, _ in slow) / len(slow)
    missed_by_futility = sum(d == "unchanged" for d, _, _ in slow) / len(slow)
    assert caught >= 0.9 and missed_by_futility <= 0.05
    a, b = arms(64, 0.0, 0.03, rng)
    assert test.detectable(test.look(a, b)) < 0.05


class TruthBench:
    """A bench whose launches follow a known truth: the candidate arm of `slowed` cells is that much
    slower, every launch off by `sigma` (log), each launch costing `seconds`. Confirmation's choices
    (which cells, how many pairs, what budget) are the subject here, not measurement."""

    def __init__(self, slowed: dict[str, float], sigma=0.02, seconds=1.0, closed=(), seed=0):
        self.slowed, self.sigma, self.seconds, self.closed = slowed, sigma, seconds, closed
        self.rng = np.random.default_rng(seed)
        self.launched: dict[str, int] = {}
        self.kept: list[tuple[str, str, int]] = []
        self.settled: dict[str, str] = {}

    def open(self, v):
        return "artifact gone from the cache" if v.variant in self.closed else None

    def launch(self, v, arm):
        self.launched[v.variant] = self.launched.get(v.variant, 0) + 1
        slow = 1.0 + self.slowed.get(v.variant, 0.0) if arm == "B" else 1.0
        return 1000.0 * slow * math.exp(self.rng.normal(0.0, self.sigma)), self.seconds

    def keep(self, v, outcome, reason, pairs):
        self.kept.append((v.variant, outcome, pairs))

    def settle(self, v, outcome):
        self.settled[v.variant] = outcome


def suspects(count: int, seed: int = 60) -> list:
    """`count` cells the first pass could not clear (3 % slower, past the threshold, over 3 launches a
    side at a 6 % spread: `inconclusive`, or a first-pass `regression`)."""
    rng = np.random.default_rng(seed)
    base = [cell(launches(3, sigma=0.06, seed=int(rng.integers(1 << 30))), variant=f"v{i}") for i in range(count)]
    cand = [cell(launches(3, 1030.0, sigma=0.06, seed=int(rng.integers(1 << 30))), variant=f"v{i}",
                 artifact=f"sha-v{i}-rebuilt") for i in range(count)]  # new bytes: the model may have changed
    verdicts = gate.compare(base, cand, Settings(threshold=0.02))
    assert all(v.verdict in ("inconclusive", "regression") for v in verdicts), [v.reason for v in verdicts]
    return verdicts


def test_confirmation_measures_few_suspects_directly_and_confirms_only_the_slowed_one():
    from harness.confirm import Budget, Confirmer

    verdicts = suspects(4)
    bench = TruthBench({"v2": 0.08}, closed=("v3",))
    spent = Confirmer(bench, Settings(threshold=0.02), Budget(120, 1800)).run(verdicts)
    by = {v.variant: v for v in verdicts}
    assert by["v2"].verdict == "regression" and by["v2"].decided_by.startswith("confirmation: ")
    assert 1.05 < by["v2"].ratio < 1.11 and "re-measured now, interleaved (ABBA)" in by["v2"].reason
    assert by["v0"].verdict == by["v1"].verdict == "unchanged"  # 4 suspects fit the family: no screen
    assert by["v1"].first_pass == "regression"  # the first pass's 3 launches a side saw a slowdown; now, none
    assert all(outcome != "screen" for _, outcome, _ in bench.kept)
    assert by["v3"].verdict == "inconclusive" and by["v3"].decided_by == "not confirmed"
    assert "artifact gone from the cache" in by["v3"].reason and "v3" not in bench.launched
    assert spent.launches == sum(bench.launched.values()) and spent.seconds == spent.launches
    assert bench.settled == {"v0": "unchanged", "v1": "unchanged", "v2": "regression"}  # v3: never measured


def test_many_suspects_are_screened_and_the_family_is_the_most_suspect():
    from harness.confirm import CONFIRM_CELLS, SCREEN_PAIRS, Budget, Confirmer

    verdicts = suspects(14, seed=61)
    bench = TruthBench({"v5": 0.08, "v11": 0.08}, seed=1)
    Confirmer(bench, Settings(threshold=0.02), Budget(120, 1800)).run(verdicts)
    by = {v.variant: v for v in verdicts}
    assert by["v5"].verdict == by["v11"].verdict == "regression"
    screened_only = [v for v in verdicts if v.decided_by.startswith("screen: ")]
    assert len(screened_only) == 14 - CONFIRM_CELLS and all(v.verdict == "inconclusive" for v in screened_only)
    assert all("not among the 8 most suspect" in v.reason for v in screened_only)
    # rounds of SCREEN_PAIRS: all 14, then the more suspect 3/4 of those (11), then of those (9);
    # 3/4 of 9 would be no more than the family, so the screen stops there
    rounds = {}
    for variant, outcome, pairs in bench.kept:
        if outcome == "screen":
            assert pairs == SCREEN_PAIRS
            rounds[variant] = rounds.get(variant, 0) + 1
    assert len(rounds) == 14 and sorted(rounds.values()) == [1] * 3 + [2] * 2 + [3] * 9
    assert rounds["v5"] == rounds["v11"] == 3  # the slowed ones stay among the most suspect
    assert all(v.decided_by == f"screen: {SCREEN_PAIRS * rounds[v.variant]} pairs" for v in screened_only)


def test_the_budget_bounds_what_confirmation_spends():
    from harness.confirm import Budget, Confirmer

    verdicts = suspects(4, seed=62)
    bench = TruthBench({}, sigma=0.10, seconds=1.0, seed=2)  # too noisy to decide in a few pairs
    spent = Confirmer(bench, Settings(threshold=0.02), Budget(30, 50)).run(verdicts)
    assert spent.seconds <= 50 + 2 and max(bench.launched.values()) <= 30
    assert not any(v.verdict in ("regression", "unchanged") and "budget" in v.decided_by for v in verdicts)
    late = [v for v in verdicts if "night's confirmation budget (50 s) was spent" in v.reason]
    assert late and all(v.verdict == "inconclusive" for v in late)


def test_the_signed_rank_distribution_is_exact():
    from itertools import product

    from harness.sequential import signed_rank_cdf

    n = 6
    sums = [sum(r for r, s in zip(range(1, n + 1), signs) if s) for signs in product((0, 1), repeat=n)]
    brute = np.cumsum(np.bincount(sums, minlength=n * (n + 1) // 2 + 1)) / 2 ** n
    assert np.allclose(signed_rank_cdf(n), brute) and signed_rank_cdf(n)[-1] == pytest.approx(1.0)


# -- launch orders ------------------------------------------------------------------------------


def test_launches_are_interleaved_in_rounds_reproducibly():
    cells = [f"c{i}" for i in range(6)]
    order = rounds(cells, 4, seed=7, machine="local")
    assert order == rounds(cells, 4, seed=7, machine="local") != rounds(cells, 4, seed=8, machine="local")
    assert [k for _, k in order] == [k for k in range(4) for _ in cells]  # launch k of every cell in round k
    assert all(sorted(c for c, k in order if k == r) == cells for r in range(4))
    assert all(a[0] != b[0] for a, b in zip(order, order[1:]))  # never one cell twice in a row
    firsts = {rounds(cells, 4, seed=seed, machine="local")[r * 6][0] for seed in range(5) for r in range(4)}
    assert firsts == set(cells)  # no cell (fp32, say) is always measured first
    assert ab_blocks(4) == list("ABBABAAB")


# -- the statistics under the gate (history) -----------------------------------------------------


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


# -- machine locks ------------------------------------------------------------------------------


def test_a_machine_is_locked_by_what_it_is_not_its_name(tmp_path):
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


def test_entries_of_one_machine_share_one_lock_and_one_worker(tmp_path):
    from devices.local import LocalConfig
    from devices.ssh import SSHConfig
    from harness.lock import DeviceLocks, machine_of

    same = [SSHConfig(name="pi", host="10.0.0.5", user="pi"), SSHConfig(name="pi-again", host="10.0.0.5", user="root")]
    with DeviceLocks(same, directory=tmp_path) as locks:
        assert len(locks.held) == 1
    assert machine_of(same[0]) == machine_of(same[1]) == "ssh:10.0.0.5:22"
    coral = LocalConfig(name="coral-usb", accelerator="edgetpu", edgetpu_device="usb:0")
    assert machine_of(LocalConfig(name="local")) == machine_of(coral) == "local"
    assert machine_of(SSHConfig(name="loop", host="127.0.0.1", port=2222)) == "local"  # this host, over loopback


# -- the device's launch variance (moderated t) and the noise levels -------------------------------


def test_the_device_prior_weighs_one_cell_by_how_alike_the_cells_are():
    rng = np.random.default_rng(60)
    alike = [(rng.normal(0, 0.03, 5), rng.normal(0, 0.03, 5)) for _ in range(60)]
    prior = gate.device_prior(alike)
    assert prior.dof > 30 and 0.025 < math.sqrt(prior.variance) < 0.035
    mixed = [(rng.normal(0, s, 5), rng.normal(0, s, 5)) for s in rng.choice([0.01, 0.06], 60)]
    assert gate.device_prior(mixed).dof < 10  # cells this unlike each other lend one another little
    assert gate.device_prior(alike[:2]) is None
    # one clean launch a side still has a variance to be tested against: the device's
    one = gate.evidence(np.array([np.log(1000.0)]), np.array([np.log(1100.0)]), prior=prior)
    assert one.n_b == one.n_c == 1 and one.dof > 30 and one.p_slower < 0.01


def test_the_noise_levels_are_recovered_from_repeated_runs():
    from harness.noise import estimate

    rng = np.random.default_rng(61)
    cells, runs, launches = 40, 5, 5
    shifts = rng.normal(0, 0.03, runs)  # the device moves 3 % from run to run
    data = {}
    for c in range(cells):
        per_run = []
        for r in range(runs):
            x = shifts[r] + rng.normal(0, 0.02, launches)  # launches spread 2 %
            hit = rng.random(launches) < 0.2  # a fifth slowed by interference, by 30-50 %
            x[hit] += rng.uniform(0.3, 0.5, hit.sum())
            per_run.append([(r * 1000 + c * launches + k, float(1000 * np.exp(v))) for k, v in enumerate(x)])
        data[("m", c)] = per_run
    found = estimate(data)
    assert 0.014 < found.launch_sigma < 0.024  # the clean launches' spread (a little truncated)
    assert 0.12 < found.interfered < 0.28 and found.cell_run_sigma < 0.01
    assert 0.015 < found.device_run_sigma < 0.06
    assert 0.3 < np.median(found.interference_offsets) < 0.5
    assert any("interference" in line for line in found.describe())
