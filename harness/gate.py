"""The gate: is the candidate run slower than the baseline? Pure: cells and their launches in,
verdicts out; no store, no device (harness/confirm.py measures, harness/gate_report.py renders).

Noise comes in levels. Invokes inside one process share its allocation, cache layout and thread
placement: they move together, so they are not independent samples. Each launch (a fresh
process) lands at its own level; each run (a night: neighbours, thermal state, clocks) at
another. The gate therefore counts launches: a cell's evidence is the log of each launch's
median (benchmark_model: its average), never its pooled invokes. Interference only ever slows a
launch, and on a shared machine it slows some launches as a whole (on this project's VM, 28 % of
launches by 16-65 %): a launch more than `interference` above its side's 10th percentile is left
out as interfered, and the row says how many were.

Cells are matched by device identity (fingerprint + serial, host key or machine id: two boards
of one image are never pooled; a renamed entry of the same board is matched and said so), model,
variant, delegate and threads. For each pair, the first pass:

- compares the clean launches' means of log latency with Welch's t-test; where the store holds >= 3
  earlier runs of the cell on that device, their spread adds the run-to-run level (variance
  between run means beyond what their launches explain, around the levels step detection finds);
- adjusts the one-sided p-values across every compared cell with Holm's step-down method, so
  the night's chance of calling any unchanged cell slower stays under alpha (family-wise);
- `regression`: adjusted p < alpha **and** ratio of geometric means > 1 + threshold;
  `improvement` the other way; `unchanged`: the (1 - alpha) interval of the ratio lies within
  the thresholds; `inconclusive` otherwise, with the smallest slowdown the evidence could have
  caught (`detectable`, at the Bonferroni level alpha / m and the gate's power);
- `not comparable`: another identity or runtime, a failed cell, a cell in one run only.

With confirmation (harness/confirm.py) the regression and inconclusive cells are measured again
now, baseline and candidate artifacts interleaved, and only a confirmed slowdown fails the gate;
where both runs measured the same bytes with the same runner and runtime, a difference can only
be the device's, and the verdict says `device changed`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from harness import stats
from harness.noise import INTERFERENCE, interfered

VERDICTS = ("regression", "improvement", "device changed", "unchanged", "inconclusive", "not comparable")


@dataclass(frozen=True)
class Settings:
    threshold: float = 0.05  # a change smaller than this fraction is not one
    alpha: float = 0.01  # the night's family-wise error rate (Holm), and 1 - confidence of intervals
    min_launches: int = 2  # fewer launches free of interference than this on a side: inconclusive
    min_history: int = 3  # earlier runs needed to estimate a cell's run-to-run spread
    catch: float | None = None  # the slowdown confirmation must not miss (default 3 x threshold)
    power: float = 0.95  # the probability `detectable` and confirmation's futility stop are stated at
    interference: float = INTERFERENCE  # a launch this far above its side's 10th percentile is left out
    confirm_pairs: int = 96  # the most A/B pairs confirmation measures a cell for (6 x 2^k)

    @property
    def target(self) -> float:
        return self.catch if self.catch is not None else 3.0 * self.threshold

    def problems(self) -> list[tuple[str, str]]:
        """(option, what is wrong with it) for every setting out of range."""
        found = []
        if not 0.0 < self.threshold < 1.0:
            found.append(("--threshold", f"must be between 0 and 1 (a fraction: 0.05 is 5 %), not {self.threshold:g}"))
        if not 0.0 < self.alpha < 0.5:
            found.append(("--alpha", f"must be between 0 and 0.5, not {self.alpha:g}"))
        if self.min_launches < 2:
            found.append(("--min-launches", f"must be at least 2, not {self.min_launches}"))
        if self.catch is not None and not self.threshold <= self.catch < 1.0:
            found.append(("--catch", f"must be at least --threshold ({self.threshold:g}) and below 1, not {self.catch:g}"))
        if not 0.0 <= self.interference < 10.0:
            found.append(("--interference", f"must be a fraction >= 0 (0: keep every launch), not {self.interference:g}"))
        from harness.sequential import plan_looks

        try:
            plan_looks(self.confirm_pairs)
        except ValueError as exc:
            found.append(("--confirm-pairs", str(exc)))
        return found


@dataclass
class Sampled:
    """One cell of a run, as the gate sees it."""

    device: str
    identity: str | None
    fingerprint: str | None
    model: str
    variant: str
    delegate: str
    threads: int
    status: str = "ok"
    reason: str | None = None
    runtime: str | None = None  # "name version" of the runtime that measured it
    launches: np.ndarray = field(default_factory=lambda: np.empty(0))  # each launch's median (us)
    artifact: str | None = None  # sha256 of what was measured
    runner: str | None = None  # sha256 of the runner (runner.py, or benchmark_model)
    protocol: str | None = None
    options: dict | None = None  # the delegate options it ran with (NNAPI accelerator, Edge TPU)
    history: Sequence[Sequence[float]] = ()  # launch medians of this cell in earlier runs, newest first
    cell_id: int | None = None

    def config(self) -> tuple[str, str, str, int]:
        return (self.model, self.variant, self.delegate, self.threads)

    def key(self) -> tuple:
        return (self.identity, *self.config())


@dataclass
class Verdict:
    device: str
    model: str
    variant: str
    delegate: str
    threads: int
    identity: str | None
    verdict: str
    reason: str
    n_baseline: int = 0  # clean launches (or, confirmed, clean pairs)
    n_candidate: int = 0
    interfered: tuple[int, int] = (0, 0)  # launches left out as slowed by interference, each side
    baseline_median_us: float | None = None  # geometric mean of the launch medians
    candidate_median_us: float | None = None
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None  # one-sided, in the direction the means moved, before adjustment
    p_adjusted: float | None = None  # Holm over the compared cells (or over the confirmed ones)
    detectable: float | None = None  # smallest slowdown the evidence would have caught (fraction)
    run_sigma: float | None = None  # run-to-run spread from earlier runs, if known
    se: float | None = None  # standard error of the log ratio (first pass)
    decided_by: str = "first pass"
    identical: bool = False  # same artifact, runner, runtime and protocol in both runs
    renamed_from: str | None = None  # the baseline's name for this device, when it was another
    first_pass: str | None = None  # the first pass's verdict, when confirmation changed it
    p_slower: float | None = None
    p_faster: float | None = None
    baseline: Sampled | None = field(default=None, repr=False)
    candidate: Sampled | None = field(default=None, repr=False)

    def label(self) -> str:
        return f"{self.model} {self.variant} on {self.device} {self.delegate} {self.threads}t"


@dataclass(frozen=True)
class RunNoise:
    """A cell's run-to-run spread: sigma of a run's log mean beyond its launches' spread, and the
    degrees of freedom of that estimate."""

    sigma: float
    dof: int
    runs: int


def run_noise(history: Sequence[Sequence[float]], min_history: int = 3,
              interference: float = INTERFERENCE) -> RunNoise | None:
    """The run-to-run level of a cell from its launches in earlier runs (newest first): the variance
    of the runs' clean means around the levels `stats.detect_steps` finds (a run that moved for good
    is a new level, not noise), minus the part their launches explain. None with fewer than
    `min_history` runs."""
    runs = [np.log(np.asarray(r, dtype=np.float64)) for r in reversed(list(history)) if len(r)]
    runs = [r[~interfered(r, interference)] for r in runs if np.all(np.isfinite(r))]
    if len(runs) < max(3, min_history):
        return None
    means = np.array([r.mean() for r in runs])
    cuts = [0, *stats.detect_steps(np.exp(means).tolist()), len(means)]
    dof = len(means) - (len(cuts) - 1)
    if dof < 1:
        return None
    residuals = np.concatenate([means[a:b] - means[a:b].mean() for a, b in zip(cuts, cuts[1:])])
    between = float(np.sum(residuals ** 2)) / dof
    within_dof = sum(r.size - 1 for r in runs)
    if within_dof > 0:  # a single-launch history (older stores) cannot tell launch from run noise
        within = sum(float(np.sum((r - r.mean()) ** 2)) for r in runs) / within_dof
        between = max(0.0, between - within / float(np.mean([r.size for r in runs])))
    return RunNoise(math.sqrt(between), dof, len(runs))


@dataclass
class Evidence:
    """The first pass's statistics of one pair of cells (log scale inside, ratios outside)."""

    n_b: int  # clean launches
    n_c: int
    dropped_b: int  # interfered launches left out
    dropped_c: int
    base_us: float
    cand_us: float
    ratio: float
    se: float
    dof: float
    p_slower: float
    p_faster: float
    noise: RunNoise | None


