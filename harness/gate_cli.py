"""`harness gate`: the store's runs in, the gate's verdicts (and, with --confirm, new measurements)
out. The statistics are harness/gate.py's; the measuring is harness/confirm.py's."""

from __future__ import annotations

import argparse
import json
import os
import sys

from harness.errors import ConfigError


def sampled(store, run_id: str, history_runs: int = 0) -> list:
    """A run's cells as the gate sees them: each launch's median (or mean, for tools that print only
    that) and, with `history_runs`, the same of that cell in up to that many earlier runs."""
    from harness.gate import Sampled
    from harness.schema import launch_center

    earlier = store.launch_history(run_id, history_runs)
    found = []
    for cell in store.cells(run_id):
        runtime = " ".join(x for x in (cell["runtime_name"], cell["runtime_version"]) if x) or None
        launches = [launch_center(l) for l in store.launches(cell["id"])]
        details = json.loads(cell["details_json"]) if cell["details_json"] else {}
        item = Sampled(cell["device_name"], cell["device_identity"], cell["device_fingerprint"], cell["model"],
                       cell["variant"], cell["delegate"], cell["threads"], cell["status"], cell["reason"], runtime,
                       [x for x in launches if x is not None], artifact=cell["artifact_sha256"],
                       runner=cell["runner_sha256"], protocol=cell["protocol_json"],
                       options=details.get("delegate_options"), cell_id=cell["id"])
        item.history = earlier.get(item.key(), [])
        found.append(item)
    return found


def cmd_gate(args: argparse.Namespace) -> int:
    from harness import gate, gate_report
    from harness.cli import _write_atomically
    from harness.files import check_output
    from harness.store import Store

    settings = gate.Settings(threshold=args.threshold, alpha=args.alpha, min_launches=args.min_launches,
                             catch=args.catch, interference=args.interference, confirm_pairs=args.confirm_pairs)
    for option, problem in settings.problems():
        raise ConfigError("command line", option, problem)
    if not 0.0 <= args.min_compared <= 1.0:
        raise ConfigError("command line", "--min-compared", f"must be a fraction from 0 to 1, not {args.min_compared:g}")
    budget = None
    if args.confirm:
        from harness.confirm import Budget

        budget = Budget.parse(args.confirm_budget)
    check_output("--markdown", args.markdown, [("the results store", args.db)])
    check_output("--junit", args.junit, [("the results store", args.db), ("--markdown's file", args.markdown)])
    store = Store.open_existing(args.db)
    try:
        base_id, tag = store.resolve_baseline(args.baseline)
        try:
            cand_id = store.resolve_run(args.candidate)
        except ConfigError as exc:
            raise ConfigError(exc.source, "--candidate", exc.message) from None
        if cand_id == base_id:
            raise ConfigError(args.db, "--candidate", f"is the baseline run itself ({base_id})")
        baseline, candidate = sampled(store, base_id), sampled(store, cand_id, args.history_runs)
        for name, run_id, cells in (("--baseline", base_id, baseline), ("--candidate", cand_id, candidate)):
            if not any(c.status == "ok" and len(c.launches) for c in cells):
                raise ConfigError(args.db, name, f"run {run_id} has no measured cells ({len(cells)} cells, none ok "
                                                 "with timings): nothing to compare")
        verdicts = gate.compare(baseline, candidate, settings)
        if not any(v.ratio is not None or v.verdict == "inconclusive" for v in verdicts):
            raise ConfigError(args.db, None, f"runs {base_id} and {cand_id} share no comparable cell (same device "
                                             "identity, model, variant, delegate, threads and runtime)")
        notes = []
        if budget is not None:
            notes += _confirm(args, store, verdicts, settings, budget, base_id, cand_id)
    finally:
        store.close()
    compared, measured = gate.coverage(verdicts, baseline)
    notes.insert(0, gate_report.coverage_line(compared, measured))
    short = measured and compared / measured < args.min_compared
    base_name = f"{tag} ({base_id})" if tag else base_id
    table = gate_report.markdown(verdicts, base_name, cand_id, settings, notes)
    sys.stdout.write(table)
    if args.markdown:
        print(f"harness: markdown: {_write_atomically(args.markdown, table)}", file=sys.stderr)
    if args.junit:
        xml = gate_report.junit(verdicts, base_name, cand_id, args.strict)
        print(f"harness: junit: {_write_atomically(args.junit, xml)}", file=sys.stderr)
    bad = gate.failing(verdicts, args.strict)
    counts = ", ".join(f"{n} {name}" for name, n in gate_report.counts(verdicts).items() if n)
    if bad or short:
        print(f"\nGATE FAILED: {counts}", file=sys.stderr)
        for v in bad:
            print(f"  {v.verdict}: {v.label()}: {v.reason}", file=sys.stderr)
        if short:
            print(f"  coverage: {gate_report.coverage_line(compared, measured)}, under --min-compared "
                  f"{args.min_compared:g}: cells the gate cannot judge are not passing ones", file=sys.stderr)
        return 1
    print(f"\ngate passed: {counts}", file=sys.stderr)
    return 0


