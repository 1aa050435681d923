"""The gate's renderings: a markdown table for people and JUnit XML for CI. Pure."""

from __future__ import annotations

import math
from typing import Sequence
from xml.etree import ElementTree

import numpy as np

from harness.gate import VERDICTS, Settings, Verdict, _p, failing


def counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    return {v: sum(1 for x in verdicts if x.verdict == v) for v in VERDICTS}


def device_shifts(verdicts: Sequence[Verdict]) -> list[dict]:
    """Per device, how all its compared cells moved: the median and quartiles of their ratios and
    how many regressed or improved. Every cell slower by the same factor points at the device
    (load, thermal state, clocks) rather than at each model."""
    out = []
    for device in dict.fromkeys(v.device for v in verdicts if v.ratio is not None):
        mine = [v for v in verdicts if v.device == device]
        ratios = np.array([v.ratio for v in mine if v.ratio is not None])
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        out.append({"device": device, "compared": int(ratios.size), "median": float(med), "q1": float(q1),
                    "q3": float(q3), "regressions": sum(v.verdict == "regression" for v in mine),
                    "improvements": sum(v.verdict == "improvement" for v in mine),
                    "changed": sum(v.verdict == "device changed" for v in mine)})
    return out


def _ms(us: float | None) -> str:
    """A duration in the unit that shows it with three or more significant digits."""
    if us is None:
        return "—"
    if us < 1000:
        return f"{us:.3g} µs" if us < 100 else f"{us:.0f} µs"
    return f"{us / 1000:.3f} ms" if us < 1e6 else f"{us / 1e6:.2f} s"


def _ratio(v: Verdict) -> str:
    if v.ratio is None:
        return "—"
    if v.ci_low is None or not (v.ci_low > 0 and math.isfinite(v.ci_high)):  # too few pairs for an interval
        return f"{v.ratio:.3f}"
    return f"{v.ratio:.3f} [{v.ci_low:.3f}, {v.ci_high:.3f}]"


def _detectable(v: Verdict) -> str:
    if v.detectable is None or v.verdict not in ("unchanged", "inconclusive", "device changed"):
        return "—"
    return "∞" if not math.isfinite(v.detectable) else f"≥ {v.detectable:.1%}"


def coverage_line(compared: int, measured: int) -> str:
    share = compared / measured if measured else 0.0
    return f"compared {compared} of the baseline's {measured} measured cells ({share:.0%})"


def markdown(verdicts: Sequence[Verdict], baseline: str, candidate: str, settings: Settings,
             notes: Sequence[str] = ()) -> str:
    """The gate's table: per cell the launch means, the ratio with its interval, raw and adjusted p,
    the slowdown the evidence could catch, the verdict and what decided it."""
    n = counts(verdicts)
    lines = [f"## Gate: {candidate} against {baseline}", "",
             f"Evidence is counted in launches (fresh processes), not invokes; launches slowed by interference "
             f"(more than {settings.interference:.0%} above their side's 10th percentile) are left out and counted. "
             f"Regression when the one-sided Welch t-test on the clean log launch medians, Holm-adjusted over the "
             f"compared cells (confirmed: the sequential signed-rank test on interleaved pairs), gives p < "
             f"{settings.alpha:g} and the ratio (candidate / baseline, geometric means) exceeds "
             f"{1 + settings.threshold:.2f}; intervals are {1 - settings.alpha:.0%}. `detectable`: the smallest "
             f"slowdown the evidence would have caught with probability {settings.power:g}.", "",
             "**" + ", ".join(f"{k} {name}" for name, k in n.items() if k) + "**", ""]
    lines += [f"- {note}" for note in notes]
    for d in device_shifts(verdicts):
        lines.append(f"- {d['device']}: {d['compared']} cells compared, median ratio {d['median']:.3f} (quartiles "
                     f"{d['q1']:.3f}–{d['q3']:.3f}), {d['regressions']} slower and {d['improvements']} faster "
                     f"beyond the threshold" + (f", {d['changed']} where only the device changed" if d["changed"] else ""))
    lines += ["", "| device | model | variant | delegate | threads | baseline | candidate | ratio [CI] | p | p adj "
                  "| launches | detectable | verdict | decided by | why |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {name: i for i, name in enumerate(VERDICTS)}
    for v in sorted(verdicts, key=lambda v: order[v.verdict]):
        mark = f"**{v.verdict}**" if v.verdict == "regression" else v.verdict
        launches = f"{v.n_baseline} / {v.n_candidate}" if v.ratio is not None else "—"
        if v.ratio is not None and any(v.interfered):
            launches += f" (+{v.interfered[0]} / +{v.interfered[1]} interfered)"
        lines.append(f"| {v.device} | {v.model} | {v.variant} | {v.delegate} | {v.threads} | "
                     f"{_ms(v.baseline_median_us)} | {_ms(v.candidate_median_us)} | {_ratio(v)} | {_p(v.p_value)} "
                     f"| {_p(v.p_adjusted)} | {launches} | {_detectable(v)} | {mark} | {v.decided_by} "
                     f"| {v.reason.replace('|', '/')} |")
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
        out.text = (f"verdict {v.verdict} ({v.decided_by}); baseline {_ms(v.baseline_median_us)}, candidate "
                    f"{_ms(v.candidate_median_us)}, ratio {_ratio(v)}, p {_p(v.p_value)}, adjusted "
                    f"{_p(v.p_adjusted)}; {v.reason}")
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"
