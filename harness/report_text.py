"""The default markdown report, written for people at a terminal: every line fits in 120 columns
however many targets (device x delegate x threads) a run has.

- per model, a size table (a row per variant: size raw and gzipped with the ratio to fp32,
  sparsity) and a long table with a row per target and variant (accuracy or fidelity, p50, p90,
  speed-up over fp32 on that target; a cell that did not run says why in a numbered note);
- per Coral host, the Edge TPU next to the CPU: a row per variant and processor;
- the delegates compared, as in the wide report, split into narrower tables when they do not fit.

Prose, notes and the run header are wrapped. The wide pivot, a column group per target, is
`harness.report.markdown` (`harness report --wide`)."""

from __future__ import annotations

import re

from harness.report import (ModelTable, _bytes, _delegate_cell, _group, _kb, _ms, _num, _ratio, accuracy_notes,
                            delegate_comparison, edgetpu_rows, fidelity, note_number, quality, quality_words,
                            scoring_warnings, user_metric_table)

WIDTH = 120
LONG_WORD = 30  # a word this long (a path, a URL, a build fingerprint) may break after a '/'


def wrap(text: str, indent: str = "", width: int = WIDTH) -> list[str]:
    """Greedy word wrap at spaces; a long word with slashes may also break after one of them, so a
    path does not push the whole rest of a line down."""
    pieces: list[tuple[str, str]] = []  # (what joins it to the piece before, the piece)
    for word in text.split(" "):
        parts = re.findall(r"[^/]*/|[^/]+$", word) if len(word) > LONG_WORD and "/" in word else [word]
        pieces += [(" " if n == 0 else "", part) for n, part in enumerate(parts)]
    lines: list[str] = []
    line: str | None = None
    for glue, piece in pieces:
        if line is None:
            line = piece
        elif len(line) + len(glue) + len(piece) <= width:
            line += glue + piece
        else:
            lines.append(line.rstrip())
            line = indent + piece
    lines.append((line or "").rstrip())
    return lines


