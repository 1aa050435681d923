"""The report pivot and its writers, on fixed rows whose expected values are worked out by hand."""

from __future__ import annotations

import csv
import io
import json
import math

from harness.report import csv_text, json_records, markdown, pivot, quality, render
from harness.report_text import markdown as default_markdown


def cell(variant, delegate, threads, status="ok", reason=None, device="local", **metrics):
    return {"model": "cnn", "variant": variant, "device_name": device, "delegate": delegate, "threads": threads,
            "status": status, "reason": reason, "device_fingerprint": "fp", "runtime_name": "ai_edge_litert",
            "runtime_version": "2.3.0", "artifact_sha256": "sha", "metrics": metrics}


CELLS = [
    cell("fp32", "cpu", 1, model_bytes=40000.0, model_gzip_bytes=32000.0, latency_p50_us=100.0,
         latency_p90_us=120.0, top1_accuracy=0.98),
    cell("fp32", "xnnpack", 2, model_bytes=40000.0, model_gzip_bytes=32000.0, latency_p50_us=50.0,
         latency_p90_us=55.0, top1_accuracy=0.98),
    cell("int8", "cpu", 1, model_bytes=10000.0, model_gzip_bytes=8000.0, latency_p50_us=40.0,
         latency_p90_us=44.0, top1_accuracy=0.975),
    cell("int8", "xnnpack", 2, model_bytes=10000.0, model_gzip_bytes=8000.0, latency_p50_us=100.0,
         latency_p90_us=110.0, top1_accuracy=0.975),
    cell("pruned", "cpu", 1, model_bytes=40000.0, model_gzip_bytes=12800.0, sparsity=0.8, latency_p50_us=100.0,
         latency_p90_us=101.0, top1_accuracy=0.97),
    cell("pruned", "xnnpack", 2, "failed", "allocate failed: out of memory", model_bytes=40000.0,
         model_gzip_bytes=12800.0, sparsity=0.8),
    cell("int16x8", "cpu", 1, "failed", "conversion failed: ConverterError: op not supported"),
    cell("int16x8", "xnnpack", 2, "failed", "conversion failed: ConverterError: op not supported"),
]


def test_pivot_ratios_against_fp32_on_the_same_target():
    (table,) = pivot(CELLS)
    assert table.model == "cnn" and table.labeled
    assert [t.label() for t in table.targets] == ["local cpu 1t", "local xnnpack 2t"]
    rows = {r.variant: r for r in table.rows}
    assert list(rows) == ["fp32", "int8", "pruned", "int16x8"]
    assert rows["int8"].size_ratio == 4.0 and rows["int8"].gzip_ratio == 4.0
    assert rows["pruned"].size_ratio == 1.0 and rows["pruned"].gzip_ratio == 2.5 and rows["pruned"].sparsity == 0.8
    cpu, xnn = table.targets
    assert rows["int8"].cells[cpu]["speedup"] == 2.5  # 100 us / 40 us
    assert rows["int8"].cells[xnn]["speedup"] == 0.5  # slower than fp32 on XNNPACK: shown, not hidden
    assert rows["pruned"].cells[xnn]["speedup"] is None and rows["pruned"].cells[xnn]["status"] == "failed"
    assert rows["int16x8"].model_bytes is None and rows["int16x8"].size_ratio is None


