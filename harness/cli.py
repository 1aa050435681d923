"""`harness`: the command line. Heavy modules are imported inside the commands, so `--help` is
instant and TensorFlow is loaded only by the build worker, when something must be converted."""

from __future__ import annotations

import argparse
import errno
import math
import os
import re
import sqlite3
import sys
from pathlib import Path

from harness.errors import ConfigError, HarnessError

DEFAULT_DB = "results/harness.sqlite"
DEFAULT_PLAN = "plans/quick.yaml"
DEFAULT_INVENTORY = "inventory.yaml"
DEFAULT_CACHE = "results/cache"


def _log(quiet: bool):
    def log(message: str) -> None:
        if not quiet:
            print(f"harness: {message}", file=sys.stderr, flush=True)
    return log


def _inventory_path(arg: str | None) -> str | None:
    """--inventory, else ./inventory.yaml when present, else None (the embedded default: this host)."""
    if arg:
        return arg
    return DEFAULT_INVENTORY if Path(DEFAULT_INVENTORY).exists() else None


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness.artifacts import Cache
    from harness.build import check_data, check_model_files, require_converter
    from harness.config import load_inventory, load_plan, select_devices
    from harness.files import check_output
    from harness.lock import DeviceLocks
    from harness.report import render
    from harness.store import Store
    from harness.sweep import run_sweep

    log = _log(args.quiet)
    _stop_on_sigterm()
    store = Store.open_existing(args.db) if args.resume else None
    try:
        resume = _resume_settings(args, store) if store is not None else None
        inventory = load_inventory(_inventory_path(args.inventory))
        plan = load_plan(args.plan or _default_plan(), inventory)
        if resume is not None and plan.sha256 != resume["plan_sha256"]:
            raise ConfigError(plan.source, None, f"changed since run {resume['id']} was made (sha256 "
                                                 f"{plan.sha256[:12]}, the run's {resume['plan_sha256'][:12]}); "
                                                 "--resume needs the plan the run was made with")
        targets = select_devices(plan, inventory, args.devices)
        check_output("--html", args.html, [("the results store", args.db), ("the plan", plan.source),
                                           ("the inventory", inventory.source)])
        cache = Cache(args.cache_dir)
        cache.check()
        require_converter(plan, cache)
        check_model_files(plan)
        check_data(plan, cache)  # before anything is trained: the user's data, as far as the model is known
        if store is None and Path(args.db).exists():  # a file that is not a store is refused before anything runs
            store = Store(args.db)
        on_lab = _lab_devices(args, inventory, targets)
        log(f"plan {plan.name} ({plan.source}), inventory {inventory.source}, store {args.db}, cache {args.cache_dir}")
        # waiting for another sweep is said even with --quiet: a sweep that seems to hang must say why
        locks = DeviceLocks([inventory.get(t.device) for t in targets if t.device not in on_lab], args.lock_wait,
                            _log(False))
        locks.acquire({"plan": plan.name})
        lab = None
        try:
            lab = _join_lab(args, inventory, on_lab, log)
            store = store or Store(args.db)
            try:
                run_id = run_sweep(inventory, plan, targets, store, cache, log, argv=sys.argv[1:],
                                   resume=resume["id"] if resume else None, lab=lab)
            except ConfigError:  # refused while building (the user's data does not fit the model)
                if store.discard_if_unused():
                    store = None
                raise
        finally:
            if lab is not None:
                lab.close()
                lab.ray.shutdown()
            locks.release()
        run, cells = store.run(run_id), store.cells(run_id)
        sys.stdout.write(render("markdown", cells, run, store.devices_of_run(run_id)))
        counts = store.status_counts(run_id)
        print(f"\nrun {run['status']}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
              + f"; stored in {args.db} as run")
        if args.html:
            print(f"report: {_write_atomically(args.html, _html(store, run_id))}")
        print(run_id)
        return 1 if run["status"] == "failed" else 0
    finally:
        if store is not None:
            store.close()


