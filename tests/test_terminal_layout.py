"""What people read at a terminal fits in 120 columns: `harness report`'s default view on a run with
many targets (two thread counts of two delegates on this host, four delegates on a phone, a Coral
host's CPU and Edge TPU), and `harness doctor`'s table with its long install hints moved under it."""

from __future__ import annotations

import json
import re

from harness.doctor import Check, render_checks
from harness.edgetpu import NEEDS_FULL_INTEGER
from harness.report import _ms, header_lines, markdown, pivot, render
from harness.report_text import WIDTH, wrap

VARIANTS = ("fp32", "dynamic", "float16", "int8", "int8_float_io", "int16x8", "pruned", "pruned_dynamic", "qat_int8")
FULL_INTEGER = ("int8", "qat_int8")
TARGETS = ([("local", d, t) for d in ("cpu", "xnnpack") for t in (1, 2)]
           + [("pixel", d, 4) for d in ("cpu", "xnnpack", "gpu", "nnapi")]
           + [("coral", "xnnpack", 4), ("coral", "edgetpu", 1)])
SIZE = {"fp32": 1.0, "dynamic": 0.27, "float16": 0.51, "int8": 0.26, "int8_float_io": 0.26, "int16x8": 0.3,
        "pruned": 1.0, "pruned_dynamic": 0.27, "qat_int8": 0.26}
SPEED = {"cpu": 1.0, "xnnpack": 0.45, "gpu": 0.3, "nnapi": 0.6, "edgetpu": 0.02}


def _cell(model, labeled, base_bytes, base_us, variant, device, delegate, threads):
    metrics = {"model_bytes": base_bytes * SIZE[variant], "model_gzip_bytes": base_bytes * SIZE[variant] * 0.9}
    if variant.startswith("pruned"):
        metrics["model_gzip_bytes"] *= 0.4
        metrics["sparsity"] = 0.8
    cell = {"model": model, "variant": variant, "device_name": device, "delegate": delegate, "threads": threads,
            "status": "ok", "reason": None, "device_fingerprint": f"fp-{device}", "runtime_name": "ai_edge_litert",
            "runtime_version": "2.3.0", "artifact_sha256": "sha", "metrics": metrics,
            "accuracy_source": "host" if device == "pixel" else "device"}
    if delegate == "edgetpu" and variant not in FULL_INTEGER:
        return {**cell, "status": "skipped", "reason": NEEDS_FULL_INTEGER}
    if delegate == "edgetpu" and variant == "qat_int8":
        return {**cell, "status": "failed", "reason": "Edge TPU compilation failed: Internal compiler error. Aborting! "
                                                      "See /tmp/harness-edgetpu/qat_int8/compile_edgetpu.log"}
    if delegate == "gpu" and variant == "int16x8":
        return {**cell, "status": "failed", "reason": "delegate failed: GPU delegate: Following operations are not "
                                                      "supported by GPU delegate: FULLY_CONNECTED (int16 activations)"}
    scale = (1 + 0.37 * VARIANTS.index(variant)) * (0.55 if threads == 2 else 1) * (1.3 if device == "coral" else 1)
    p50 = base_us * SPEED[delegate] * scale
    metrics.update(latency_p50_us=round(p50, 1), latency_p90_us=round(p50 * 1.08, 1))
    if labeled:
        metrics["top1_accuracy"] = 0.98 - 0.003 * VARIANTS.index(variant)
    else:
        metrics["top1_agreement"] = 1.0 - 0.01 * VARIANTS.index(variant)
        metrics["sqnr_db"] = float("inf") if variant in ("fp32", "pruned") else 45.0 - VARIANTS.index(variant)
    if delegate in ("xnnpack", "gpu", "nnapi"):
        metrics.update(nodes_delegated=63.0 if delegate != "nnapi" else 41.0, nodes_total=66.0)
    if delegate == "edgetpu":
        metrics.update(edgetpu_model_bytes=base_bytes * 0.3, first_inference_us=p50 * 5, edgetpu_ops=62.0,
                       cpu_ops=4.0, edgetpu_subgraphs=1.0, edgetpu_on_chip_bytes=base_bytes * 0.22,
                       edgetpu_off_chip_bytes=base_bytes * 0.06)
    return cell