def test_default_markdown_has_a_row_per_target_and_variant():
    text = default_markdown(pivot(CELLS))
    lines = text.splitlines()
    assert lines[0] == "### cnn on local"  # one device: named once, targets are delegate and threads
    assert "| variant | size | × smaller | gzip | × smaller | sparsity |" in lines
    assert "| int8 | 9.8 KB | 4.00× | 7.8 KB | 4.00× | — |" in lines
    assert "| pruned | 39.1 KB | 1.00× | 12.5 KB | 2.50× | 80.0 % |" in lines
    assert "| int16x8 | — | — | — | — | — |" in lines  # never converted: no size
    long = lines[lines.index("| target | variant | top-1 | agree / SQNR | p50 | p90 | speed-up |") + 2:]
    long = [[c.strip() for c in line.strip("|").split("|")] for line in long[:long.index("")]]
    assert long == [  # a labelled model's fidelity beside its accuracy: none stored for these cells
        ["cpu 1t", "fp32", "98.00 %", "—", "0.100", "0.120", "1.00×"],
        ["", "int8", "97.50 %", "—", "0.040", "0.044", "2.50×"],
        ["", "pruned", "97.00 %", "—", "0.100", "0.101", "1.00×"],
        ["", "int16x8", "failed [1]", "—", "—", "—", "—"],
        ["xnnpack 2t", "fp32", "98.00 %", "—", "0.050", "0.055", "1.00×"],
        ["", "int8", "97.50 %", "—", "0.100", "0.110", "0.50×"],  # slower than fp32 on XNNPACK: shown, not hidden
        ["", "pruned", "failed [2]", "—", "—", "—", "—"],
        ["", "int16x8", "failed [1]", "—", "—", "—", "—"]]
    assert "[1] conversion failed: ConverterError: op not supported (int16x8)" in lines
    assert "[2] allocate failed: out of memory (pruned)" in lines


def test_the_default_view_is_what_render_gives_and_wide_is_the_pivot():
    run = {"id": "r1", "plan_name": "quick", "status": "ok", "started_at": "2026-01-01T00:00:00+0000"}
    narrow = render("markdown", CELLS, run, [])
    assert narrow.startswith("## Run r1 — plan quick (ok)") and "| target | variant | top-1 |" in narrow
    wide = render("markdown", CELLS, run, [], wide=True)
    assert "| target |" not in wide and "| cpu 1t: top-1 | agree / SQNR | p50 | p90 | speed-up |" in wide
    assert render("csv", CELLS, run, []) == csv_text(pivot(CELLS))


def test_wide_markdown_shows_values_and_failure_reasons():
    text = markdown(pivot(CELLS))
    lines = text.splitlines()
    int8 = next(line for line in lines if line.startswith("| int8 |"))
    assert [c.strip() for c in int8.strip("|").split("|")] == [
        "int8", "9.8 KB", "4.00×", "7.8 KB", "4.00×", "—", "97.50 %", "—", "0.040", "0.044", "2.50×",
        "97.50 %", "—", "0.100", "0.110", "0.50×"]
    assert "| pruned | 39.1 KB | 1.00× | 12.5 KB | 2.50× | 80.0 % |" in text
    assert "failed [1]" in next(line for line in lines if line.startswith("| pruned |"))
    assert "[1] allocate failed: out of memory (pruned)" in lines
    assert "[2] conversion failed: ConverterError: op not supported (int16x8)" in lines


def test_fidelity_column_for_unlabeled_models():
    assert quality({"top1_agreement": 0.75, "sqnr_db": 21.46}, labeled=False) == "75 % / 21.5 dB"
    assert quality({"top1_agreement": 1.0, "sqnr_db": math.inf}, labeled=False) == "100 % / ∞ dB"
    assert quality({"top1_accuracy": 0.9806}, labeled=True) == "98.06 %"


def test_csv_has_one_row_per_model_and_variant():
    rows = list(csv.DictReader(io.StringIO(csv_text(pivot(CELLS)))))
    assert [r["variant"] for r in rows] == ["fp32", "int8", "pruned", "int16x8"]
    int8 = rows[1]
    assert int8["model_bytes"] == "10000" and int8["size_ratio"] == "4"
    assert int8["local cpu 1t:latency_p50_ms"] == "0.04" and int8["local cpu 1t:speedup"] == "2.5"
    assert int8["local xnnpack 2t:top1_accuracy"] == "0.975"
    assert rows[2]["local xnnpack 2t:status"] == "failed"
    assert rows[2]["local xnnpack 2t:reason"] == "allocate failed: out of memory"


def test_json_is_one_record_per_cell_with_every_metric_name():
    records = json.loads(json_records(CELLS + [cell("fp32", "reference", 1, sqnr_db=math.inf)], {"id": "run1"}))
    assert len(records) == len(CELLS) + 1
    first = records[0]
    for key in ("model", "variant", "device", "delegate", "threads", "status", "reason",
                "latency_p50_us", "model_bytes", "model_gzip_bytes", "top1_accuracy", "sqnr_db", "nodes_delegated"):
        assert key in first
    assert first["latency_p50_us"] == 100.0 and first["top1_agreement"] is None and first["run_id"] == "run1"
    assert records[-1]["sqnr_db"] is None  # infinite (identical outputs) is not valid JSON