def _lab_devices(args: argparse.Namespace, inventory, targets) -> list[str]:
    """The sweep's devices on lab hosts; refused without --cluster, before anything runs."""
    on_lab = [t.device for t in targets if t.device in inventory.lab_hosts]
    if args.cluster:
        from lab.cluster import check_address

        check_address(args.cluster, args.allow_public_cluster)
    elif on_lab:
        name = on_lab[0]
        index = [d.name for d in inventory.devices].index(name)
        raise ConfigError(inventory.source, f"devices[{index}].lab_host",
                          f"device {name!r} is attached to lab host {inventory.lab_hosts[name]}: pass --cluster "
                          "ADDRESS (auto, HOST:PORT or ray://HOST:PORT) to measure it there, or --devices without it")
    return on_lab


def _join_lab(args: argparse.Namespace, inventory, on_lab: list[str], log):
    """The lab's agents for the devices on lab hosts (lab/dispatch.py), or None when there are none."""
    if not on_lab:
        if args.cluster:
            log(f"--cluster {args.cluster}: no device of this sweep names a lab_host; all measured from here")
        return None
    from lab.cluster import connect
    from lab.dispatch import Lab

    ray = connect(args.cluster, args.allow_public_cluster, log)
    try:
        return Lab(ray, inventory, on_lab, args.lock_wait, _log(False)).acquire()
    except BaseException:
        ray.shutdown()
        raise


def _default_plan() -> str:
    """plans/quick.yaml here, or the harness's own when this directory has none."""
    from harness.provenance import PROJECT_ROOT

    here = Path(DEFAULT_PLAN)
    return str(here if here.exists() else Path(PROJECT_ROOT) / DEFAULT_PLAN)


def _stop_on_sigterm() -> None:
    """A service manager stops a sweep with SIGTERM: end it as Ctrl-C does (the cell in hand
    finishes, the run is marked `interrupted`, device locks are released), not mid-write."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)


def _resume_settings(args: argparse.Namespace, store) -> dict:
    """For `--resume RUN`: the run, and the plan, inventory and devices it was made with, unless
    given again on this command line."""
    import json

    run = store.run(store.resolve_run(args.resume))
    if run["status"] == "ok":
        counts = store.status_counts(run["id"])
        raise ConfigError(str(args.db), "--resume", f"run {run['id']} finished with every cell settled "
                          f"({', '.join(f'{n} {s}' for s, n in sorted(counts.items())) or 'no cells'}): "
                          "nothing is left to measure")
    original = parser().parse_args(json.loads(run["argv_json"] or '["sweep"]'))
    args.plan = args.plan or run["plan_path"]
    if args.inventory is None and run["inventory_path"] and not run["inventory_path"].startswith("<"):
        args.inventory = run["inventory_path"]
    args.devices = args.devices or original.devices
    args.cluster = args.cluster or original.cluster
    args.allow_public_cluster = args.allow_public_cluster or original.allow_public_cluster
    return run


def cmd_report(args: argparse.Namespace) -> int:
    from harness.files import check_output
    from harness.report import render
    from harness.store import Store

    if args.wide and args.format != "markdown":
        raise ConfigError("command line", "--wide", f"is a markdown view; --format {args.format} has one layout")
    check_output("--out", args.out, [("the results store", args.db)])
    store = Store.open_existing(args.db)
    try:
        run_id = store.resolve_run(args.run)
        if args.format == "html":
            text = _html(store, run_id)
        else:
            text = render(args.format, store.cells(run_id), store.run(run_id), store.devices_of_run(run_id),
                          wide=args.wide)
    finally:
        store.close()
    if args.out:
        written = _write_atomically(args.out, text)
        if written.is_file():
            print(written)
    else:
        sys.stdout.write(text)
    return 0


def _html(store, run_id: str) -> str:
    """The HTML page of a run: its cells with their raw timings, and each model's history on each
    device of the run (the trend figure)."""
    from harness.html_report import render_html

    cells = store.cells(run_id)
    samples = {c["id"]: store.samples(c["id"]) for c in cells if c["status"] == "ok"}
    history = {}
    for model, device in dict.fromkeys((c["model"], c["device_name"]) for c in cells if c["status"] == "ok"):
        rows = store.history(model, device, "latency_p50_us", until=run_id)
        history[(model, device)] = rows
    return render_html(cells, store.run(run_id), store.devices_of_run(run_id), samples, history)


def cmd_export(args: argparse.Namespace) -> int:
    from harness import export
    from harness.files import check_output
    from harness.metrics import UNITS
    from harness.store import Store

    check_output("--out", args.out, [("the results store", args.db)])
    store = Store.open_existing(args.db)
    try:
        if args.run == "all":
            ids = [r[0] for r in store.db.execute("SELECT id FROM runs ORDER BY started_at, rowid")]
        else:
            ids = [store.resolve_run(args.run)]
        runs = [(store.run(run_id), store.cells(run_id)) for run_id in ids]
        if args.samples:
            frame = export.sample_rows(runs, store.launch_samples)
        else:
            frame = export.metric_rows(runs, UNITS)
    finally:
        store.close()
    written = export.write(frame, args.format, Path(args.out))
    if written.is_file():  # not when it was standard output (/dev/stdout) or a pipe: the path would join the data
        print(written)
    print(f"harness: {len(frame):,} rows of {'samples' if args.samples else 'metrics'} from {len(ids)} run(s)",
          file=sys.stderr)
    return 0


def _write_atomically(path: str, text: str) -> Path:
    from harness.files import atomic_path

    out = Path(path)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return out


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 <= value < math.inf):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def count(text: str) -> int:
    """argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