def many_target_cells():
    cells = []
    for model, labeled, base_bytes, base_us in (("digits_cnn", True, 91_000.0, 180.0),
                                                ("mobilenet_v2", False, 14_000_000.0, 61_000.0)):
        for device, delegate, threads in TARGETS:
            for variant in VARIANTS:
                cells.append(_cell(model, labeled, base_bytes, base_us, variant, device, delegate, threads))
    return cells


RUN = {"id": "20260301-221500-3fa9c2", "plan_name": "nightly", "status": "partial", "started_at": "2026-03-01T22:15:00+0000",
       "finished_at": "2026-03-02T01:02:44+0000", "host": "bench-01", "harness_version": "0.9.0",
       "git_commit": "4f2a9c81d07be3aa", "git_dirty": 1,
       "versions_json": json.dumps({"python": "3.11.7", "tensorflow": "2.16.2", "ai-edge-litert": "2.3.0",
                                    "tensorflow-model-optimization": "0.8.0", "numpy": "1.26.4", "tf-keras": "2.16.0"})}
DEVICES = [
    {"name": "local", "fingerprint_id": "8d0c3b7e91a2f4c5", "serial": None, "other_names": [],
     "attributes": {"cpu_model": "AMD EPYC 7B13", "cores": 2, "os": "Debian GNU/Linux 12 (bookworm)",
                    "kernel": "6.1.0-18-cloud-amd64", "governor": None, "runtime": "ai_edge_litert",
                    "runtime_version": "2.3.0"}},
    {"name": "pixel", "fingerprint_id": "5e71aa09c3d2b6f8", "serial": "28011FDH2000ZZ", "other_names": [],
     "attributes": {"cpu_model": "GS201", "cores": 8,
                    "os": "Android 14 (SDK 34; google/panther/panther:14/AP2A.240805.005/12025142:user/release-keys)",
                    "kernel": "5.10.198-android13-4-00050-g12f3388846c3-ab11920634", "governor": "sched_pixel",
                    "runtime": "benchmark_model", "runtime_version": "2.16.1"}},
    {"name": "coral", "fingerprint_id": "c0a1f00dbeef1234", "serial": "100000002c3f5e7a", "other_names": ["devboard-2"],
     "attributes": {"cpu_model": "Cortex-A53", "cores": 4, "os": "Mendel GNU/Linux 5 (Eagle)",
                    "kernel": "4.14.98-imx", "governor": "performance", "runtime": "tflite_runtime",
                    "runtime_version": "2.5.0.post1"}},
]


def _default_view():
    return render("markdown", many_target_cells(), RUN, DEVICES)


def test_every_line_of_the_default_report_fits_in_120_columns():
    text = _default_view()
    too_wide = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not too_wide, f"{len(too_wide)} lines wider than {WIDTH}, e.g. {max(too_wide, key=len)!r}"
    wide = render("markdown", many_target_cells(), RUN, DEVICES, wide=True)
    assert max(len(line) for line in wide.splitlines()) > 3 * WIDTH  # what the default view replaces
    for heading in ("### digits_cnn", "### mobilenet_v2", "### digits_cnn on the Edge TPU of coral",
                    "### mobilenet_v2 on the Edge TPU of coral", "## Delegates compared",
                    "### digits_cnn on pixel, 4 threads", "### mobilenet_v2 on local, 2 threads"):
        assert heading in text.splitlines()
    # the header keeps the phone's identity on the entry's first line
    pixel = next(line for line in text.splitlines() if line.startswith("- device pixel ["))
    assert "GS201 × 8" in pixel and "Android 14 (SDK 34; google/panther" in pixel


def test_wide_is_the_old_pivot():
    cells = many_target_cells()
    assert render("markdown", cells, RUN, DEVICES, wide=True) == markdown(pivot(cells), header_lines(RUN, DEVICES))
    assert "| variant | size | × smaller | gzip | × smaller | sparsity | local cpu 1t: top-1 | agree / SQNR | p50 |" in render(
        "markdown", cells, RUN, DEVICES, wide=True)


def _long_tables(text):
    """(model, target, variant) -> the cells of its row in each model's long table."""
    rows, model, in_long, target = {}, None, False, None
    for line in text.splitlines():
        if line.startswith("### "):
            model, in_long = line[4:].split(" on ")[0], False
        elif line.startswith("| target | variant |"):
            in_long = True
        elif not line.startswith("|"):
            in_long = False
        elif in_long and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            target = cells[0] or target  # a target is named on the first row of its group
            rows[(model, target, cells[1])] = cells
    return rows


