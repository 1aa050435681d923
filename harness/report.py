"""Reports of one run. `pivot` is pure (cells in, tables out) and each writer renders its result:

- markdown (the default view, `harness.report_text`): per model a size table and a long table with
  a row per target and variant, then the Coral and delegate tables; every line within 120 columns;
- wide markdown (`--wide`) / csv: the seeds' table, a row per model x variant; size raw and
  gzipped with the ratio to fp32; per target (device, delegate, threads) accuracy or fidelity,
  p50 and p90 latency and the speed-up over fp32 on that same target;
- wide markdown also compares delegates: per device, model and thread count with two or more
  delegates, p50 latency and delegate coverage side by side, with the speed-up over `cpu`;
  and for Coral hosts the seeds' EfficientNet layout: CPU fp32, CPU int8 and Edge TPU int8 side by
  side with ops on the TPU / total, subgraphs and on-/off-chip memory;
- json: one record per cell with every metric by its name (null where the cell has none).

Accuracy scored on the host (a phone without a Python runner) is marked † with a note."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

from harness.metrics import UNITS

FORMATS = ("markdown", "csv", "json")


@dataclass(frozen=True)
class Target:
    device: str
    delegate: str
    threads: int

    def label(self, with_device: bool = True) -> str:
        parts = ([self.device] if with_device else []) + [self.delegate, f"{self.threads}t"]
        return " ".join(parts)


@dataclass
class Row:
    variant: str
    model_bytes: float | None = None
    model_gzip_bytes: float | None = None
    sparsity: float | None = None
    calibration_examples: float | None = None
    fine_tune_examples: float | None = None
    size_ratio: float | None = None  # fp32 bytes / these bytes
    gzip_ratio: float | None = None
    cells: dict[Target, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ModelTable:
    model: str
    labeled: bool
    targets: list[Target]
    rows: list[Row]
    regression: bool = False  # scored by MAE / RMSE against float targets
    intervals: bool = False  # accuracies stored with their 95 % intervals

    def quality_header(self) -> str:
        ci = " [95 % CI]" if self.intervals else ""
        if self.regression:
            return "MAE" + ci
        return "top-1" + ci if self.labeled else "agree / SQNR"

    def examples(self) -> str | None:
        """How many examples each split had: eval (every cell), calibration and fine-tuning (the
        variants that used them)."""
        evals = sorted({int(v["eval_examples"]) for r in self.rows for v in r.cells.values() if v.get("eval_examples")})
        parts = [f"eval {' / '.join(map(str, evals))}"] if evals else []
        for name, attr in (("calibration", "calibration_examples"), ("fine-tune", "fine_tune_examples")):
            counts: dict[int, list[str]] = {}
            for r in self.rows:
                if getattr(r, attr):
                    counts.setdefault(int(getattr(r, attr)), []).append(r.variant)
            parts += [f"{name} {n} ({', '.join(vs)})" for n, vs in counts.items()]
        return f"Examples: {'; '.join(parts)}." if parts else None


def _ratio(base: float | None, value: float | None) -> float | None:
    return base / value if base and value else None


def pivot(cells: list[dict[str, Any]]) -> list[ModelTable]:
    """Cells (as Store.cells returns them) -> one table per model, variants in plan order."""
    tables: dict[str, ModelTable] = {}
    for cell in cells:
        m = cell["metrics"]
        table = tables.setdefault(cell["model"], ModelTable(cell["model"], False, [], []))
        table.labeled |= "top1_accuracy" in m or "mae" in m
        table.regression |= "mae" in m
        table.intervals |= "top1_accuracy_low" in m or "mae_low" in m
        target = Target(cell["device_name"], cell["delegate"], cell["threads"])
        if target not in table.targets:
            table.targets.append(target)
        row = next((r for r in table.rows if r.variant == cell["variant"]), None)
        if row is None:
            row = Row(cell["variant"])
            table.rows.append(row)
        for name in ("model_bytes", "model_gzip_bytes", "sparsity", "calibration_examples", "fine_tune_examples"):
            if m.get(name) is not None:
                setattr(row, name, m[name])
        row.cells[target] = {"status": cell["status"], "reason": cell["reason"],
                             "accuracy_source": cell.get("accuracy_source"), **m,
                             "warnings": json.loads(cell.get("warnings_json") or "[]")}
    for table in tables.values():
        fp32 = next((r for r in table.rows if r.variant == "fp32"), None)
        for row in table.rows:
            if fp32 is not None:
                row.size_ratio = _ratio(fp32.model_bytes, row.model_bytes)
                row.gzip_ratio = _ratio(fp32.model_gzip_bytes, row.model_gzip_bytes)
            for target, values in row.cells.items():
                base = fp32.cells.get(target, {}) if fp32 else {}
                values["speedup"] = (_ratio(base.get("latency_p50_us"), values.get("latency_p50_us"))
                                     if values["status"] == "ok" and base.get("status") == "ok" else None)
    return list(tables.values())


# -- formatting helpers ------------------------------------------------------------------------


def _num(value: float | None, fmt: str, suffix: str = "") -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞" + suffix
    return format(value, fmt) + suffix


def _kb(value: float | None) -> str:
    return "—" if value is None else f"{value / 1024:,.1f} KB" if value < 1024 ** 2 else f"{value / 1024 ** 2:,.2f} MB"


def _ms(us: float | None) -> str:
    if us is None:
        return "—"
    return f"{us / 1000:.3f}" if us < 10_000 else f"{us / 1000:.1f}"


HOST_MARK = "†"
HOST_NOTE = (f"{HOST_MARK} accuracy scored on the host with TFLite's reference kernels (the device could not "
             "compute it: the cell's warning says why); its latency is the device's")
DEVICE_NOTE = ("Accuracy measured on the device: from the outputs each device computed with the cell's own "
               "delegate and threads (phones: benchmark_model's output file)")


def quality_words(table: "ModelTable") -> str:
    ci = " with its 95 % interval" if table.intervals else ""
    if table.regression:
        return "MAE" + ci
    return "top-1 accuracy" + ci if table.labeled else "fidelity to fp32 (top-1 agreement / SQNR)"


def user_metric_table(table: "ModelTable", many_devices: bool) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the user's own metrics (`data.metric`, stored as user_<name>), a row per
    measured target and variant; no header when the model has none."""
    names = sorted({k for r in table.rows for v in r.cells.values() for k in v if k.startswith("user_")})
    if not names:
        return [], []
    rows = [[target.label(many_devices), row.variant, *(_num(row.cells[target].get(n), ".4g") for n in names)]
            for target in table.targets for row in table.rows
            if row.cells.get(target, {}).get("status") == "ok"]
    return ["target", "variant", *(n[len("user_"):] for n in names)], rows