TAG = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"  # a baseline tag: a name in a command line and a CI file


def cmd_baseline(args: argparse.Namespace) -> int:
    from harness.store import Store

    if args.action == "set":
        if not args.run or not args.tag:
            raise ConfigError("command line", "baseline set", "needs a run and --tag NAME")
        if not re.fullmatch(TAG, args.tag) or args.tag == "latest":
            raise ConfigError("command line", "--tag", f"{args.tag!r}: a tag is 1 to 64 letters, digits, '.', "
                              "'_' or '-', starting with a letter or digit, and not 'latest'")
        store = Store.open_existing(args.db)
        try:
            run_id = store.resolve_run(args.run)
            runs = [r[0] for r in store.db.execute("SELECT id FROM runs WHERE id LIKE ?",
                                                   (args.tag.replace("%", "") + "%",))]
            if runs or re.fullmatch(r"\d{8}-.*", args.tag):
                raise ConfigError("command line", "--tag", f"{args.tag!r} looks like a run id"
                                  + (f" ({runs[0]})" if runs else "") + ": `--baseline` would not know which "
                                  "you meant; give the tag a name (release-1.4, nightly)")
            if not store.status_counts(run_id).get("ok"):
                raise ConfigError(str(args.db), "baseline set", f"run {run_id} ({store.run(run_id)['status']}) "
                                                                "has no ok cell to compare against")
            before = store.set_baseline(args.tag, run_id, args.note)
        finally:
            store.close()
        moved = f" (it named {before} before)" if before and before != run_id else ""
        print(f"baseline {args.tag} = run {run_id}{moved}")
        return 0
    if args.action == "remove":
        if not args.run:
            raise ConfigError("command line", "baseline remove", "needs the TAG to remove")
        store = Store.open_existing(args.db)
        try:
            if not store.remove_baseline(args.run):
                raise ConfigError(args.db, "baseline", f"no baseline tagged {args.run!r}")
        finally:
            store.close()
        print(f"baseline {args.run} removed")
        return 0
    store = Store.open_existing(args.db)
    try:
        rows = store.baselines()
    finally:
        store.close()
    if not rows:
        print("no baselines yet: harness baseline set RUN --tag NAME")
        return 0
    _print_table([("tag", "run", "run started", "plan", "commit", "ok cells", "set at", "note")] +
                 [(r["tag"], r["run_id"], r["started_at"], r["plan_name"] or "—", (r["git_commit"] or "—")[:12],
                   r["ok_cells"], r["set_at"], r["note"] or "") for r in rows])
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    import csv

    from harness import history
    from harness.files import check_output
    from harness.store import Store

    if not (args.min_change >= 0):  # NaN too
        raise ConfigError("command line", "--min-change", f"must be a fraction >= 0 (0.05 is 5 %), not {args.min_change:g}")
    out = args.plot or f"results/history-{args.model}-{args.device}.png"
    check_output("--plot", out, [("the results store", args.db)])
    store = Store.open_existing(args.db)
    try:
        rows = store.history(args.model, args.device, args.metric)
        names = store.metric_names(args.model, args.device) if rows else []
    finally:
        store.close()
    if rows and args.metric not in names:
        raise ConfigError(args.db, "--metric", f"no metric {args.metric!r} stored for {args.model!r} on "
                                               f"{args.device!r} (stored: {', '.join(names)})")
    rows = [r for r in rows if (not args.variant or r["variant"] == args.variant)
            and (not args.delegate or r["delegate"] == args.delegate)
            and (args.threads is None or r["threads"] == args.threads)]
    if not rows:
        wanted = ", ".join(f"{k} {v}" for k, v in (("variant", args.variant), ("delegate", args.delegate),
                                                    ("threads", args.threads)) if v is not None)
        raise ConfigError(args.db, "--model/--device", f"no measured cells of {args.model!r} on {args.device!r}"
                                                       + (f" with {wanted}" if wanted else ""))
    series = history.series(rows, min_change=args.min_change)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(history.COLUMNS)
    for row in history.rows(series):
        writer.writerow(row)
    path = history.plot(series, args.model, args.device, args.metric, Path(out))
    for s in series:
        for step in s.steps:
            print(f"harness: step: {s.label} {args.metric} moved {step.change:+.1%} at run {step.run_id} "
                  f"({step.started_at}, commit {(step.git_commit or '?')[:12]})", file=sys.stderr)
    print(f"harness: plot: {path}", file=sys.stderr)
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    import devices
    from harness.config import load_inventory

    inventory = load_inventory(_inventory_path(args.inventory))
    if args.trust:
        return _trust(inventory, args.trust)
    from devices import coral

    from devices.base import device_identity

    rows = [("device", "transport", "reachable", "runtime", "edge tpu", "identity", "board", "os", "cpu",
             "kernel", "governor", "temp")]
    notes = []
    for config in inventory.devices:
        if config.name in inventory.lab_hosts:  # reached through the lab's cluster, not from here
            notes.append(f"{config.name}: attached to lab host {inventory.lab_hosts[config.name]}; "
                         "`harness lab-host status --cluster ADDRESS` lists the lab's devices")
            rows.append((config.name, config.transport, f"lab host ({len(notes)})", *("—",) * 9))
            continue
        device = devices.open_device(config, _log(False))
        try:
            health = device.health()
        finally:
            device.close()
        fp = dict(health.fingerprint or {})
        mark = ""  # the number of the note under the table that says why
        if health.detail:
            notes.append(health.detail if health.detail.startswith(f"{config.name}:") else
                         f"{config.name}: {health.detail}")
            mark = f" ({len(notes)})"
        reachable = "yes" if health.reachable else f"NO{mark}"
        runtime = ("—" if not health.reachable else
                   f"{health.runtime} {health.runtime_version}" if health.runtime else f"MISSING{mark}")
        edgetpu = "—"
        if getattr(config, "accelerator", None) == "edgetpu" and health.reachable:
            state, problem = coral.describe(health.edgetpu)
            edgetpu = f"{state}{mark if problem else ''}"
        identity = device_identity(fp, config.name) if fp.get("fingerprint_id") else "—"
        rows.append((config.name, config.transport, reachable, runtime, edgetpu, identity,
                     fp.get("device_model") or "—", fp.get("os") or "—",
                     f"{fp.get('cpu_model', '—')} × {fp.get('cores', '—')}" if fp else "—",
                     f"{fp.get('machine', '')} {fp.get('kernel', '')}".strip() or "—", fp.get("governor") or "—",
                     "—" if health.temperature_c is None else f"{health.temperature_c:.1f} °C"))
    _print_table(rows)
    for n, note in enumerate(notes, 1):
        print(f"({n}) {note}")
    return 0