def test_nothing_is_lost_every_cell_is_in_the_default_view():
    cells = many_target_cells()
    text = _default_view()
    rows = _long_tables(text)
    flat = re.sub(r"\s+", "", text)
    fp32 = {(c["model"], c["device_name"], c["delegate"], c["threads"]): c for c in cells if c["variant"] == "fp32"}
    labelled_models = {c["model"] for c in cells if "top1_accuracy" in c["metrics"]}
    for c in cells:
        row = rows[(c["model"], f"{c['device_name']} {c['delegate']} {c['threads']}t", c["variant"])]
        labelled = "top1_accuracy" in c["metrics"] or c["model"] in labelled_models
        p50 = 4 if labelled else 3  # a labelled model has its fidelity beside its accuracy
        if c["status"] == "ok":
            assert row[p50] == _ms(c["metrics"]["latency_p50_us"]), (c, row)
            assert row[p50 + 1] == _ms(c["metrics"]["latency_p90_us"])
            base = fp32[(c["model"], c["device_name"], c["delegate"], c["threads"])]
            assert row[p50 + 2] == (f"{base['metrics']['latency_p50_us'] / c['metrics']['latency_p50_us']:.2f}×"
                                    if base["status"] == "ok" else "—")
            assert row[2].endswith("†") == (c["device_name"] == "pixel")
        else:
            assert re.fullmatch(rf"{c['status']} \[\d+\]", row[2]) and row[3:] == ["—"] * (p50 - 3 + 3)
            assert re.sub(r"\s+", "", c["reason"]) in flat  # its note, however it was wrapped
    assert "† accuracy scored on the host" in text
    # sizes with their ratio to fp32, once per model and variant
    assert "| int8 | 23.1 KB | 3.85× | 20.8 KB | 3.85× | — |" in text
    assert "| pruned_dynamic | 3.60 MB | 3.70× | 1.30 MB | 9.26× | 80.0 % |" in text
    # the Edge TPU beside the CPU, and the delegates side by side
    edge = text.split("### digits_cnn on the Edge TPU of coral")[1].split("\n### ")[0]
    assert "CPU = coral's CPU (xnnpack, 4t; fp32 there: top-1 98.00 %, 88.9 KB, p50 0.105 ms)" in edge
    assert "| int8 | Edge TPU | 97.10 % | 26.7 KB | 0.010 | 0.049 | 22.44× | 62 / 66 | 1 | 19.6 KB | 5.3 KB |" in edge
    assert "| qat_int8 | Edge TPU | failed [1] | — | — | — | — | — | — | — | — |" in edge
    compared = text.split("### digits_cnn on pixel, 4 threads")[1].split("\n### ")[0]
    assert "| variant | cpu | xnnpack | gpu | nnapi |" in compared
    assert "| int16x8 | 0.513 | 0.231 · 63/66 nodes · 2.22× | failed | 0.308 · 41/66 nodes · 1.67× |" in compared


def test_a_delegate_comparison_too_wide_for_one_table_is_split():
    cells = [c for c in many_target_cells() if c["device_name"] == "pixel" and c["model"] == "mobilenet_v2"]
    for c in [dict(c) for c in cells]:  # three more delegates: seven columns do not fit in 120
        for extra in ("reference", "gpu_fp16", "hexagon"):
            cells.append({**c, "delegate": extra})
    text = render("markdown", cells, RUN, DEVICES)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    compared = text.split("## Delegates compared")[1]
    heads = [line for line in compared.splitlines() if line.startswith("| variant |")]
    assert len(heads) > 1
    shown = [d for head in heads for d in head.strip("| ").split(" | ")[1:]]
    assert shown == ["cpu", "xnnpack", "gpu", "nnapi", "reference", "gpu_fp16", "hexagon"]


