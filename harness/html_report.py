"""`harness report --format html`: one self-contained page (figures inlined as data: URIs, styles
inline, nothing fetched) rendered from `templates/report.html.j2` with Jinja2.

What it shows, per run: the provenance (run, commit, versions, each device's fingerprint and the
temperatures its cells saw); per model the seeds' table (accuracy, size, p50/p90, ratios to fp32
on the same target) with failed and skipped cells and their reasons; the Edge TPU comparison
where a Coral host was measured; per device the delegates side by side with their coverage; the
trade-off plots, the latency distributions from the raw samples, and the trend over past runs."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness import plots
from harness.report import (ModelTable, Target, _delegate_cell, _kb, _ms, _num, delegate_comparison, edgetpu_rows,
                            note_number, pivot, quality, accuracy_notes, quality_words)

TEMPLATES = Path(__file__).parent / "templates"


def _uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _device_rows(devices: Sequence[dict[str, Any]], cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for device in devices:
        a = device["attributes"]
        temps = [t for c in cells if c.get("device_identity") == device["identity"]
                 for t in (c.get("temp_before_c"), c.get("temp_after_c")) if t is not None]
        out.append({
            "name": device["name"] + (f" (was {', '.join(device['other_names'])})" if device.get("other_names") else ""),
            "transport": device["transport"], "fingerprint": device["fingerprint_id"],
            "board": a.get("device_model") or a.get("board") or "—", "os": a.get("os") or "—",
            "cpu": f"{a.get('cpu_model') or '—'} × {a.get('cores') or '—'}", "kernel": a.get("kernel") or "—",
            "governor": a.get("governor") or "—",
            "runtime": " ".join(str(x) for x in (a.get("runtime"), a.get("runtime_version")) if x) or "—",
            "accelerator": a.get("accelerator") or "",
            "temps": f"{min(temps):.1f}–{max(temps):.1f} °C" if temps else "no sensor"})
    return out


def _model_table(table: ModelTable) -> dict[str, Any]:
    many = len({t.device for t in table.targets}) > 1
    header = [t.label(many) for t in table.targets]
    notes: dict[str, list[str]] = {}
    rows = []
    for row in table.rows:
        line = {"variant": row.variant, "size": _kb(row.model_bytes), "size_ratio": _num(row.size_ratio, ".2f", "×"),
                "gzip": _kb(row.model_gzip_bytes), "gzip_ratio": _num(row.gzip_ratio, ".2f", "×"),
                "sparsity": _num(None if row.sparsity is None else 100 * row.sparsity, ".1f", " %"), "cells": []}
        for target in table.targets:
            values = row.cells.get(target)
            if values is None:
                line["cells"].append({"status": "absent"})
            elif values["status"] != "ok":
                reason = values["reason"] or "no reason stored"
                line["cells"].append({"status": values["status"], "reason": values["reason"],
                                      "note": note_number(notes, reason, row.variant)})
            else:
                line["cells"].append({"status": "ok", "quality": quality(values, table.labeled),
                                      "p50": _ms(values.get("latency_p50_us")), "p90": _ms(values.get("latency_p90_us")),
                                      "speedup": _num(values.get("speedup"), ".2f", "×")})
        rows.append(line)
    single = None if many or not table.targets else table.targets[0].device
    return {"header": header, "rows": rows, "device": single, "notes": [(n, reason, variants) for n, (reason, variants)
                                                       in enumerate(notes.items(), 1)],
            "sources": accuracy_notes(table)}


def _edgetpu(table: ModelTable) -> list[dict[str, Any]]:
    groups = []
    for (device, cpu, tpu), rows in edgetpu_rows(table).items():
        lines = []
        for r in rows:
            e = r.edgetpu
            total = (e.get("edgetpu_ops") or 0) + (e.get("cpu_ops") or 0)
            lines.append({
                "variant": r.variant,
                "cpu_fp32": _ms((r.cpu_fp32 or {}).get("latency_p50_us")) if r.cpu_fp32 else "—",
                "cpu_int8": _ms((r.cpu_int8 or {}).get("latency_p50_us")) if r.cpu_int8 else "—",
                "tpu": _ms(e.get("latency_p50_us")) if e["status"] == "ok" else f"{e['status']}: {e['reason']}",
                "quality": quality(e, table.labeled) if e["status"] == "ok" else "—",
                "ops": f"{e['edgetpu_ops']:.0f} / {total:.0f}" if e.get("edgetpu_ops") is not None else "—",
                "subgraphs": _num(e.get("edgetpu_subgraphs"), ".0f"),
                "off_chip": _kb(e.get("edgetpu_off_chip_bytes")) if e.get("edgetpu_off_chip_bytes") else "0"})
        groups.append({"device": device, "cpu": cpu.label(False) if cpu else "not measured", "tpu": tpu.label(False),
                       "rows": lines})
    return groups


def _delegates(tables: list[ModelTable]) -> list[dict[str, Any]]:
    out = []
    for (device, model, threads), (delegates, rows) in delegate_comparison(tables).items():
        out.append({"device": device, "model": model, "threads": threads, "delegates": delegates,
                    "rows": [{"variant": variant,
                              "cells": [_delegate_cell(values.get(d), values.get("cpu")) or "—" for d in delegates]}
                             for variant, values in rows.items()]})
    return out


def render_html(cells: list[dict[str, Any]], run: dict[str, Any], devices: list[dict[str, Any]],
                samples: dict[int, np.ndarray], history: dict[tuple[str, str], list[dict[str, Any]]] | None = None,
                ) -> str:
    """The page. `samples` maps cell id -> raw timings; `history` maps (model, device) -> the rows
    of Store.history for a trend figure (shown where two runs or more exist)."""
    import jinja2

    tables = pivot(cells)
    by_cell = {(c["model"], c["variant"], Target(c["device_name"], c["delegate"], c["threads"])): c["id"]
               for c in cells if "id" in c}
    models = []
    for table in tables:
        timings = {(variant, target): samples[cell_id] for (model, variant, target), cell_id in by_cell.items()
                   if model == table.model and cell_id in samples}
        figures = [(title, _uri(data)) for title, data in (
            ("Latency against size", plots.size_latency(table)),
            ("Accuracy against latency" if table.labeled else "Agreement with fp32 against latency",
             plots.accuracy_latency(table)),
            ("Latency distributions", plots.distributions(table, timings))) if data is not None]
        for (model, device), rows in (history or {}).items():
            data = plots.trend(rows, model, device) if model == table.model else None
            if data is not None:
                figures.append((f"Trend on {device} over {len({r['run_id'] for r in rows})} runs", _uri(data)))
        models.append({"name": table.model, "labeled": table.labeled, "quality": table.quality_header(),
                       "what": quality_words(table), "table": _model_table(table),
                       "edgetpu": _edgetpu(table), "figures": figures})
    counts: dict[str, int] = {}
    for c in cells:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    failures = [c for c in cells if c["status"] != "ok"]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(
        run=run, versions=json.loads(run.get("versions_json") or "{}"), counts=sorted(counts.items()),
        devices=_device_rows(devices, cells), models=models, delegates=_delegates(tables), failures=failures,
        commit=(run.get("git_commit") or "unknown")[:12] + (" (uncommitted changes)" if run.get("git_dirty") else ""))