SCORING_WARNINGS = ("accuracy not measured", "accuracy not scored", "the metric ")  # launch_reports.py's


def scoring_warnings(table: "ModelTable", many_devices: bool) -> dict[str, list[str]]:
    """What kept a measured cell's accuracy or the user's metric from being scored -> the cells
    (target and variant) it happened to: shown under the table, not only kept in the store."""
    found: dict[str, list[str]] = {}
    for target in table.targets:
        for row in table.rows:
            for warning in row.cells.get(target, {}).get("warnings", ()):
                if warning.startswith(SCORING_WARNINGS):
                    found.setdefault(warning, []).append(f"{target.label(many_devices)} {row.variant}")
    return found


def accuracy_notes(table: "ModelTable") -> list[str]:
    """Where a table's accuracy was computed: on the devices, and † for cells scored on the host."""
    sources = {v.get("accuracy_source") for r in table.rows for v in r.cells.values() if v["status"] == "ok"}
    return [note for note, source in ((DEVICE_NOTE, "device"), (HOST_NOTE, "host")) if source in sources]


def quality(values: dict[str, Any], labeled: bool) -> str:
    """Accuracy (labeled models) or fidelity against fp32: top-1 agreement and SQNR; marked † when
    the outputs were computed on the host rather than on the device."""
    text = _quality(values, labeled)
    return f"{text} {HOST_MARK}" if values.get("accuracy_source") == "host" and text != "—" else text


