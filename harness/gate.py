"""The gate: is the candidate run slower than the baseline? Pure: cells and samples in, verdicts
and their renderings (a markdown table, JUnit XML) out; no store, no device, no files.

Cells are matched by (device fingerprint, model, variant, delegate, threads): the same model on
the same hardware and software, whatever the inventory calls the device. For each matched pair:

- `regression`: a one-sided Mann-Whitney U test says the candidate's timings are larger
  (p < alpha) **and** the ratio of medians candidate/baseline exceeds 1 + threshold;
- `improvement`: likewise the other way (p < alpha and ratio below 1 - threshold);
- `inconclusive`: too few samples on a side, or neither of the above while the bootstrap
  interval of the ratio still reaches past a threshold (too noisy to rule a change out);
- `unchanged`: neither, and the interval lies within the thresholds;
- `not comparable`: listed, never compared: the runtime (name or version) differs, the device
  with that name has another fingerprint, the cell failed or has no samples on a side, or it
  is in one run only.

Requiring both the test and the effect size is what keeps 50,000 samples from flagging a 0.3 %
shift, and keeps 10 noisy samples from flagging anything at all.

The test sees only the noise within each run. Many devices also move from run to run (another
tenant, the thermal state, a frequency table): on this project's 2-core VM, two identical quick
sweeps differed by a median 3 % with quartiles at -15 % and +8 %, every cell "significant".
Where the store holds earlier runs of the same configuration on the same fingerprint, their p50s
give that run-to-run spread (sigma of log p50 around its levels): a change it explains at the
gate's alpha, one-sided, is `inconclusive`, with the spread in the reason, never a regression."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence
from xml.etree import ElementTree

import numpy as np

from harness import stats

VERDICTS = ("regression", "improvement", "unchanged", "inconclusive", "not comparable")


@dataclass(frozen=True)
class Settings:
    threshold: float = 0.05  # a change smaller than this fraction of the median is not one
    alpha: float = 0.01  # significance of the one-sided test, and 1 - confidence of the interval
    min_samples: int = 10  # fewer timings than this on a side: inconclusive
    resamples: int = 2000  # bootstrap replicates for the interval of the ratio
    seed: int = 0
    min_history: int = 3  # earlier runs needed to estimate a cell's run-to-run spread

    def problems(self) -> list[tuple[str, str]]:
        """(option, what is wrong with it) for every setting out of range."""
        found = []
        if not 0.0 < self.threshold < 1.0:
            found.append(("--threshold", f"must be between 0 and 1 (a fraction: 0.05 is 5 %), not {self.threshold:g}"))
        if not 0.0 < self.alpha < 0.5:
            found.append(("--alpha", f"must be between 0 and 0.5, not {self.alpha:g}"))
        if self.min_samples < 2:
            found.append(("--min-samples", f"must be at least 2, not {self.min_samples}"))
        return found


@dataclass
class Sampled:
    """One cell of a run, as the gate sees it."""

    device: str
    fingerprint: str | None
    model: str
    variant: str
    delegate: str
    threads: int
    status: str = "ok"
    reason: str | None = None
    runtime: str | None = None  # "name version" of the runtime that measured it
    samples: np.ndarray = field(default_factory=lambda: np.empty(0))
    history: Sequence[float] = ()  # p50 of this configuration in earlier runs (same fingerprint)

    def config(self) -> tuple[str, str, str, int]:
        return (self.model, self.variant, self.delegate, self.threads)

    def key(self) -> tuple:
        return (self.fingerprint, *self.config())


@dataclass
class Verdict:
    device: str
    model: str
    variant: str
    delegate: str
    threads: int
    fingerprint: str | None
    verdict: str
    reason: str
    n_baseline: int = 0
    n_candidate: int = 0
    baseline_median_us: float | None = None
    candidate_median_us: float | None = None
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None  # of the one-sided test in the direction the medians moved
    run_sigma: float | None = None  # run-to-run spread of log p50 from earlier runs, if known

    def label(self) -> str:
        return f"{self.model} {self.variant} on {self.device} {self.delegate} {self.threads}t"


@dataclass(frozen=True)
class RunNoise:
    """A configuration's run-to-run spread: sigma of log p50 around its levels, and the degrees of
    freedom that estimate has."""

    sigma: float
    dof: int
    runs: int


def run_noise(p50s: Sequence[float], min_history: int = 3) -> RunNoise | None:
    """The run-to-run spread of a configuration from its p50 in earlier runs (newest first, as
    Store.p50_history gives them): the pooled standard deviation of log p50 around the levels that
    `stats.detect_steps` finds, so a run that moved for good is a new level, not noise. None with
    fewer than `min_history` runs."""
    values = [v for v in reversed(list(p50s)) if v and v > 0]
    if len(values) < max(3, min_history):
        return None
    y = np.log(np.asarray(values, dtype=np.float64))
    cuts = [0, *stats.detect_steps(values), len(y)]
    dof = len(y) - (len(cuts) - 1)
    if dof < 1:
        return None
    residuals = np.concatenate([y[a:b] - y[a:b].mean() for a, b in zip(cuts, cuts[1:])])
    return RunNoise(float(math.sqrt(np.sum(residuals ** 2) / dof)), dof, len(values))


def judge(baseline: np.ndarray, candidate: np.ndarray, settings: Settings,
          noise: RunNoise | None = None) -> tuple[str, str, dict]:
    """The verdict on two sets of timings of one configuration: (verdict, reason, statistics).
    `noise`: the configuration's run-to-run spread, when earlier runs tell it."""
    nb, nc = len(baseline), len(candidate)
    found: dict = {"n_baseline": nb, "n_candidate": nc}
    if nb:
        found["baseline_median_us"] = stats.median(baseline)
    if nc:
        found["candidate_median_us"] = stats.median(candidate)
    if min(nb, nc) < settings.min_samples:
        return "inconclusive", (f"too few samples: baseline {nb}, candidate {nc} "
                                f"(--min-samples {settings.min_samples} a side)"), found
    base_med, cand_med = found["baseline_median_us"], found["candidate_median_us"]
    if not base_med > 0 or not math.isfinite(cand_med):
        return "inconclusive", f"baseline median {base_med:g} us: no ratio to take", found
    ratio = cand_med / base_med
    low, high = stats.ratio_ci(baseline, candidate, 1.0 - settings.alpha, settings.resamples, settings.seed)
    slower = ratio >= 1.0
    p = stats.mann_whitney_p(baseline, candidate, "greater" if slower else "less")
    found.update(ratio=ratio, ci_low=low, ci_high=high, p_value=p)
    up, down = 1.0 + settings.threshold, 1.0 - settings.threshold
    level = f"{100 * (1 - settings.alpha):g} %"
    change = f"{abs(ratio - 1):.1%} {'slower' if slower else 'faster'}"
    shown = _p(p)
    shown = f"p {shown}" if shown.startswith("<") else f"p = {shown}"
    medians = f"median {_ms(base_med)} -> {_ms(cand_med)}"
    found["run_sigma"] = noise.sigma if noise else None
    # two runs, each off by the run-to-run spread: their log ratio has sigma * sqrt(2); sigma is an
    # estimate with `dof` degrees of freedom, hence Student's t rather than the normal quantile
    explained = noise is not None and abs(math.log(ratio)) <= _t(settings.alpha, noise.dof) * math.sqrt(2.0) * noise.sigma
    moved = (slower and p < settings.alpha and ratio > up) or (not slower and p < settings.alpha and ratio < down)
    spread = f"{math.expm1(noise.sigma):.1%} (sigma over {noise.runs} earlier runs)" if noise else ""
    if moved and explained:
        return "inconclusive", (f"{change} ({medians}), {shown}, but this cell's p50 moves {spread} from run to run: "
                                f"one run a side cannot tell this from that noise at alpha {settings.alpha:g}"), found
    if moved:
        kind = "regression" if slower else "improvement"
        beyond = (f"; beyond run-to-run noise of {spread}" if noise is not None else
                  "; run-to-run noise unknown (too few earlier runs)")
        return kind, (f"{change} ({medians}), {shown}, alpha {settings.alpha:g}, "
                      f"beyond the {settings.threshold:.0%} threshold{beyond}"), found
    if high > up or low < down:
        return "inconclusive", (f"{change}, {shown}: the {level} interval of the ratio [{low:.3f}, {high:.3f}] "
                                f"reaches past {down:.2f}..{up:.2f}, too noisy to decide"), found
    return "unchanged", (f"{change}, {shown}; the {level} interval of the ratio [{low:.3f}, {high:.3f}] "
                         f"lies within {down:.2f}..{up:.2f}"), found


