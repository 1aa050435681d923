"""`harness`: the command line. Heavy modules are imported inside the commands, so `--help` is
instant and TensorFlow is loaded only by the build worker, when something must be converted."""

from __future__ import annotations

import argparse
import os
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
    from harness.config import load_inventory, load_plan, select_devices
    from harness.report import render
    from harness.store import Store
    from harness.sweep import run_sweep

    log = _log(args.quiet)
    store = Store.open_existing(args.db) if args.resume else None
    try:
        resume = _resume_settings(args, store) if store is not None else None
        inventory = load_inventory(_inventory_path(args.inventory))
        plan = load_plan(args.plan or DEFAULT_PLAN, inventory)
        if resume is not None and plan.sha256 != resume["plan_sha256"]:
            raise ConfigError(plan.source, None, f"changed since run {resume['id']} was made (sha256 "
                                                 f"{plan.sha256[:12]}, the run's {resume['plan_sha256'][:12]}); "
                                                 "--resume needs the plan the run was made with")
        targets = select_devices(plan, inventory, args.devices)
        log(f"plan {plan.name} ({plan.source}), inventory {inventory.source}, store {args.db}, cache {args.cache_dir}")
        store = store or Store(args.db)
        run_id = run_sweep(inventory, plan, targets, store, Cache(args.cache_dir), log, argv=sys.argv[1:],
                           resume=resume["id"] if resume else None)
        run, cells = store.run(run_id), store.cells(run_id)
        sys.stdout.write(render("markdown", cells, run, store.devices_of_run(run_id)))
        counts = store.status_counts(run_id)
        print(f"\nrun {run['status']}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
              + f"; stored in {args.db} as run")
        print(run_id)
        return 1 if run["status"] == "failed" else 0
    finally:
        if store is not None:
            store.close()


def _resume_settings(args: argparse.Namespace, store) -> dict:
    """For `--resume RUN`: the run, and the plan, inventory and devices it was made with, unless
    given again on this command line."""
    import json

    run = store.run(store.resolve_run(args.resume))
    original = parser().parse_args(json.loads(run["argv_json"] or '["sweep"]'))
    args.plan = args.plan or run["plan_path"]
    if args.inventory is None and run["inventory_path"] and not run["inventory_path"].startswith("<"):
        args.inventory = run["inventory_path"]
    args.devices = args.devices or original.devices
    return run


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import render
    from harness.store import Store

    store = Store.open_existing(args.db)
    try:
        run_id = store.resolve_run(args.run)
        text = render(args.format, store.cells(run_id), store.run(run_id), store.devices_of_run(run_id))
    finally:
        store.close()
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text)
        tmp.replace(out)
        print(out)
    else:
        sys.stdout.write(text)
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    import devices
    from harness.config import load_inventory

    inventory = load_inventory(_inventory_path(args.inventory))
    if args.trust:
        return _trust(inventory, args.trust)
    from devices import coral

    rows = [("device", "transport", "reachable", "runtime", "edge tpu", "fingerprint", "board", "os", "cpu",
             "kernel", "governor", "temp")]
    notes = []
    for config in inventory.devices:
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
        rows.append((config.name, config.transport, reachable, runtime, edgetpu, fp.get("fingerprint_id", "—"),
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


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness.doctor import checks

    rows = [("component", "status", "detail")] + [(c.name, c.status, c.detail) for c in checks()]
    _print_table(rows)
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
    print(json.dumps(parse(text), indent=1))
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
    p.add_argument("-q", "--quiet", action="store_true", help="no build log on stderr (progress stays)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="print or write the results of a run",
                       description="Tables of one run: markdown and csv pivot a row per model x variant with "
                                   "per-target accuracy, size, latency and ratios to fp32; json gives one "
                                   "record per cell with every metric.")
    p.add_argument("--run", default="latest", help="run id, a unique prefix of one, or 'latest' (default)")
    p.add_argument("--format", choices=("markdown", "csv", "json"), default="markdown")
    p.add_argument("--out", help="write to this file instead of stdout")
    db(p)
    p.set_defaults(func=cmd_report)

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
                                   "sizes in bytes.")
    p.add_argument("tool", choices=PARSERS, help="which tool wrote the output")
    p.add_argument("file", help="the saved output ('-' for standard input)")
    p.set_defaults(func=cmd_parse)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except HarnessError as exc:
        print(f"harness: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