def _quality(values: dict[str, Any], labeled: bool) -> str:
    if "mae" in values:
        return f"{values['mae']:.4g}" + _interval(values, "mae", 1.0, ".4g")
    if labeled:
        if "top1_accuracy" not in values:
            return "—"
        return _num(100 * values["top1_accuracy"], ".2f", " %") + _interval(values, "top1_accuracy", 100.0, ".1f")
    return fidelity(values)


def fidelity(values: dict[str, Any]) -> str:
    """Top-1 agreement with the fp32 outputs and their SQNR (SQNR alone for a single output)."""
    sqnr = _num(values.get("sqnr_db"), ".1f", " dB") if "sqnr_db" in values else None
    if "top1_agreement" not in values:
        return sqnr or "—"
    agreement = _num(100 * values["top1_agreement"], ".0f", " %")
    return f"{agreement} / {sqnr}" if sqnr else agreement


def _interval(values: dict[str, Any], name: str, scale: float, fmt: str) -> str:
    low, high = values.get(f"{name}_low"), values.get(f"{name}_high")
    return "" if low is None or high is None else f" [{format(scale * low, fmt)}, {format(scale * high, fmt)}]"


def note_number(notes: dict[str, list[str]], reason: str, variant: str) -> int:
    """The number (from 1) of `reason` among a table's notes, which map each reason to the
    variants it applies to; `variant` is recorded under it."""
    variants = notes.setdefault(reason, [])
    if variant not in variants:
        variants.append(variant)
    return list(notes).index(reason) + 1


# -- writers -----------------------------------------------------------------------------------