def _wrap_header(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if not line or line.startswith("#"):
            out.append(line)
        else:
            out += wrap(line, "  " if line.startswith("- ") else "")
    return out


def _table(head: list[str], align: str, rows: list[list[str]]) -> list[str]:
    """A markdown table: `align` has an l or r per column."""
    return ([_line(head), "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
            + [_line(r) for r in rows])


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _notes(notes: dict[str, list[str]], sources: list[str]) -> list[str]:
    out: list[str] = []
    for n, (reason, variants) in enumerate(notes.items(), 1):
        out += wrap(f"[{n}] {reason} ({', '.join(variants)})", "    ")
    return out + [line for note in sources for line in wrap(note, "    ")]


# -- per model ---------------------------------------------------------------------------------


def model_section(table: ModelTable) -> list[str]:
    many_devices = len({t.device for t in table.targets}) > 1
    single = None if many_devices else table.targets[0].device if table.targets else None
    out = ["", f"### {table.model}" + (f" on {single}" if single else ""), ""]
    out += _table(["variant", "size", "× smaller", "gzip", "× smaller", "sparsity"], "lrrrrr", [
        [row.variant, _kb(row.model_bytes), _num(row.size_ratio, ".2f", "×"), _kb(row.model_gzip_bytes),
         _num(row.gzip_ratio, ".2f", "×"), _num(None if row.sparsity is None else 100 * row.sparsity, ".1f", " %")]
        for row in table.rows])
    what = quality_words(table)
    examples = table.examples()
    out += [""] + wrap(f"Per target ({'device, ' if many_devices else ''}delegate, threads) and variant: {what}; "
                       "p50 and p90 latency in ms; speed-up over fp32 on the same target."
                       + (f" {examples}" if examples else "")) + [""]
    notes: dict[str, list[str]] = {}  # reason -> variants it applies to; numbered in order
    rows = []
    for target in table.targets:
        label = target.label(many_devices)
        for row in table.rows:
            values = row.cells.get(target)
            if values is None:
                continue
            line = [label, row.variant]
            label = ""  # a target is named on the first row of its group
            extra = 1 if table.labeled else 0  # a labelled model's fidelity to fp32, beside its accuracy
            if values["status"] != "ok":
                note = note_number(notes, values["reason"], row.variant)
                line += [f"{values['status']} [{note}]", *["—"] * (3 + extra)]
            else:
                line += [quality(values, table.labeled), *([fidelity(values)] if extra else []),
                         _ms(values.get("latency_p50_us")), _ms(values.get("latency_p90_us")),
                         _num(values.get("speedup"), ".2f", "×")]
            rows.append(line)
    fid = ["agree / SQNR"] if table.labeled else []
    out += _table(["target", "variant", table.quality_header(), *fid, "p50", "p90", "speed-up"],
                  "llr" + "r" * len(fid) + "rrr", rows)
    sources = accuracy_notes(table)
    if notes or sources:
        out += [""] + _notes(notes, sources)
    unscored = scoring_warnings(table, many_devices)
    if unscored:
        out += [""] + [line for warning, where in unscored.items()
                       for line in wrap(f"! {warning} ({', '.join(where)})", "    ")]
    head, user_rows = user_metric_table(table, many_devices)
    if head:
        out += ["", "Your metric (`data.metric`):"]
        for group in _fit(head, user_rows, lead=2):
            out += [""] + _table([head[i] for i in group], "ll" + "r" * (len(group) - 2),
                                 [[r[i] for i in group] for r in user_rows])
    return out


# -- Coral hosts -------------------------------------------------------------------------------


def edgetpu_sections(tables: list[ModelTable]) -> list[str]:
    """Per Coral host and model: each full-integer variant on the host's CPU and on the Edge TPU,
    one row each, with what the compiler mapped; fp32 on the CPU, the seeds' baseline, is said above."""
    out: list[str] = []
    for table in tables:
        for (device, cpu, tpu), rows in edgetpu_rows(table).items():
            what = "top-1" if table.labeled else "agree / SQNR"
            notes: list[str] = []
            fp32 = _group(rows[0].cpu_fp32, rows[0].fp32_bytes, table.labeled, notes)
            if cpu is None:
                where = "not measured"
            elif rows[0].cpu_fp32 is None:
                where = f"{cpu.delegate}, {cpu.threads}t; fp32 not measured there"
            elif rows[0].cpu_fp32["status"] != "ok":
                where = f"{cpu.delegate}, {cpu.threads}t; fp32 there: {fp32[0]}"
            else:
                where = f"{cpu.delegate}, {cpu.threads}t; fp32 there: {what} {fp32[0]}, {fp32[1]}, p50 {fp32[2]} ms"
            out += ["", f"### {table.model} on the Edge TPU of {device}", ""]
            out += wrap(f"CPU = {device}'s CPU ({where}). Edge TPU at {tpu.threads}t for the ops left on the CPU. "
                        "p50 and first inference (which loads the model into the TPU) in ms; × CPU = speed-up over "
                        "the same variant on the CPU; ops on TPU = ops the compiler mapped / total; off-chip = "
                        "parameters streamed from host memory on every inference.") + [""]
            body = []
            for r in rows:
                if r.cpu_int8 is not None:
                    body.append([r.variant, "CPU", *_group(r.cpu_int8, r.model_bytes, table.labeled, notes)]
                                + [""] * 6)
                e = r.edgetpu
                ops = (f"{e['edgetpu_ops']:.0f} / {e['edgetpu_ops'] + e.get('cpu_ops', 0):.0f}"
                       if e.get("edgetpu_ops") is not None else "—")
                speedup = (_ratio(r.cpu_int8.get("latency_p50_us"), e.get("latency_p50_us"))
                           if r.cpu_int8 and r.cpu_int8["status"] == "ok" and e["status"] == "ok" else None)
                body.append([r.variant, "Edge TPU", *_group(e, e.get("edgetpu_model_bytes"), table.labeled, notes),
                             _ms(e.get("first_inference_us")), _num(speedup, ".2f", "×"), ops,
                             _num(e.get("edgetpu_subgraphs"), ".0f"), _bytes(e.get("edgetpu_on_chip_bytes")),
                             _bytes(e.get("edgetpu_off_chip_bytes"))])
            out += _table(["variant", "on", what, "size", "p50", "first", "× CPU", "ops on TPU", "subgraphs",
                           "on-chip", "off-chip"], "llrrrrrrrrr", body)
            if notes:
                out += [""]
                for n, reason in enumerate(notes, 1):
                    out += wrap(f"[{n}] {reason}", "    ")
    return out


# -- delegates ---------------------------------------------------------------------------------


def delegate_sections(tables: list[ModelTable]) -> list[str]:
    comparisons = delegate_comparison(tables)
    if not comparisons:
        return []
    out = ["", "## Delegates compared", ""]
    out += wrap("p50 latency in ms on each delegate, nodes delegated / total where a delegate applied, and the "
                "speed-up over `cpu` (the built-in kernels) on the same device and threads.")
    for (device, model, threads), (delegates, rows) in comparisons.items():
        out += ["", f"### {model} on {device}, {threads} thread{'s' * (threads != 1)}"]
        head = ["variant", *delegates]
        lines = [[variant, *(_delegate_cell(values.get(d), values.get("cpu")) for d in delegates)]
                 for variant, values in rows.items()]
        for group in _fit(head, lines, lead=1):
            out += [""] + _table([head[i] for i in group], "l" + "r" * (len(group) - 1),
                                 [[line[i] for i in group] for line in lines])
    return out


def _fit(head: list[str], rows: list[list[str]], lead: int) -> list[list[int]]:
    """A table too wide for WIDTH as several: column indices in groups, each group the `lead`
    columns that name a row, then as many of the other columns, in order, as fit (one at least)."""
    def width(columns: list[int]) -> int:
        return max(len(_line([line[i] for i in columns])) for line in [head, *rows])

    groups: list[list[int]] = []
    for column in range(lead, len(head)):
        if groups and width(groups[-1] + [column]) <= WIDTH:
            groups[-1].append(column)
        else:
            groups.append([*range(lead), column])
    return groups


def markdown(tables: list[ModelTable], header: list[str] | None = None) -> str:
    out = _wrap_header(list(header or []))
    for table in tables:
        out += model_section(table)
    out += edgetpu_sections(tables)
    out += delegate_sections(tables)
    return "\n".join(out).strip("\n") + "\n"