def _t(alpha: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(1.0 - alpha, dof))


def compare(baseline: Sequence[Sampled], candidate: Sequence[Sampled], settings: Settings) -> list[Verdict]:
    """A verdict for every configuration of either run, in the candidate's order, then the
    baseline's cells that the candidate does not have."""
    base_by_key = {c.key(): c for c in baseline}
    base_by_name = {(c.device, *c.config()): c for c in baseline}
    used: set[tuple] = set()
    verdicts = []
    for cand in candidate:
        base = base_by_key.get(cand.key())
        other = base_by_name.get((cand.device, *cand.config())) if base is None else None
        if other is not None and other.key() not in used:
            used.add(other.key())
            if cand.fingerprint is not None and other.fingerprint is not None:
                verdicts.append(_listed(cand, f"device fingerprint differs: baseline {other.fingerprint}, "
                                              f"candidate {cand.fingerprint} (other hardware, OS or settings)"))
            else:  # a device that did not answer has no fingerprint: its failed cell says why
                verdicts.append(_pair(other, cand, settings))
            continue
        if base is None:
            verdicts.append(_listed(cand, "only in the candidate run"))
            continue
        used.add(base.key())
        verdicts.append(_pair(base, cand, settings))
    for base in baseline:
        if base.key() not in used:
            verdicts.append(_listed(base, "only in the baseline run"))
    return verdicts