def markdown(tables: list[ModelTable], header: list[str] | None = None) -> str:
    out = list(header or [])
    for table in tables:
        many_devices = len({t.device for t in table.targets}) > 1
        single = None if many_devices else table.targets[0].device if table.targets else None
        what = quality_words(table)
        out += ["", f"### {table.model}" + (f" on {single}" if single else ""), "",
                f"Per target: {what}; p50 and p90 latency in ms; speed-up over fp32 on the same target."
                + (f" {table.examples()}" if table.examples() else ""), ""]
        head = ["variant", "size", "× smaller", "gzip", "× smaller", "sparsity"]
        for target in table.targets:
            label = target.label(many_devices)
            head += [f"{label}: {table.quality_header()}", *(["agree / SQNR"] if table.labeled else []), "p50", "p90",
                     "speed-up"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        notes: dict[str, list[str]] = {}  # reason -> variants it applies to; numbered in order
        for row in table.rows:
            line = [row.variant, _kb(row.model_bytes), _num(row.size_ratio, ".2f", "×"), _kb(row.model_gzip_bytes),
                    _num(row.gzip_ratio, ".2f", "×"), _num(None if row.sparsity is None else 100 * row.sparsity, ".1f", " %")]
            for target in table.targets:
                values = row.cells.get(target)
                extra = 1 if table.labeled else 0
                if values is None:
                    line += [""] * (4 + extra)
                elif values["status"] != "ok":
                    line += [f"{values['status']} [{note_number(notes, values['reason'], row.variant)}]",
                             *["—"] * (3 + extra)]
                else:
                    line += [quality(values, table.labeled), *([fidelity(values)] if extra else []),
                             _ms(values.get("latency_p50_us")), _ms(values.get("latency_p90_us")),
                             _num(values.get("speedup"), ".2f", "×")]
            out.append("| " + " | ".join(line) + " |")
        sources = accuracy_notes(table)
        if notes or sources:
            out.append("")
            out += [f"[{n}] {reason} ({', '.join(variants)})" for n, (reason, variants) in enumerate(notes.items(), 1)]
            out += sources
        head, rows = user_metric_table(table, many_devices)
        if head:
            out += ["", "Your metric (`data.metric`):", "", "| " + " | ".join(head) + " |",
                    "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
            out += ["| " + " | ".join(r) + " |" for r in rows]
    out += edgetpu_markdown(tables)
    comparisons = delegate_comparison(tables)
    if comparisons:
        out += ["", "## Delegates compared", "",
                "p50 latency in ms on each delegate, nodes delegated / total where a delegate applied, "
                "and the speed-up over `cpu` (the built-in kernels) on the same device and threads."]
    for (device, model, threads), (delegates, rows) in comparisons.items():
        out += ["", f"### {model} on {device}, {threads} thread{'s' * (threads != 1)}", "",
                "| variant | " + " | ".join(delegates) + " |", "|---|" + "---:|" * len(delegates)]
        for variant, values in rows.items():
            out.append(f"| {variant} | " + " | ".join(_delegate_cell(values.get(d), values.get("cpu"))
                                                     for d in delegates) + " |")
    return "\n".join(out).strip("\n") + "\n"


CPU_DELEGATES = ("xnnpack", "cpu")  # the CPU an Edge TPU is compared with: XNNPACK where measured


@dataclass
class EdgeTPURow:
    """One full-integer variant of a model on a Coral host: fp32 and the variant on the host's CPU,
    the variant compiled for the Edge TPU."""

    variant: str
    cpu_fp32: dict[str, Any] | None
    cpu_int8: dict[str, Any] | None
    edgetpu: dict[str, Any]
    model_bytes: float | None
    fp32_bytes: float | None


def edgetpu_rows(table: ModelTable) -> dict[tuple[str, Target | None, Target], list[EdgeTPURow]]:
    """(device, CPU target, Edge TPU target) -> rows, for each device of the table with `edgetpu`
    cells; the most threads measured stand for the device. Variants the TPU cannot take (skipped as
    not full-integer) are left out: the main table gives their reason."""
    groups: dict[tuple[str, Target | None, Target], list[EdgeTPURow]] = {}
    fp32 = next((r for r in table.rows if r.variant == "fp32"), None)
    for device in dict.fromkeys(t.device for t in table.targets if t.delegate == "edgetpu"):
        on_device = [t for t in table.targets if t.device == device]
        tpu = max((t for t in on_device if t.delegate == "edgetpu"), key=lambda t: t.threads)
        cpu = next((max((t for t in on_device if t.delegate == d), key=lambda t: t.threads)
                    for d in CPU_DELEGATES if any(t.delegate == d for t in on_device)), None)
        rows = []
        for row in table.rows:
            values = row.cells.get(tpu)
            if values is None or (values["status"] == "skipped" and "edgetpu_ops" not in values):
                continue
            rows.append(EdgeTPURow(row.variant, fp32.cells.get(cpu) if fp32 and cpu else None,
                                   row.cells.get(cpu) if cpu else None, values, row.model_bytes,
                                   fp32.model_bytes if fp32 else None))
        if rows:
            groups[(device, cpu, tpu)] = rows
    return groups


def edgetpu_markdown(tables: list[ModelTable]) -> list[str]:
    """The seeds' EfficientNet layout for Coral hosts: CPU fp32, CPU int8 and Edge TPU int8 side by
    side, with what the compiler mapped (ops on the TPU, subgraphs, parameters streamed off-chip)."""
    out: list[str] = []
    for table in tables:
        for (device, cpu, tpu), rows in edgetpu_rows(table).items():
            what = "top-1" if table.labeled else "agree / SQNR"
            cpu_label = f"{cpu.delegate}, {cpu.threads}t" if cpu else "not measured"
            out += ["", f"### {table.model} on the Edge TPU of {device}", "",
                    f"CPU = {device}'s CPU ({cpu_label}); Edge TPU at {tpu.threads}t for the ops left on the CPU. "
                    "p50 latency in ms; first inference (which loads the model into the TPU) apart; "
                    "off-chip = parameters streamed from host memory on every inference.", "",
                    f"| variant | CPU fp32: {what} | size | p50 | CPU int8: {what} | size | p50 | Edge TPU int8: "
                    f"{what} | size | p50 | first | ops on TPU / total | subgraphs | on-chip | off-chip | × CPU int8 |",
                    "|---|" + "---:|" * 15]
            notes: list[str] = []
            for r in rows:
                line = [r.variant, *_group(r.cpu_fp32, r.fp32_bytes, table.labeled, notes),
                        *_group(r.cpu_int8, r.model_bytes, table.labeled, notes),
                        *_group(r.edgetpu, r.edgetpu.get("edgetpu_model_bytes"), table.labeled, notes)]
                e = r.edgetpu
                ops = (f"{e['edgetpu_ops']:.0f} / {e['edgetpu_ops'] + e.get('cpu_ops', 0):.0f}"
                       if e.get("edgetpu_ops") is not None else "—")
                speedup = (_ratio(r.cpu_int8.get("latency_p50_us"), e.get("latency_p50_us"))
                           if r.cpu_int8 and r.cpu_int8["status"] == "ok" and e["status"] == "ok" else None)
                line += [_ms(e.get("first_inference_us")), ops, _num(e.get("edgetpu_subgraphs"), ".0f"),
                         _bytes(e.get("edgetpu_on_chip_bytes")), _bytes(e.get("edgetpu_off_chip_bytes")),
                         _num(speedup, ".2f", "×")]
                out.append("| " + " | ".join(line) + " |")
            if notes:
                out += [""] + [f"[{n}] {reason}" for n, reason in enumerate(notes, 1)]
    return out


def _group(values: dict[str, Any] | None, size: float | None, labeled: bool, notes: list[str]) -> list[str]:
    """accuracy, size, p50 of one column group; a cell that did not run says why in a numbered note."""
    if values is None:
        return ["", _kb(size) if size else "—", ""]
    if values["status"] != "ok":
        if values["reason"] not in notes:
            notes.append(values["reason"])
        return [f"{values['status']} [{notes.index(values['reason']) + 1}]", _kb(size), "—"]
    return [quality(values, labeled), _kb(size), _ms(values.get("latency_p50_us"))]


def _bytes(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} B" if value < 1024 else _kb(value)


def delegate_comparison(tables: list[ModelTable]) -> dict[tuple[str, str, int], tuple[list[str], dict]]:
    """(device, model, threads) -> (delegates in plan order, {variant: {delegate: cell values}}) for
    every group measured on two delegates or more."""
    groups: dict[tuple[str, str, int], tuple[list[str], dict]] = {}
    for table in tables:
        for target in table.targets:
            key = (target.device, table.model, target.threads)
            delegates, rows = groups.setdefault(key, ([], {}))
            if target.delegate not in delegates:
                delegates.append(target.delegate)
            for row in table.rows:
                if target in row.cells:
                    rows.setdefault(row.variant, {})[target.delegate] = row.cells[target]
    return {k: v for k, v in groups.items() if len(v[0]) > 1}


def _delegate_cell(values: dict[str, Any] | None, cpu: dict[str, Any] | None) -> str:
    if values is None:
        return ""
    if values["status"] != "ok":
        return values["status"]
    text = f"{_ms(values.get('latency_p50_us'))}"
    if values.get("edgetpu_ops") is not None:  # what the compiler mapped, not the runtime's graph
        text += f" · {values['edgetpu_ops']:.0f}/{values['edgetpu_ops'] + values.get('cpu_ops', 0):.0f} ops on TPU"
    elif values.get("nodes_total"):
        text += f" · {values['nodes_delegated']:.0f}/{values['nodes_total']:.0f} nodes"
    if cpu is not None and cpu is not values and cpu.get("status") == "ok":
        speedup = _ratio(cpu.get("latency_p50_us"), values.get("latency_p50_us"))
        text += f" · {_num(speedup, '.2f', '×')}"
    return text


def csv_text(tables: list[ModelTable]) -> str:
    targets: list[Target] = []
    for table in tables:
        targets += [t for t in table.targets if t not in targets]
    per_target = ("status", "reason", "top1_accuracy", "top1_agreement", "sqnr_db", "latency_p50_ms",
                  "latency_p90_ms", "speedup")
    head = ["model", "variant", "model_bytes", "model_gzip_bytes", "size_ratio", "gzip_ratio", "sparsity"]
    head += [f"{t.label()}:{name}" for t in targets for name in per_target]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head)
    for table in tables:
        for row in table.rows:
            line = [table.model, row.variant, row.model_bytes, row.model_gzip_bytes, row.size_ratio,
                    row.gzip_ratio, row.sparsity]
            for target in targets:
                v = row.cells.get(target, {})
                ms = {k: v[k.replace("_ms", "_us")] / 1000 for k in ("latency_p50_ms", "latency_p90_ms")
                      if v.get(k.replace("_ms", "_us")) is not None}
                line += [_csv_value({**v, **ms}.get(name)) for name in per_target]
            writer.writerow(_csv_value(x) for x in line)
    return buf.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.6g}" if not value.is_integer() else int(value)
    return "" if value is None else value