def _t(q: float, dof: float) -> float:
    from scipy.stats import t

    return float(t.ppf(q, dof))


def clean(launches: np.ndarray, interference: float = INTERFERENCE) -> tuple[np.ndarray, int]:
    """(log centers of the launches interference did not slow, how many were left out)."""
    x = np.log(np.asarray(launches, dtype=np.float64))
    bad = interfered(x, interference)
    return x[~bad], int(bad.sum())


@dataclass(frozen=True)
class Prior:
    """A device's typical launch variance (log scale) and how much it tells about one cell: its
    weight in degrees of freedom (infinite when every cell is as noisy as the rest)."""

    variance: float
    dof: float


def device_prior(cells: Sequence[tuple[np.ndarray, np.ndarray]]) -> Prior | None:
    """The prior of Smyth's moderated t (limma, 2004) from a device's cells, each given as its two
    sides' clean log launches: the cells' pooled within-run variances s2 (d degrees of freedom) are
    modelled as scaled inverse chi-square draws around a prior variance with d0 degrees of freedom;
    the mean and spread of log s2, less what chi2_d alone gives, estimate both. None with fewer
    than three cells with a variance."""
    from scipy.special import digamma, polygamma

    found = []
    for x, y in cells:
        dof = max(0, x.size - 1) + max(0, y.size - 1)
        ss = sum(float(np.sum((z - z.mean()) ** 2)) for z in (x, y) if z.size)
        if dof > 0 and ss > 0:
            found.append((ss / dof, dof))
    if len(found) < 3:
        return None
    s2, d = np.array([f[0] for f in found]), np.array([f[1] for f in found], dtype=np.float64)
    z = np.log(s2) - digamma(d / 2.0) + np.log(d / 2.0)
    excess = float(np.mean((z - z.mean()) ** 2) * len(z) / (len(z) - 1) - np.mean(polygamma(1, d / 2.0)))
    d0 = 2.0 * _trigamma_inverse(excess) if excess > 0 else math.inf
    shift = 0.0 if math.isinf(d0) else float(digamma(d0 / 2.0) - math.log(d0 / 2.0))
    return Prior(float(math.exp(z.mean() + shift)), d0)