def test_a_user_metric_of_many_names_is_split_into_tables_that_fit():
    names = [f"f1_class_{i:02d}_{'x' * 20}" for i in range(16)]  # MAX_USER_METRICS names of 32 characters
    cells = [c for c in many_target_cells() if c["model"] == "digits_cnn"]
    for n, c in enumerate(cells):
        if c["status"] == "ok":
            c["metrics"].update({f"user_{name}": 0.5 + 0.001 * (n + i) for i, name in enumerate(names)})
    text = render("markdown", cells, RUN, DEVICES)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    mine = text.split("Your metric (`data.metric`):")[1].split("\n### ")[0]
    heads = [line.strip("| ").split(" | ") for line in mine.splitlines() if line.startswith("| target |")]
    assert len(heads) >= 4 and all(head[:2] == ["target", "variant"] for head in heads)
    assert [name for head in heads for name in head[2:]] == sorted(names)  # each name once, in order
    ok = [c for c in cells if c["status"] == "ok"]
    rows = [line for line in mine.splitlines() if line.startswith("| ") and not line.startswith("| target |")]
    assert len(rows) == len(heads) * len(ok)  # every measured cell in every group
    cell = next(c for c in ok if (c["device_name"], c["delegate"], c["threads"], c["variant"])
                == ("local", "cpu", 2, "int8"))
    for head in heads:  # the cell's row in each group holds its values of that group's names
        values = [f"{cell['metrics']['user_' + name]:.4g}" for name in head[2:]]
        assert "| " + " | ".join(["local cpu 2t", "int8", *values]) + " |" in rows


def test_what_kept_a_cell_from_being_scored_is_shown_under_its_table():
    cells = [c for c in many_target_cells() if c["model"] == "digits_cnn" and c["device_name"] == "local"]
    raised = "the metric f1 returned str for 'f1', not a number"
    for c in cells:
        if c["status"] == "ok" and c["variant"] in ("int8", "qat_int8") and c["threads"] == 1:
            c["warnings_json"] = json.dumps([raised, "measured by `harness sweep --resume` at 2026-03-02"])
    text = render("markdown", cells, RUN, DEVICES)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    shown = re.sub(r"\s+", " ", text.split("### digits_cnn")[1])
    assert f"! {raised} (cpu 1t int8, cpu 1t qat_int8, xnnpack 1t int8, xnnpack 1t qat_int8)" in shown
    assert "measured by" not in text  # not every warning: those that left a number out


def test_wrap_breaks_at_spaces_and_inside_long_paths_only():
    text = "see " + "/very/long/path/" * 6 + "file.log for the reason"
    lines = wrap(text, "  ", width=40)
    assert all(len(line) <= 40 for line in lines)
    assert "".join(line.strip() + ("" if line.endswith("/") else " ") for line in lines).strip() == text
    assert wrap("short", "  ") == ["short"]


def test_doctor_table_fits_and_long_hints_follow_it():
    checks = [
        Check("python", "ok", "3.11.7 (/work/main/.venv/bin/python), x86_64"),
        Check("tensorflow-model-optimization", "ok", "0.8.1 — pruning and QAT"),
        Check("tflite-runtime", "missing", "the runner's fallback runtime on devices; install: pip install "
                                           "tflite-runtime (needs numpy<2; TF 2.14 ops only)",
              summary="the runner's fallback runtime on devices"),
        Check("libedgetpu", "missing", "no Edge TPU runtime: libedgetpu.so.1 does not load; install " + "x" * 400),
        Check("adb key", "note", "/root/.android/adbkey absent; made on first ADB connection"),
        Check("litert-benchmark", "ok", "/home/ci/builds/runner-7/workspace/harness/.venv/bin/litert-benchmark — "
                                        "LiteRT's own benchmark (CompiledModel)"),
    ]
    lines = render_checks(checks)
    end = next(n for n, line in enumerate(lines) if line.startswith("hints"))
    table, hints = lines[:end], lines[end:]
    assert len(table) == 2 + len(checks) + 1 and all(len(line) <= WIDTH for line in table)
    assert table[-2].startswith("litert-benchmark  ") and table[-1].startswith(" " * 20)  # ok: wrapped in place
    assert " ".join((table[-2] + table[-1]).split()[2:]) == checks[-1].detail
    rows = {line.split("  ")[0]: line for line in table[2:]}
    assert rows["tflite-runtime"].split()[1:] == ["missing", "the", "runner's", "fallback", "runtime", "on",
                                                  "devices", "—", "see", "hint", "1"]
    assert rows["libedgetpu"].split()[1:] == ["missing", "see", "hint", "2"]
    assert "/root/.android/adbkey absent" in rows["adb key"]  # short enough to stay in the table
    assert hints[0].startswith("hints")
    assert hints[1].split(": ", 1) == ["tflite-runtime missing (hint 1)", checks[2].detail]
    assert hints[2].split(": ", 1) == ["libedgetpu missing (hint 2)", checks[3].detail]  # one line: copy it whole