def _confirm(args, store, verdicts, settings, budget, base_id: str, cand_id: str) -> list[str]:
    """Measure the first pass's suspects again on their devices (holding their machines' locks);
    returns the notes for the table."""
    from harness.artifacts import Cache
    from harness.bench import DeviceBench
    from harness.cli import _inventory_path, _log
    from harness.config import load_inventory
    from harness.confirm import Confirmer
    from harness.lock import DeviceLocks

    wanted = {v.device for v in verdicts if v.baseline is not None
              and v.verdict in ("regression", "inconclusive", "improvement")}
    inventory = load_inventory(_inventory_path(args.inventory))
    configs = [d for d in inventory.devices if d.name in wanted]
    log = _log(False)
    locks = DeviceLocks(configs, args.lock_wait, log)
    locks.acquire({"plan": f"gate --confirm {cand_id}"})
    bench = DeviceBench(store, inventory, Cache(args.cache_dir), base_id, cand_id, log)
    try:
        spent = Confirmer(bench, settings, budget, log).run(verdicts)
    finally:
        bench.close()
        locks.release()
    per_cell = spent.seconds / spent.cells if spent.cells else 0.0
    return [f"confirmation: {spent.cells} cell(s) measured again, {spent.launches} launches, {spent.seconds:.0f} "
            f"device seconds ({per_cell:.0f} s a confirmed cell; budget {budget.cell_s:g} s a cell, "
            f"{budget.night_s:g} s in all)"]


def add_gate_parser(sub, db) -> None:
    from harness.cli import DEFAULT_CACHE, DEFAULT_INVENTORY, count, seconds
    from harness.noise import INTERFERENCE

    p = sub.add_parser(
        "gate", help="fail when a candidate run is slower than a baseline",
        description="Compare every cell of the candidate run with the baseline's cell of the same device identity, "
                    "model, variant, delegate and threads. Evidence is counted in launches (each a fresh process): "
                    "a Welch t-test on the log launch medians (plus the cell's run-to-run spread when earlier runs "
                    "give it), Holm-adjusted across the compared cells; regression when the adjusted p < alpha and "
                    "the ratio exceeds 1 + threshold. With --confirm, every regression or inconclusive cell is "
                    "measured again now, baseline and candidate artifacts interleaved on its device, and only a "
                    "confirmed slowdown fails. Prints a markdown table. Exit 0: no regression; 1: a regression "
                    "(or, with --strict, any cell not shown unchanged; or coverage under --min-compared); 2: an "
                    "error (unknown or empty run, nothing comparable).")
    p.add_argument("--baseline", required=True, help="a baseline tag (`harness baseline set`), a run id or prefix")
    p.add_argument("--candidate", default="latest", help="run id, prefix or 'latest' (default)")
    db(p)
    p.add_argument("--threshold", type=float, default=0.05,
                   help="smallest slowdown that counts, as a fraction (default 0.05; 0.02 catches 5 %% slowdowns)")
    p.add_argument("--alpha", type=float, default=0.01,
                   help="the night's family-wise false-alarm rate (Holm over all compared cells; default 0.01)")
    p.add_argument("--min-launches", type=int, default=2,
                   help="fewer launches free of interference than this on a side make a cell inconclusive "
                        "(default 2)")
    p.add_argument("--interference", type=float, default=INTERFERENCE, metavar="FRACTION",
                   help="a launch this far above its side's 10th percentile was slowed by interference and is left "
                        f"out, counted (default {INTERFERENCE:g}; 0 keeps every launch)")
    p.add_argument("--history-runs", type=count, default=10, metavar="N",
                   help="add each cell's run-to-run spread from its launches in up to N earlier runs on the same "
                        "device (needs 3; default 10; 0: this pair of runs only)")
    p.add_argument("--confirm", action="store_true",
                   help="measure every regression and inconclusive cell again now, baseline and candidate "
                        "artifacts interleaved launch by launch (ABBA) on its device, until a sequential test "
                        "decides or the budget is spent; only confirmed slowdowns fail")
    p.add_argument("--confirm-budget", default="120,1800", metavar="CELL_S[,NIGHT_S]",
                   help="device seconds confirmation may spend per cell and in all (default 120,1800)")
    p.add_argument("--confirm-pairs", type=int, default=96, metavar="N",
                   help="the most A/B pairs a cell is measured for (6 x 2^k: 48, 96, 192, ...; default 96). On a "
                        "busy device most pairs hold an interfered launch: more pairs (and a --confirm-budget "
                        "that affords them) confirm smaller slowdowns")
    p.add_argument("--catch", type=float, metavar="FRACTION",
                   help="the slowdown confirmation must not miss: it stops early once a slowdown this large is "
                        "ruled out (default 3 x --threshold: 6 %% at 0.02)")
    p.add_argument("--min-compared", type=float, default=0.0, metavar="FRACTION",
                   help="fail when fewer than this share of the baseline's measured cells could be compared "
                        "(e.g. a fingerprint change turning cells `not comparable`; default 0: report only)")
    p.add_argument("--inventory", help=f"devices for --confirm (default: ./{DEFAULT_INVENTORY}, else the embedded "
                                       "local device)")
    p.add_argument("--cache-dir", default=os.environ.get("HARNESS_CACHE", DEFAULT_CACHE),
                   help=f"where sweeps kept what they measured, for --confirm (default $HARNESS_CACHE or "
                        f"{DEFAULT_CACHE})")
    p.add_argument("--lock-wait", type=seconds, default=0.0, metavar="SECONDS",
                   help="--confirm: wait this long for a sweep measuring the same device (default 0: exit 2)")
    p.add_argument("--strict", action="store_true",
                   help="also fail on inconclusive and not comparable cells (a cell that failed, a new runtime)")
    p.add_argument("--markdown", metavar="PATH", help="also write the table here")
    p.add_argument("--junit", metavar="PATH", help="write JUnit XML, one test case per cell, for CI systems")
    p.set_defaults(func=cmd_gate)