def _pair(base: Sampled, cand: Sampled, settings: Settings) -> Verdict:
    if base.status != "ok" or cand.status != "ok":
        side, cell = ("baseline", base) if base.status != "ok" else ("candidate", cand)
        if base.status != "ok" and cand.status != "ok":
            side = "both runs"
        return _listed(cand, f"{cell.status} in the {side}: {cell.reason or 'no reason stored'}")
    if base.runtime != cand.runtime:
        return _listed(cand, f"runtime differs: baseline {base.runtime or 'unknown'}, "
                             f"candidate {cand.runtime or 'unknown'}")
    if not len(base.samples) or not len(cand.samples):
        side = "baseline" if not len(base.samples) else "candidate"
        return _listed(cand, f"no timings stored in the {side}")
    verdict, reason, found = judge(np.asarray(base.samples, dtype=np.float64),
                                   np.asarray(cand.samples, dtype=np.float64), settings,
                                   run_noise(cand.history, settings.min_history))
    return Verdict(cand.device, cand.model, cand.variant, cand.delegate, cand.threads, cand.fingerprint,
                   verdict, reason, **found)


def _listed(cell: Sampled, reason: str) -> Verdict:
    return Verdict(cell.device, cell.model, cell.variant, cell.delegate, cell.threads, cell.fingerprint,
                   "not comparable", reason, n_candidate=len(cell.samples))


def counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    return {v: sum(1 for x in verdicts if x.verdict == v) for v in VERDICTS}


def device_shifts(verdicts: Sequence[Verdict]) -> list[dict]:
    """Per device, how all its compared cells moved: the median and quartiles of their ratios and
    how many regressed or improved. Every cell slower by the same factor points at the device
    (load, thermal state, clocks) rather than at each model; ratios spread both ways on identical
    builds measure the device's run-to-run noise, which the samples of one run cannot show."""
    out = []
    for device in dict.fromkeys(v.device for v in verdicts if v.ratio is not None):
        ratios = np.array([v.ratio for v in verdicts if v.device == device and v.ratio is not None])
        mine = [v for v in verdicts if v.device == device]
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        out.append({"device": device, "compared": int(ratios.size), "median": float(med), "q1": float(q1),
                    "q3": float(q3), "regressions": sum(v.verdict == "regression" for v in mine),
                    "improvements": sum(v.verdict == "improvement" for v in mine)})
    return out


def failing(verdicts: Sequence[Verdict], strict: bool = False) -> list[Verdict]:
    """The verdicts that fail the gate: regressions; with `strict`, also every cell that could not
    be shown unchanged (inconclusive, not comparable)."""
    bad = {"regression", "inconclusive", "not comparable"} if strict else {"regression"}
    return [v for v in verdicts if v.verdict in bad]