def json_records(cells: list[dict[str, Any]], run: dict[str, Any]) -> str:
    records = []
    for cell in cells:
        record = {"run_id": run["id"], "model": cell["model"], "variant": cell["variant"],
                  "device": cell["device_name"], "device_identity": cell.get("device_identity"),
                  "device_fingerprint": cell["device_fingerprint"],
                  "delegate": cell["delegate"], "threads": cell["threads"], "status": cell["status"],
                  "reason": cell["reason"], "runtime": cell["runtime_name"],
                  "accuracy_source": cell.get("accuracy_source"),
                  "runtime_version": cell["runtime_version"], "artifact_sha256": cell["artifact_sha256"]}
        for name in UNITS:
            value = cell["metrics"].get(name)
            record[name] = value if value is None or math.isfinite(value) else None
        records.append(record)
    return json.dumps(records, indent=1) + "\n"


def header_lines(run: dict[str, Any], devices: list[dict[str, Any]]) -> list[str]:
    versions = json.loads(run.get("versions_json") or "{}")
    commit = (run.get("git_commit") or "unknown")[:12] + (" (uncommitted changes)" if run.get("git_dirty") else "")
    lines = [f"## Run {run['id']} — plan {run['plan_name']} ({run['status']})", "",
             f"- started {run['started_at']}, finished {run.get('finished_at') or '—'}, host {run.get('host')}",
             f"- harness {run.get('harness_version')}, commit {commit}",
             "- " + ", ".join(f"{k} {v}" for k, v in versions.items() if v)]
    for device in devices:
        a = device["attributes"]
        serial = f", serial {device['serial']}" if device.get("serial") else ""
        if device.get("other_names"):
            serial += f"; the same device as {', '.join(device['other_names'])} in other runs"
        lines.append(f"- device {device['name']} [{device['fingerprint_id']}{serial}]: {a.get('cpu_model')} × {a.get('cores')}, "
                     f"{a.get('os')}, kernel {a.get('kernel')}, governor {a.get('governor') or 'n/a'}, "
                     f"{a.get('runtime')} {a.get('runtime_version')}")
    return lines


def render(fmt: str, cells: list[dict[str, Any]], run: dict[str, Any], devices: list[dict[str, Any]],
           wide: bool = False) -> str:
    """json, csv, or markdown: the narrow default view, or with `wide` the pivot with a column group
    per target (what csv holds)."""
    if fmt == "json":
        return json_records(cells, run)
    tables = pivot(cells)
    if fmt == "csv":
        return csv_text(tables)
    if wide:
        return markdown(tables, header_lines(run, devices))
    from harness import report_text

    return report_text.markdown(tables, header_lines(run, devices))
