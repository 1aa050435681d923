"""Confirmation (`harness gate --confirm`): measure the first pass's suspects again, now, on their
devices, baseline and candidate interleaved launch by launch, until a sequential test decides or
the budget is spent (harness/sequential.py holds the test; harness/bench.py measures).

- Which cells: every `regression` or `inconclusive` of the first pass. Those whose two runs
  measured the same bytes (artifact sha256) with the same runner, runtime and protocol cannot
  have regressed: a difference there is the device's. They are `device changed` (first pass
  slower or faster; re-measured briefly so the row says where the device is now) or `unchanged`.
- When more than CONFIRM_CELLS remain, they are screened while the screen's share of the night's
  budget lasts: a few interleaved pairs of each, most suspect first (by their shift beside the
  device's median shift, so a device-wide move does not crowd out one model's slowdown), then a
  few more of the more suspect three quarters, and so on for up to four rounds. The
  CONFIRM_CELLS whose first pass and screen together point most to a slowdown are the family
  the night's error rate is spent over; each is measured again on fresh pairs by the sequential
  test, up to the cell's budget (a steady cell stops after a look or two, a slowed one takes as
  many pairs as it needs). Choosing on the screen and testing on new pairs keeps the error rate
  whatever the screen saw. The others say what their screen measured.
- A cell whose artifact is gone, whose device is unreachable or now another, or whose runtime
  changed, says so and stays unconfirmed (`inconclusive`).
- Holm over the family's sequential p-values decides which slowdowns are confirmed; only those
  fail the gate.

The Confirmer decides; a bench (harness/bench.py: the real devices, or benchmarks/gate_power.py's
simulated ones) opens cells, runs launches and keeps what they measured."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from harness.errors import ConfigError, DeviceError
from harness.gate import Settings, Verdict, _p, holm
from harness.schedule import ab_blocks
from harness.sequential import Look, PairedSequential, kept_pairs

Log = Callable[[str], None]
IDENTICAL_LAUNCHES = 4  # launches of an unchanged artifact, to say where the device is now
SCREEN_PAIRS = 12  # interleaved pairs of every suspect, to choose the ones the sequential test measures
CONFIRM_CELLS = 8  # how many the sequential test measures: the family the night's alpha is spent over
SCREEN_KEEP = 0.75  # of the screened cells, the more suspect share that gets the next round's pairs
SCREEN_ROUNDS = 4  # rounds of SCREEN_PAIRS at most (the screen's share of the budget permitting)
SCREEN_SHARE = 2 / 3  # of the night's budget the screen may spend; the rest is the sequential test's


@dataclass(frozen=True)
class Budget:
    """Device seconds confirmation may spend: per cell, and per night (the whole gate)."""

    cell_s: float = 120.0
    night_s: float = 1800.0

    @classmethod
    def parse(cls, text: str) -> "Budget":
        parts = [p.strip() for p in text.split(",")]
        try:
            values = [float(p.removesuffix("s")) for p in parts]
        except ValueError:
            values = []
        if len(values) not in (1, 2) or any(not math.isfinite(v) or v <= 0 for v in values):
            raise ConfigError("command line", "--confirm-budget", f"expected SECONDS_PER_CELL[,SECONDS_PER_NIGHT] "
                                                                  f"(e.g. 120,1800), not {text!r}")
        cell = values[0]
        night = values[1] if len(values) == 2 else max(cell, cls.night_s)
        if night < cell:
            raise ConfigError("command line", "--confirm-budget", f"the night's {night:g} s is less than one "
                                                                  f"cell's {cell:g} s")
        return cls(cell, night)


class Bench(Protocol):
    def open(self, v: Verdict) -> str | None: ...  # why the cell cannot be measured now, or None
    def launch(self, v: Verdict, arm: str) -> tuple[float, float]: ...  # (center us, device seconds); arm A|B
    def keep(self, v: Verdict, outcome: str, reason: str | None, pairs: int) -> None: ...  # store what was measured
    def settle(self, v: Verdict, outcome: str) -> None: ...  # the cell's verdict once Holm has decided


@dataclass
class Spent:
    seconds: float = 0.0
    launches: int = 0
    cells: int = 0


@dataclass
class Trial:
    """One cell's confirmation: each pair's baseline (A) and candidate (B) launch centers, the looks
    taken, and why it stopped early."""

    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)
    looks: list[Look] = field(default_factory=list)
    seconds: float = 0.0
    stop: str | None = None


class Confirmer:
    def __init__(self, bench: Bench, settings: Settings, budget: Budget, log: Log = lambda m: None):
        self.bench, self.settings, self.budget, self.log = bench, settings, budget, log
        self.spent = Spent()

    def run(self, verdicts: list[Verdict]) -> Spent:
        suspects = [v for v in verdicts if v.baseline is not None and v.verdict in ("regression", "inconclusive")]
        same = [v for v in verdicts if v.baseline is not None and v.identical
                and v.verdict in ("regression", "inconclusive", "improvement")]
        ordered = sorted((v for v in suspects if not v.identical), key=lambda v: _relative_p(v, verdicts))
        if len(ordered) > CONFIRM_CELLS:
            self.log(f"{len(ordered)} cell(s) to measure again: a screen of {SCREEN_PAIRS} interleaved pairs each "
                     f"(then {SCREEN_PAIRS} more for the more suspect {SCREEN_KEEP:.0%}, round by round), then a "
                     f"sequential test on fresh pairs for the {CONFIRM_CELLS} most suspect; at most "
                     f"{self.budget.cell_s:g} s a cell and {self.budget.night_s:g} s in all")
        elif ordered:
            self.log(f"{len(ordered)} cell(s) to measure again by a sequential test on interleaved pairs; at most "
                     f"{self.budget.cell_s:g} s a cell and {self.budget.night_s:g} s in all")
        family = self._screen(ordered, verdicts)
        test = PairedSequential(self.settings.threshold, self.settings.alpha, self.settings.target,
                                self.settings.power, family=len(family), interference=self.settings.interference,
                                max_pairs=self.settings.confirm_pairs)
        trials = [(v, self._confirm(v, test)) for v in family]
        for (v, trial), p_adj in zip(trials, holm([test.p_value(t.looks) for _, t in trials])):
            if trial.looks:
                _conclude(v, trial, test, p_adj, len(family), self.settings)
                self.bench.settle(v, v.verdict)
        for v in same:
            self._device_only(v)
        return self.spent

    def _screen(self, ordered: list[Verdict], verdicts: list[Verdict]) -> list[Verdict]:
        """Rounds of interleaved pairs among the suspects, while the screen's share of the night's
        budget lasts: SCREEN_PAIRS of every suspect (most suspect first), then SCREEN_PAIRS more of
        the more suspect three quarters of the last round, and so on, up to SCREEN_ROUNDS rounds; the
        CONFIRM_CELLS whose first pass and screen together point most to a slowdown are the family
        the sequential test then measures afresh. Choosing the family on the screen's pairs and
        testing on new ones keeps the test's error rate: what chose a cell never counts as evidence
        against it. When the suspects fit in the family there is nothing to choose and no screen."""
        if len(ordered) <= CONFIRM_CELLS:
            return ordered
        limit = SCREEN_SHARE * self.budget.night_s
        screened: list[tuple[Verdict, Trial]] = []
        for v in ordered:
            if not self._affords(SCREEN_PAIRS, limit):
                _unconfirmed(v, f"the screen's share of the night's budget ({SCREEN_SHARE:.0%} of "
                                f"{self.budget.night_s:g} s) was spent before this cell's turn (cells go most suspect "
                                "first)")
                continue
            trial = Trial()
            if self._screen_pairs(v, trial):
                screened.append((v, trial))
                self.spent.cells += 1
        alive = self._ranked(screened, verdicts)
        for _ in range(SCREEN_ROUNDS - 1):  # the later rounds, while they still choose among more than the family
            alive = alive[:math.ceil(SCREEN_KEEP * len(alive))]
            if len(alive) <= CONFIRM_CELLS:
                break
            failed = next(((v, t) for v, t in alive
                           if not self._affords(SCREEN_PAIRS, limit) or not self._screen_pairs(v, t)), None)
            if failed is not None:  # the budget is spent, or a device failed (that cell leaves the screen)
                if failed[1].stop:
                    screened = [x for x in screened if x[0] is not failed[0]]
                break
            alive = self._ranked(alive, verdicts)
        ranked = self._ranked(screened, verdicts)
        for v, trial in ranked[CONFIRM_CELLS:]:
            d = kept_pairs(np.array(trial.a), np.array(trial.b), self.settings.interference)
            ratio = f"ratio {math.exp(float(np.median(d))):.3f} over {d.size} pair(s) free of interference" if d.size \
                else "no pair free of interference"
            _unconfirmed(v, f"screened ({len(trial.a)} pairs now: {ratio}), not among the {CONFIRM_CELLS} most "
                            "suspect the sequential test measured")
            v.decided_by = f"screen: {len(trial.a)} pairs"
        return [v for v, _ in ranked[:CONFIRM_CELLS]]

    def _screen_pairs(self, v: Verdict, trial: Trial) -> bool:
        """SCREEN_PAIRS more pairs of `v` into `trial`, kept as one screen row; False (`v` out of the
        screen, saying why, and `trial.stop` set) when it cannot be measured."""
        if not trial.a:
            trial.stop = self.bench.open(v)
            if trial.stop:
                _unconfirmed(v, trial.stop)
                return False
        before = len(trial.a)
        try:
            self._pairs(v, trial, before + SCREEN_PAIRS)
        except DeviceError as exc:
            trial.stop = f"device failed: {exc}"
            _unconfirmed(v, trial.stop)
            return False
        finally:
            self.bench.keep(v, "screen", None, len(trial.a) - before)  # each round's launches, as measured
        return True

    def _ranked(self, screened: list[tuple[Verdict, Trial]],
                verdicts: list[Verdict]) -> list[tuple[Verdict, Trial]]:
        """The screened cells, the most suspect first (first pass and screen pairs together)."""
        scores = _screen_scores([(v, kept_pairs(np.array(t.a), np.array(t.b), self.settings.interference))
                                 for v, t in screened], verdicts)
        return [screened[i] for i in sorted(range(len(screened)), key=lambda i: -scores[i])]

    def _affords(self, pairs: int, limit: float) -> bool:
        """Whether `pairs` more pairs fit under `limit` device seconds, at the pace so far."""
        pace = self.spent.seconds / self.spent.launches if self.spent.launches else 0.0
        return self.spent.seconds + 2 * pairs * pace <= limit and self.spent.seconds < limit

    def _pairs(self, v: Verdict, trial: Trial, target: int) -> None:
        """Measure A/B pairs (ABBA BAAB ...) until `trial` has `target` of them."""
        arms = ab_blocks(max(target, self.settings.confirm_pairs))
        while len(trial.a) < target:
            pair = {}
            for arm in arms[2 * len(trial.a):2 * len(trial.a) + 2]:
                center, seconds = self.bench.launch(v, arm)
                trial.seconds += seconds
                self.spent.seconds += seconds
                self.spent.launches += 1
                pair[arm] = center
            trial.a.append(pair["A"])
            trial.b.append(pair["B"])

    def _confirm(self, v: Verdict, test: PairedSequential) -> Trial:
        """A/B pairs look by look until the test decides or the budget is spent."""
        trial = Trial()
        if not self._affords(test.plan[0], self.budget.night_s):
            _unconfirmed(v, f"the night's confirmation budget ({self.budget.night_s:g} s) was spent before this "
                            "cell's turn (cells go most suspect first)")
            return trial
        problem = self.bench.open(v)
        if problem:
            _unconfirmed(v, problem)
            return trial
        target: int | None = test.plan[0]
        while target is not None:
            if trial.a:  # can the next look be afforded, at the pace so far?
                need = trial.seconds / len(trial.a) * (target - len(trial.a))
                if trial.seconds + need > self.budget.cell_s or self.spent.seconds + need > self.budget.night_s:
                    trial.stop = "budget spent"
                    break
            try:
                self._pairs(v, trial, target)
            except DeviceError as exc:
                trial.stop = f"device failed: {exc}"
                break
            trial.looks.append(test.look(np.array(trial.a), np.array(trial.b)))
            last = trial.looks[-1]
            self.log(f"confirm {v.label()}: {last.pairs} pairs ({last.kept} free of interference), ratio "
                     f"{last.ratio:.3f} [{last.low:.3f}, {last.high:.3f}], p {_p(last.p_slower)}"
                     + (f": {last.decision}" if last.decision else ""))
            if last.decision:
                break
            target = test.next_look(len(trial.a))
        # stored as measured; settled to the verdict once Holm over the family has decided
        self.bench.keep(v, "measured" if trial.looks else trial.stop or "undecided", trial.stop, len(trial.a))
        if not trial.looks:
            _unconfirmed(v, trial.stop or "no pair measured")
        return trial

    def _device_only(self, v: Verdict) -> None:
        """A cell whose runs measured the same bytes with the same runner and runtime."""
        same = (f"same artifact ({(v.baseline.artifact or '')[:12]}), runner and runtime in both runs: "
                "a difference can only be the device's")
        v.first_pass, v.decided_by = v.verdict, "same artifact"
        if v.verdict == "inconclusive":
            v.verdict, v.reason = "unchanged", f"{same}; first pass: {v.reason}"
            return
        moved = f"{abs(v.ratio - 1):.1%} {'slower' if v.ratio >= 1 else 'faster'}"
        v.verdict, v.reason = "device changed", f"{same}; the candidate run measured it {moved}"
        if self.spent.seconds >= self.budget.night_s or self.bench.open(v):
            return
        centers = []
        try:
            for _ in range(IDENTICAL_LAUNCHES):
                center, seconds = self.bench.launch(v, "B")
                centers.append(center)
                self.spent.seconds += seconds
                self.spent.launches += 1
        except DeviceError:
            return
        self.bench.keep(v, "device changed", "same artifact in both runs", 0)
        now_us = float(np.exp(np.mean(np.log(centers))))
        v.reason += (f"; re-measured now: {now_us:.4g} us (baseline run {v.baseline_median_us:.4g} us, candidate "
                     f"run {v.candidate_median_us:.4g} us)")
        v.decided_by = f"same artifact; re-measured ({IDENTICAL_LAUNCHES} launches)"


def _conclude(v: Verdict, trial: Trial, test: PairedSequential, p_adj: float, family: int,
              settings: Settings) -> None:
    last = trial.looks[-1]
    first = (f"first pass: {v.verdict}" if v.ratio is None else
             f"first pass: {v.verdict}, {abs(v.ratio - 1):.1%} {'slower' if v.ratio >= 1 else 'faster'}")
    v.first_pass = v.verdict
    v.ratio, v.ci_low, v.ci_high = last.ratio, last.low, last.high
    v.p_value, v.p_adjusted = min(x.p_slower for x in trial.looks), p_adj
    v.detectable = test.detectable(last)
    v.n_baseline = v.n_candidate = last.kept
    v.interfered = (last.pairs - last.kept, last.pairs - last.kept)
    interval = (f"[{last.low:.3f}, {last.high:.3f}]" if last.low > 0 and math.isfinite(last.high) else
                "(too few pairs for an interval at this level)")
    measured = (f"re-measured now, interleaved (ABBA), {last.pairs} pairs ({last.kept} free of interference): "
                f"ratio {last.ratio:.3f} {interval}, signed-rank p {_p(v.p_value)}, "
                f"Holm-adjusted over {family} confirmed cell(s) and {test.looks} looks {_p(p_adj)}")
    if p_adj < settings.alpha and last.ratio > 1.0 + settings.threshold:
        v.verdict, why = "regression", "confirmed"
    elif last.decision in ("improvement", "unchanged"):
        v.verdict, why = last.decision, last.why
    else:
        v.verdict, why = "inconclusive", (f"not decided ({trial.stop or 'after the last look'}): could confirm a "
                                          f"slowdown of {v.detectable:.1%} or more")
    decided = last.decision or v.verdict == "regression"
    v.decided_by = f"confirmation: {last.pairs} pairs" if decided else f"confirmation: budget spent after {last.pairs} pairs"
    v.reason = f"{first}; {measured}: {why}"


def _unconfirmed(v: Verdict, why: str) -> None:
    v.first_pass = v.verdict
    if v.verdict == "regression":
        v.verdict = "inconclusive"
    v.decided_by = "not confirmed"
    v.reason = f"not confirmed: {why}; first pass: {v.first_pass}: {v.reason}"


def _screen_scores(screened: list[tuple[Verdict, np.ndarray]], verdicts: list[Verdict]) -> list[float]:
    """How strongly each screened cell points to a slowdown: the precision-weighted mean of its
    first pass's log ratio beside its device's median shift and its screen pairs' log ratios, in
    standard errors. The screen pairs' spread is pooled over every screened cell (1.4826 x MAD of
    each cell's pairs around its median), as a few pairs cannot tell their own."""
    residuals = np.concatenate([d - np.median(d) for _, d in screened if d.size >= 2] or [np.empty(0)])
    sigma = 1.4826 * float(np.median(np.abs(residuals))) if residuals.size >= 5 else None
    scores = []
    for v, d in screened:
        est, weight = 0.0, 0.0
        shift = _device_shift(v, verdicts)
        if v.ratio and v.se:
            weight += 1.0 / v.se ** 2
            est += (math.log(v.ratio) - shift) / v.se ** 2
        if d.size and sigma:
            weight += d.size / sigma ** 2
            est += float(np.median(d)) * d.size / sigma ** 2
        scores.append(est / math.sqrt(weight) if weight else -math.inf)
    return scores


def _device_shift(v: Verdict, verdicts: list[Verdict]) -> float:
    """The median log ratio of the first pass over the cells of `v`'s device: how the device moved."""
    mine = [x.ratio for x in verdicts if x.device == v.device and x.ratio]
    return float(np.median(np.log(mine))) if mine else 0.0


def _relative_p(v: Verdict, verdicts: list[Verdict]) -> float:
    """How surprising a cell's slowdown is beside its device's median shift (one-sided normal
    p-value of its log ratio minus the device's median log ratio): the order cells are confirmed
    in, so a device-wide move does not crowd out one model's own slowdown."""
    from scipy.stats import norm

    if v.ratio is None or not v.se:
        return 1.0
    return float(norm.sf((math.log(v.ratio) - _device_shift(v, verdicts)) / v.se))