# -- renderings ---------------------------------------------------------------------------------

def _ms(us: float | None) -> str:
    """A duration in the unit that shows it with three or more significant digits."""
    if us is None:
        return "—"
    if us < 1000:
        return f"{us:.3g} µs" if us < 100 else f"{us:.0f} µs"
    return f"{us / 1000:.3f} ms" if us < 1e6 else f"{us / 1e6:.2f} s"


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return "< 1e-16" if p < 1e-16 else f"{p:.2g}"


def _ratio(v: Verdict) -> str:
    if v.ratio is None:
        return "—"
    if v.ci_low is None:
        return f"{v.ratio:.3f}"
    return f"{v.ratio:.3f} [{v.ci_low:.3f}, {v.ci_high:.3f}]"


def markdown(verdicts: Sequence[Verdict], baseline: str, candidate: str, settings: Settings) -> str:
    """The gate's table: per cell the medians, the ratio with its interval, p, and the verdict."""
    n = counts(verdicts)
    lines = [f"## Gate: {candidate} against {baseline}", "",
             f"Regression when the one-sided Mann-Whitney U test gives p < {settings.alpha:g} and the ratio of "
             f"medians (candidate / baseline) exceeds {1 + settings.threshold:.2f}; the ratio's interval is a "
             f"{100 * (1 - settings.alpha):g} % bootstrap interval.", "",
             "**" + ", ".join(f"{k} {name}" for name, k in n.items() if k) + "**", ""]
    for d in device_shifts(verdicts):
        lines += [f"- {d['device']}: {d['compared']} cells compared, median ratio {d['median']:.3f} (quartiles "
                  f"{d['q1']:.3f}–{d['q3']:.3f}), {d['regressions']} slower and {d['improvements']} faster beyond "
                  "the threshold"]
    lines += ["", "| device | model | variant | delegate | threads | baseline p50 | candidate p50 | ratio [CI] | p "
                  "| samples | verdict | why |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {name: i for i, name in enumerate(VERDICTS)}
    for v in sorted(verdicts, key=lambda v: order[v.verdict]):
        mark = f"**{v.verdict}**" if v.verdict == "regression" else v.verdict
        p = _p(v.p_value)
        samples = f"{v.n_baseline} / {v.n_candidate}" if v.ratio is not None else "—"
        lines.append(f"| {v.device} | {v.model} | {v.variant} | {v.delegate} | {v.threads} | "
                     f"{_ms(v.baseline_median_us)} | {_ms(v.candidate_median_us)} | {_ratio(v)} | {p} | {samples} "
                     f"| {mark} | {v.reason.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def junit(verdicts: Sequence[Verdict], baseline: str, candidate: str, strict: bool = False) -> str:
    """JUnit XML: one test case per cell, so a CI system lists the gate's cells natively. A
    regression is a failure; inconclusive and not comparable cells are skipped (failures with
    `strict`)."""
    bad = failing(verdicts, strict)
    root = ElementTree.Element("testsuites")
    suite = ElementTree.SubElement(root, "testsuite", {
        "name": f"harness gate {candidate} vs {baseline}", "tests": str(len(verdicts)),
        "failures": str(len(bad)),
        "skipped": str(sum(1 for v in verdicts if v not in bad and v.verdict in ("inconclusive", "not comparable"))),
        "errors": "0"})
    for v in verdicts:
        case = ElementTree.SubElement(suite, "testcase", {
            "classname": f"gate.{v.device}.{v.model}", "name": f"{v.variant} {v.delegate} {v.threads}t"})
        if v in bad:
            ElementTree.SubElement(case, "failure", {"type": v.verdict, "message": f"{v.verdict}: {v.reason}"})
        elif v.verdict in ("inconclusive", "not comparable"):
            ElementTree.SubElement(case, "skipped", {"message": f"{v.verdict}: {v.reason}"})
        out = ElementTree.SubElement(case, "system-out")
        p = _p(v.p_value)
        out.text = (f"verdict {v.verdict}; baseline median {_ms(v.baseline_median_us)}, candidate median "
                    f"{_ms(v.candidate_median_us)}, ratio {_ratio(v)}, p {p}; {v.reason}")
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"