def _trust(inventory, name: str) -> int:
    """Fetch an SSH device's host key, show its fingerprint, and record it in its known_hosts."""
    from devices.ssh import host_key_entry, trust

    try:
        config = inventory.get(name)
    except KeyError:
        raise ConfigError(inventory.source, "devices", f"no device {name!r} (known: "
                                                       f"{', '.join(d.name for d in inventory.devices)})") from None
    if config.transport != "ssh":
        raise ConfigError(inventory.source, name, f"--trust is for ssh devices; {name!r} is {config.transport}")
    key_type, fingerprint, path, added = trust(config)
    where = host_key_entry(config.host, config.port)
    print(f"{name}: {where} offers {key_type} {fingerprint}")
    print(f"{'recorded in' if added else 'already trusted in'} {path}")
    return 0


def cmd_lab_host_start(args: argparse.Namespace) -> int:
    from harness.config import load_inventory
    from lab.host import cmd_start

    return cmd_start(args, lambda path: load_inventory(_inventory_path(path)), _log(False))


def cmd_lab_host_status(args: argparse.Namespace) -> int:
    from lab.host import cmd_status

    return cmd_status(args, _log(True))


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness.doctor import checks, render_checks

    print("\n".join(render_checks(checks())))
    return 0


PARSERS = ("benchmark_model", "edgetpu_compiler")