def _trigamma_inverse(y: float) -> float:
    """x with trigamma(x) = y (Newton's iteration, as limma's trigammaInverse)."""
    from scipy.special import polygamma

    if y > 1e7:
        return 1.0 / math.sqrt(y)
    if y < 1e-6:
        return 1.0 / y
    x = 0.5 + 1.0 / y
    for _ in range(50):
        tri = float(polygamma(1, x))
        step = tri * (1.0 - tri / y) / float(polygamma(2, x))
        x += step
        if -step / x < 1e-8:
            break
    return x


def evidence(x: np.ndarray, y: np.ndarray, dropped: tuple[int, int] = (0, 0), noise: RunNoise | None = None,
             prior: Prior | None = None) -> Evidence:
    """The moderated t comparison of two sides' clean log launch medians (`clean`): their pooled
    variance shrunk toward the device's (`device_prior`: five launches cannot say on their own how
    noisy a cell is, a night of cells on the device can), with the run-to-run level added when
    known (each run is off by it: the difference of two runs carries it twice)."""
    from scipy.stats import t as student

    dof_own = max(0, x.size - 1) + max(0, y.size - 1)
    own = (float(np.sum((x - x.mean()) ** 2)) + float(np.sum((y - y.mean()) ** 2))) / dof_own if dof_own else 0.0
    if prior is None:
        pooled, dof_launch = own, float(max(1, dof_own))
    elif math.isinf(prior.dof):
        pooled, dof_launch = prior.variance, 1e6
    else:
        pooled = (prior.dof * prior.variance + dof_own * own) / (prior.dof + dof_own)
        dof_launch = prior.dof + dof_own
    parts = [(pooled * (1.0 / x.size + 1.0 / y.size), dof_launch)]
    if noise is not None:
        parts.append((2.0 * noise.sigma ** 2, noise.dof))
    var = sum(v for v, _ in parts)
    diff = float(y.mean() - x.mean())
    if var <= 0.0:  # launch medians identical on each side (a tool that rounds): no spread to test with
        var, dof = 1e-12, 1.0
    else:  # Welch-Satterthwaite degrees of freedom of the summed variances
        dof = var ** 2 / sum(v ** 2 / d for v, d in parts if v > 0)
    se = math.sqrt(var)
    return Evidence(x.size, y.size, dropped[0], dropped[1], math.exp(x.mean()), math.exp(y.mean()), math.exp(diff),
                    se, dof, float(student.sf(diff / se, dof)), float(student.cdf(diff / se, dof)), noise)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input's order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def detectable(ev: Evidence, settings: Settings, family: int) -> float:
    """The smallest slowdown this evidence calls a regression with probability `power`: past the
    Bonferroni level alpha / family (Holm's strictest step) and past the threshold."""
    t_power = _t(settings.power, ev.dof)
    test = (_t(1.0 - settings.alpha / max(1, family), ev.dof) + t_power) * ev.se
    return max(math.expm1(test), (1.0 + settings.threshold) * math.exp(t_power * ev.se) - 1.0)