CORAL = [
    cell("fp32", "xnnpack", 1, device="coral", model_bytes=5_300_000.0, latency_p50_us=675_000.0, top1_accuracy=0.7746),
    cell("int8", "xnnpack", 1, device="coral", model_bytes=1_400_000.0, latency_p50_us=304_000.0, top1_accuracy=0.7703),
    cell("fp32", "edgetpu", 1, "skipped", "Edge TPU needs full-integer quantization", device="coral",
         model_bytes=5_300_000.0),
    cell("int8", "edgetpu", 1, device="coral", model_bytes=1_400_000.0, edgetpu_model_bytes=1_600_000.0,
         latency_p50_us=5_000.0, first_inference_us=24_000.0, top1_accuracy=0.7714, edgetpu_ops=289.0, cpu_ops=5.0,
         edgetpu_subgraphs=2.0, edgetpu_on_chip_bytes=6_375_342.0, edgetpu_off_chip_bytes=1_782_579.0),
    cell("qat_int8", "xnnpack", 1, device="coral", model_bytes=1_400_000.0, latency_p50_us=300_000.0,
         top1_accuracy=0.772),
    cell("qat_int8", "edgetpu", 1, "failed", "Edge TPU compilation failed: Internal compiler error. Aborting!",
         device="coral", model_bytes=1_400_000.0),
]


def test_edge_tpu_beside_the_cpu_in_the_default_view():
    """The seeds' EfficientNet numbers: CPU fp32 675 ms, CPU int8 304 ms, Edge TPU int8 5 ms; a row
    per variant and processor."""
    text = default_markdown(pivot(CORAL))
    section = text.split("### cnn on the Edge TPU of coral")[1].split("## Delegates compared")[0]
    assert "CPU = coral's CPU (xnnpack, 1t; fp32 there: top-1 77.46 %, 5.05 MB, p50 675.0 ms)" in section
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| variant")]
    assert rows == [  # fp32 cannot go to the TPU; it is the baseline said above
        ["int8", "CPU", "77.03 %", "1.34 MB", "304.0"] + [""] * 6,
        ["int8", "Edge TPU", "77.14 %", "1.53 MB", "5.000", "24.0", "60.80×", "289 / 294", "2", "6.08 MB", "1.70 MB"],
        ["qat_int8", "CPU", "77.20 %", "1.34 MB", "300.0"] + [""] * 6,
        ["qat_int8", "Edge TPU", "failed [1]", "—", "—", "—", "—", "—", "—", "—", "—"]]
    assert "[1] Edge TPU compilation failed: Internal compiler error. Aborting!" in section
    assert "| int8 | 304.0 | 5.000 · 289/294 ops on TPU |" in text.split("## Delegates compared")[1]
    assert max(len(line) for line in text.splitlines()) <= 120


def test_edge_tpu_table_in_the_seeds_layout_when_wide():
    """The seeds' EfficientNet rows: CPU fp32 675 ms, CPU int8 304 ms, Edge TPU int8 5 ms."""
    text = markdown(pivot(CORAL))
    section = text.split("### cnn on the Edge TPU of coral")[1].split("## Delegates compared")[0]
    assert "CPU = coral's CPU (xnnpack, 1t)" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    assert [r.split(" | ")[0] for r in rows] == ["| int8", "| qat_int8"]  # fp32 cannot go to the TPU
    int8 = rows[0].strip("| ").split(" | ")
    assert int8 == ["int8", "77.46 %", "5.05 MB", "675.0", "77.03 %", "1.34 MB", "304.0",
                    "77.14 %", "1.53 MB", "5.000", "24.0", "289 / 294", "2", "6.08 MB", "1.70 MB", "60.80×"]
    qat = rows[1].strip("| ").split(" | ")
    assert qat[7:10] == ["failed [1]", "—", "—"] and qat[11] == "—"
    assert "[1] Edge TPU compilation failed: Internal compiler error. Aborting!" in section
    compared = text.split("## Delegates compared")[1]
    assert "| int8 | 304.0 | 5.000 · 289/294 ops on TPU |" in compared