def cmd_parse(args: argparse.Namespace) -> int:
    import importlib
    import json

    parse = importlib.import_module(f"harness.parsers.{args.tool}").parse
    try:
        text = Path(args.file).read_text(errors="replace") if args.file != "-" else sys.stdin.read()
    except OSError as exc:
        raise ConfigError(args.file, None, f"cannot read: {exc.strerror or exc}") from None
    result = parse(text)
    print(json.dumps(result, indent=1))
    if all(value is None or (value in ([], {}, 0) and not isinstance(value, bool)) for value in result.values()):
        # as grep: exit 1 when nothing matched
        print(f"harness: parse: nothing in {args.file} reads as {args.tool} output", file=sys.stderr)
        return 1
    return 0


def _print_table(rows: list[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="harness", description="Turn a model into every TFMOT variant, measure each on devices, "
                                    "store every number with its provenance, and report.")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def db(p):
        p.add_argument("--db", default=DEFAULT_DB, help=f"results store (SQLite; default {DEFAULT_DB})")

    p = sub.add_parser("sweep", help="convert, measure and store every cell of a plan",
                       description="Convert the plan's models into their variants (cached by content hash), "
                                   "measure each on every target device, store the results, print the "
                                   "table and, last, the run id.")
    p.add_argument("--inventory", help=f"devices (default: ./{DEFAULT_INVENTORY}, else the embedded local device)")
    p.add_argument("--plan", help=f"what to measure (default {DEFAULT_PLAN}; with --resume, the run's plan)")
    db(p)
    p.add_argument("--devices", help="only these targets of the plan, comma-separated")
    p.add_argument("--resume", metavar="RUN",
                   help="measure again, in run RUN (id, prefix or 'latest'), only its cells that failed or were "
                        "never reached; ok and skipped cells stay")
    p.add_argument("--cache-dir", default=os.environ.get("HARNESS_CACHE", DEFAULT_CACHE),
                   help=f"artifact cache (default $HARNESS_CACHE or {DEFAULT_CACHE})")
    p.add_argument("--html", metavar="PATH", help="also write the run's HTML report here (as `harness report "
                                                  "--format html` would) and print its path before the run id")
    p.add_argument("--lock-wait", type=seconds, default=0.0, metavar="SECONDS",
                   help="when another sweep is measuring one of the devices, wait up to this long for it "
                        "(default 0: stop at once, exit 2)")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="the Ray cluster of a lab (auto, HOST:PORT or ray://HOST:PORT): devices the inventory "
                        "attaches to a lab_host are measured there, by an agent holding the device; see docs/lab.md")
    p.add_argument("--allow-public-cluster", action="store_true",
                   help="let --cluster reach a public address (refused by default: Ray runs whatever its clients "
                        "send)")
    p.add_argument("-q", "--quiet", action="store_true", help="no build log on stderr (progress stays)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="print or write the results of a run",
                       description="Tables of one run. markdown (the default) fits in 120 columns: per model "
                                   "a size table (a row per variant, ratios to fp32) and a table with a row per "
                                   "target (device, delegate, threads) and variant: accuracy, p50, p90 and "
                                   "speed-up over fp32; then each Coral host's Edge TPU beside its CPU, and the "
                                   "delegates compared. --wide and csv pivot a row per model x variant with a "
                                   "column group per target; json gives one record per cell with every metric; "
                                   "html is one self-contained page with the tables, the trade-off plots, "
                                   "latency distributions and the trend.")
    p.add_argument("--run", default="latest", help="run id, a unique prefix of one, or 'latest' (default)")
    p.add_argument("--format", choices=("markdown", "csv", "json", "html"), default="markdown",
                   help="html: one self-contained page with the tables, plots, distributions and trend")
    p.add_argument("--wide", action="store_true",
                   help="markdown: one wide table per model, a column group per target (as csv has it)")
    p.add_argument("--out", help="write to this file instead of stdout")
    db(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="the store as tidy tables for pandas: CSV or Parquet",
                       description="Write one row per cell and metric (with the provenance of run, device and "
                                   "cell on every row), or with --samples one row per timed run, as CSV or "
                                   "Parquet; prints the path.")
    p.add_argument("--format", choices=("csv", "parquet"), required=True)
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--run", default="latest", help="run id, prefix, 'latest' (default) or 'all'")
    p.add_argument("--samples", action="store_true", help="the raw timings instead of the metrics")
    db(p)
    p.set_defaults(func=cmd_export)

    from harness.gate_cli import add_gate_parser

    add_gate_parser(sub, db)

    p = sub.add_parser("baseline", help="name runs to gate against: set, list, remove",
                       description="A baseline tag names a run (e.g. release-1.4), so a gate can say "
                                   "--baseline release-1.4. Setting a tag again moves it.")
    p.add_argument("action", choices=("set", "list", "remove"))
    p.add_argument("run", nargs="?", help="set: the run (id, prefix or 'latest'); remove: the tag")
    p.add_argument("--tag", help="set: the name to give the run")
    p.add_argument("--note", help="set: why this run is the baseline")
    db(p)
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("history", help="a model's metric on a device over past runs: CSV, a plot, the steps",
                       description="Print, as CSV, one row per run and configuration (variant, delegate, "
                                   "threads) of a model on a device (name or fingerprint id), oldest first, "
                                   "with the run's commit; mark the runs where the metric moved to a new level "
                                   "(step detection over the series), and write a PNG plot.")
    p.add_argument("--model", required=True)
    p.add_argument("--device", required=True, help="device name or fingerprint id")
    p.add_argument("--variant")
    p.add_argument("--delegate")
    p.add_argument("--threads", type=int)
    p.add_argument("--metric", default="latency_p50_us", help="metric name (default latency_p50_us)")
    p.add_argument("--min-change", type=float, default=0.05,
                   help="smallest move between levels reported as a step, as a fraction (default 0.05)")
    p.add_argument("--plot", metavar="PNG", help="where to write the plot (default results/history-MODEL-DEVICE.png)")
    db(p)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("devices", help="health and fingerprint of every inventory device",
                       description="Reach every device of the inventory and print a health table: "
                                   "reachable, runtime and version, fingerprint, temperature.")
    p.add_argument("--inventory", help=f"devices (default: ./{DEFAULT_INVENTORY}, else the embedded local device)")
    p.add_argument("--trust", metavar="NAME",
                   help="fetch SSH device NAME's host key, print its fingerprint and record it in the device's "
                        "known_hosts (check the fingerprint against the board's `ssh-keygen -lf` first)")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("doctor", help="what is installed: runtimes, converters, Edge TPU and ADB tools",
                       description="Report the runtimes, converters and device tools this host has, "
                                   "and how to install what is missing.")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("parse", help="turn a log of a tool made elsewhere into JSON",
                       description="Parse the console output of a tool the harness drives into JSON (times "
                                   "in microseconds unless the key names another unit; a value the output "
                                   "does not have is null). benchmark_model: TFLite/LiteRT's benchmark tool, "
                                   "any version, with or without Android log prefixes. edgetpu_compiler: "
                                   "Coral's compiler, its console output (best with -s) or its *_edgetpu.log; "
                                   "sizes in bytes. Exit 1 when nothing in the file reads as that tool's output.")
    p.add_argument("tool", choices=PARSERS, help="which tool wrote the output")
    p.add_argument("file", help="the saved output ('-' for standard input)")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("lab-host", help="a lab host's Ray node: start it, or list the lab's hosts and devices",
                       description="A lab is a Ray cluster: each lab host runs a node offering a resource per "
                                   "machine the inventory attaches to it (`lab_host:`), and `harness sweep "
                                   "--cluster` measures those devices there. See docs/lab.md (security first).")
    lab_sub = p.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    q = lab_sub.add_parser("start", help="start this lab host's Ray node (a wrapper over `ray start`)",
                           description="Run `ray start` with this lab host's device resources, read from the "
                                       "inventory: a unit of `device:<name>/<machine>` per machine attached to it.")
    q.add_argument("--name", required=True, help="this lab host's name, as the inventory's lab_host says it")
    q.add_argument("--node-ip-address", required=True, metavar="ADDRESS",
                   help="the address this node is reached at (its private network's); Ray listens there")
    q.add_argument("--address", metavar="HEAD:PORT", help="the cluster to join (its head's address)")
    q.add_argument("--head", action="store_true", help="start the cluster's head here instead of joining one")
    q.add_argument("--port", type=int, default=6379, help="with --head: the port of the cluster (default 6379)")
    q.add_argument("--temp-dir", help="with --head: Ray's session directory (default Ray's, /tmp/ray)")
    q.add_argument("--inventory", help=f"devices (default: ./{DEFAULT_INVENTORY})")
    q.add_argument("--allow-public-cluster", action="store_true",
                   help="let the node or the head be on a public address (refused by default)")
    q.add_argument("--dry-run", action="store_true", help="print the `ray start` command, run nothing")
    q.set_defaults(func=cmd_lab_host_start)
    q = lab_sub.add_parser("status", help="every lab host of the cluster, its devices and what each measures",
                           description="Join the cluster and print a row per machine of every lab host: its "
                                       "node, whether the node is alive, whether the machine is taken, and "
                                       "what its agent is measuring for which coordinator.")
    q.add_argument("--cluster", default="auto", metavar="ADDRESS", help="the cluster (default auto: this host's)")
    q.add_argument("--allow-public-cluster", action="store_true", help="let --cluster reach a public address")
    q.set_defaults(func=cmd_lab_host_status)
    return top


def main(argv: list[str] | None = None) -> int:
    if os.environ.get("HOME") == "":  # `HOME= harness ...`: ~ would be /, locks and caches beside nobody's
        del os.environ["HOME"]  # so ~ is the account's home, from the password database
    args = parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a full disk or a closed pipe behind stdout shows here, not at exit
        return code
    except BrokenPipeError:  # `harness ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a command killed by SIGPIPE
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG):
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"harness: error: {exc.filename or 'standard output'}: cannot write: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except HarnessError as exc:
        print(f"harness: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
    except sqlite3.Error as exc:  # the store failed outside a sweep's cells (locked past the busy timeout, disk full)
        if "readonly" in str(exc):
            print(f"harness: error: {getattr(args, 'db', '?')}: the store is read-only here (its file or its "
                  "directory): pass --db a writable copy", file=sys.stderr)
            return 2
        print(f"harness: the results store failed: {type(exc).__name__}: {exc} (--db {getattr(args, 'db', '?')})",
              file=sys.stderr)
        return 1