def compare(baseline: Sequence[Sampled], candidate: Sequence[Sampled], settings: Settings) -> list[Verdict]:
    """A verdict for every configuration of either run, in the candidate's order, then the
    baseline's cells that the candidate does not have."""
    verdicts, pairs = _match(baseline, candidate)
    sides = {id(v): (clean(b.launches, settings.interference), clean(c.launches, settings.interference))
             for v, b, c in pairs}
    priors = {}
    for identity in {v.identity for v, _, _ in pairs}:
        priors[identity] = device_prior([(xb, xc) for v, _, _ in pairs if v.identity == identity
                                         for (xb, _), (xc, _) in [sides[id(v)]]])
    tested = []
    for v, b, c in pairs:
        (x, dropped_x), (y, dropped_y) = sides[id(v)]
        prior = priors[v.identity]
        ev = None
        if x.size and y.size and (prior is not None or x.size + y.size >= 3):
            ev = evidence(x, y, (dropped_x, dropped_y), run_noise(c.history, settings.min_history,
                                                                  settings.interference), prior)
        if ev is not None and min(ev.n_b, ev.n_c) >= settings.min_launches:
            tested.append((v, ev))
            continue
        if ev is not None:  # shown, and ranked for confirmation, but not tested
            _describe(v, ev, settings)
        v.verdict, v.reason = "inconclusive", (
            f"too few launches free of interference: baseline {x.size} of {len(b.launches)}, candidate {y.size} "
            f"of {len(c.launches)} (--min-launches {settings.min_launches} a side)")
    slower = holm([ev.p_slower for _, ev in tested])
    faster = holm([ev.p_faster for _, ev in tested])
    for (v, ev), p_up, p_down in zip(tested, slower, faster):
        _decide(v, ev, p_up, p_down, settings, len(tested))
    return verdicts


def _match(baseline: Sequence[Sampled], candidate: Sequence[Sampled]) -> tuple[list[Verdict], list[tuple]]:
    """Verdicts for every cell (not-comparable ones final), and (verdict, baseline, candidate) for
    the pairs to test. A candidate cell pairs with the baseline's of the same identity and
    configuration (the same inventory name first, where one machine has two entries)."""
    by_key: dict[tuple, list[Sampled]] = {}
    for cell in baseline:
        by_key.setdefault(cell.key(), []).append(cell)
    by_name = {(c.device, *c.config()): c for c in baseline}
    used: set[int] = set()
    verdicts, pairs = [], []
    for cand in candidate:
        options = [b for b in by_key.get(cand.key(), []) if id(b) not in used] if cand.identity else []
        base = next((b for b in options if b.device == cand.device), options[0] if options else None)
        if base is None:
            other = by_name.get((cand.device, *cand.config()))
            if other is not None and id(other) not in used and other.identity and cand.identity:
                used.add(id(other))
                verdicts.append(_listed(cand, f"device identity differs: baseline {other.identity}, candidate "
                                              f"{cand.identity} (another board, or another OS, runtime setting or "
                                              "serial under the same name)"))
            elif other is not None and id(other) not in used:  # a device that did not answer has no identity
                used.add(id(other))
                verdicts.append(_listed(cand, _unmeasured(other, cand)))
            else:
                verdicts.append(_listed(cand, "only in the candidate run"))
            continue
        used.add(id(base))
        problem = _unmeasured(base, cand) if base.status != "ok" or cand.status != "ok" else _incomparable(base, cand)
        if problem:
            verdicts.append(_listed(cand, problem))
            continue
        v = Verdict(cand.device, cand.model, cand.variant, cand.delegate, cand.threads, cand.identity, "inconclusive",
                    "", baseline=base, candidate=cand,
                    identical=bool(base.artifact and (base.artifact, base.runner, base.runtime, base.protocol)
                                   == (cand.artifact, cand.runner, cand.runtime, cand.protocol)),
                    renamed_from=base.device if base.device != cand.device else None)
        verdicts.append(v)
        pairs.append((v, base, cand))
    for base in baseline:
        if id(base) not in used:
            verdicts.append(_listed(base, "only in the baseline run"))
    return verdicts, pairs


def _unmeasured(base: Sampled, cand: Sampled) -> str:
    side, cell = ("baseline", base) if base.status != "ok" else ("candidate", cand)
    if base.status != "ok" and cand.status != "ok":
        side = "both runs"
    return f"{cell.status} in the {side}: {cell.reason or 'no reason stored'}"


def _incomparable(base: Sampled, cand: Sampled) -> str | None:
    if base.runtime != cand.runtime:
        return f"runtime differs: baseline {base.runtime or 'unknown'}, candidate {cand.runtime or 'unknown'}"
    if not len(base.launches) or not len(cand.launches):
        return f"no timings stored in the {'baseline' if not len(base.launches) else 'candidate'}"
    return None


def _describe(v: Verdict, ev: Evidence, settings: Settings) -> None:
    """The first pass's numbers on the verdict: launches, means, ratio and interval, raw p."""
    v.n_baseline, v.n_candidate, v.interfered = ev.n_b, ev.n_c, (ev.dropped_b, ev.dropped_c)
    v.baseline_median_us, v.candidate_median_us, v.ratio = ev.base_us, ev.cand_us, ev.ratio
    half = _t(1.0 - settings.alpha / 2.0, ev.dof) * ev.se
    v.ci_low, v.ci_high = ev.ratio * math.exp(-half), ev.ratio * math.exp(half)
    v.p_slower, v.p_faster = ev.p_slower, ev.p_faster
    v.p_value = ev.p_slower if ev.ratio >= 1.0 else ev.p_faster
    v.run_sigma, v.se = (ev.noise.sigma if ev.noise else None), ev.se


def _decide(v: Verdict, ev: Evidence, p_up: float, p_down: float, settings: Settings, family: int) -> None:
    slower = ev.ratio >= 1.0
    _describe(v, ev, settings)
    v.p_adjusted = p_up if slower else p_down
    v.detectable = detectable(ev, settings, family)
    change = f"{abs(ev.ratio - 1):.1%} {'slower' if slower else 'faster'}"
    left_out = f" ({ev.dropped_b} / {ev.dropped_c} interfered left out)" if ev.dropped_b or ev.dropped_c else ""
    evidence_text = (f"{change} over {ev.n_b} / {ev.n_c} clean launches{left_out}, p {_p(v.p_value)}, "
                     f"Holm-adjusted over {family} cells {_p(v.p_adjusted)}")
    noise = (f"run-to-run spread {math.expm1(ev.noise.sigma):.1%} from {ev.noise.runs} earlier runs included"
             if ev.noise else "run-to-run spread unknown (fewer than 3 earlier runs): launches only")
    up, down = 1.0 + settings.threshold, 1.0 - settings.threshold
    if slower and p_up < settings.alpha and ev.ratio > up:
        v.verdict, v.reason = "regression", f"{evidence_text} < alpha {settings.alpha:g}; {noise}"
    elif not slower and p_down < settings.alpha and ev.ratio < down:
        v.verdict, v.reason = "improvement", f"{evidence_text} < alpha {settings.alpha:g}; {noise}"
    elif v.ci_low >= down and v.ci_high <= up:
        v.verdict, v.reason = "unchanged", (f"{change}; the {1 - settings.alpha:.0%} interval of the ratio "
                                            f"[{v.ci_low:.3f}, {v.ci_high:.3f}] lies within {down:.2f}..{up:.2f}; {noise}")
    else:
        v.verdict, v.reason = "inconclusive", (f"{evidence_text}; the interval [{v.ci_low:.3f}, {v.ci_high:.3f}] "
                                               f"reaches past {down:.2f}..{up:.2f}: could catch a slowdown of "
                                               f"{v.detectable:.1%} or more; {noise}")
    if v.renamed_from:
        v.reason += f"; this device was {v.renamed_from!r} in the baseline (same identity)"


def _listed(cell: Sampled, reason: str) -> Verdict:
    return Verdict(cell.device, cell.model, cell.variant, cell.delegate, cell.threads, cell.identity,
                   "not comparable", reason, n_candidate=len(cell.launches))


def coverage(verdicts: Sequence[Verdict], baseline: Sequence[Sampled]) -> tuple[int, int]:
    """(compared cells, measured cells of the baseline): the share the gate could judge at all."""
    compared = sum(1 for v in verdicts if v.verdict != "not comparable")
    return compared, sum(1 for c in baseline if c.status == "ok" and len(c.launches))


def failing(verdicts: Sequence[Verdict], strict: bool = False) -> list[Verdict]:
    """The verdicts that fail the gate: regressions; with `strict`, also every cell that could not
    be shown unchanged (inconclusive, not comparable)."""
    bad = {"regression", "inconclusive", "not comparable"} if strict else {"regression"}
    return [v for v in verdicts if v.verdict in bad]


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return "< 1e-16" if p < 1e-16 else f"{p:.2g}"
