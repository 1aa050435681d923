"""The HTML report and the exports, on fixed rows in a real store; the page opened in a real
headless Chromium (Debian's, installed by scripts/install-test-deps), which must load every image
and run without a script error. Its screenshot is kept in results/test-artifacts/."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, harness_cli
from harness.html_report import render_html
from harness.store import CellRecord, LaunchRecord, Store

ARTIFACTS = Path(os.environ.get("HARNESS_TEST_ARTIFACTS", ROOT / "results" / "test-artifacts"))
IDENTITY = "a1b2c3d4e5f60718-1000000012345678"
FINGERPRINT = {"fingerprint_id": "a1b2c3d4e5f60718", "serial": "1000000012345678", "cpu_model": "Cortex-A76", "cores": 4, "os": "Debian 12",
               "kernel": "6.1.0-rpi7", "governor": "performance", "device_model": "Raspberry Pi 5 Model B",
               "runtime": "ai_edge_litert", "runtime_version": "2.3.0"}


def _cell(variant: str, delegate: str, p50: float, status: str = "ok", reason: str | None = None,
          size: float = 40_000, accuracy: float | None = None, seed: int = 0) -> CellRecord:
    rng = np.random.default_rng(seed)
    samples = list(p50 * np.exp(rng.normal(0, 0.04, 200))) if status == "ok" else []
    metrics = {"model_bytes": size, "model_gzip_bytes": size * 0.8}
    if status == "ok":
        metrics.update(latency_p50_us=float(np.median(samples)), latency_p90_us=float(np.percentile(samples, 90)),
                       nodes_delegated=11.0 if delegate == "xnnpack" else 0.0, nodes_total=11.0)
        if accuracy is not None:
            metrics["top1_accuracy"] = accuracy
    return CellRecord(device_name="pi5", model="digits_cnn", variant=variant, delegate=delegate, threads=4,
                      status=status, reason=reason, device_fingerprint=FINGERPRINT["fingerprint_id"],
                      device_identity=IDENTITY, runtime_name="ai_edge_litert", runtime_version="2.3.0",
                      temp_before_c=48.5, temp_after_c=55.25, metrics=metrics,
                      launches=[LaunchRecord(k, samples[k * 40:(k + 1) * 40], seq=k) for k in range(5)] if samples else [])


@pytest.fixture
def fixed_store(tmp_path):
    """A real store holding one run of fixed rows: the seeds' digits CNN on a Pi 5, two delegates,
    one variant that failed to convert and one a delegate skipped."""
    store = Store(tmp_path / "fixed.sqlite")
    store.upsert_device(IDENTITY, FINGERPRINT["fingerprint_id"], "pi5", "ssh", FINGERPRINT["serial"], FINGERPRINT)
    earlier = store.create_run(plan_name="quick", git_commit="0" * 40)
    store.add_cell(earlier, _cell("fp32", "xnnpack", 500.0, accuracy=0.9806, seed=9))
    store.finish_run(earlier, "ok")
    run = store.create_run(plan_name="quick", git_commit="1234567890abcdef" * 2 + "12345678", git_dirty=1,
                           harness_version="0.1.0", host="bench-host", versions_json='{"tensorflow": "2.21.0"}')
    for n, (variant, size, accuracy, cpu_us, xnn_us) in enumerate([
            ("fp32", 39_144, 0.9806, 1250.0, 450.0), ("dynamic", 13_616, 0.9806, 1100.0, 520.0),
            ("int8", 14_032, 0.9778, 700.0, 380.0)]):
        store.add_cell(run, _cell(variant, "cpu", cpu_us, size=size, accuracy=accuracy, seed=n))
        store.add_cell(run, _cell(variant, "xnnpack", xnn_us, size=size, accuracy=accuracy, seed=10 + n))
    store.add_cell(run, _cell("int16x8", "cpu", 0, status="failed",
                              reason="conversion failed: allocate_tensors: quantized BATCH_MATMUL not supported"))
    store.add_cell(run, _cell("int16x8", "xnnpack", 0, status="skipped", reason="pi5 does not offer it"))
    store.finish_run(run, "partial")
    yield store, run
    store.close()


def _page(store: Store, run: str) -> str:
    cells = store.cells(run)
    samples = {c["id"]: store.samples(c["id"]) for c in cells}
    history = {("digits_cnn", "pi5"): store.history("digits_cnn", "pi5", "latency_p50_us", until=run)}
    return render_html(cells, store.run(run), store.devices_of_run(run), samples, history)


class _Page(HTMLParser):
    """Tables as rows of cell texts, images by src, every external reference."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[dict[str, str]] = []
        self.external: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key) and not a[key].startswith(("data:", "#")):
                self.external.append(a[key])
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_the_page_shows_the_tables_reasons_plots_and_provenance(fixed_store):
    store, run = fixed_store
    html = _page(store, run)
    page = _Page()
    page.feed(html)
    assert page.external == []  # self-contained: nothing to fetch
    devices, model = page.tables[0], page.tables[1]
    assert devices[1][:3] == ["pi5", "ssh", "a1b2c3d4e5f60718"] and "Raspberry Pi 5 Model B" in devices[1]
    assert "Cortex-A76 × 4" in devices[1] and devices[1][-1] == "48.5–55.2 °C"
    assert model[0][6:] == ["cpu 4t", "xnnpack 4t"] and "<h2 id=\"model-digits_cnn\">digits_cnn on pi5</h2>" in html
    rows = {r[0]: r for r in model[2:]}
    assert rows["fp32"][1:3] == ["38.2 KB", "1.00×"] and rows["dynamic"][2] == "2.87×"
    assert rows["fp32"][6] == "98.06 %" and rows["int8"][6] == "97.78 %"
    p50 = float(rows["int8"][7])  # ms, from the stored metric
    assert abs(p50 - 0.7) < 0.05 and rows["int8"][9].endswith("×") and 1.6 < float(rows["int8"][9][:-1]) < 2.0
    assert rows["int16x8"][6:] == ["failed [1]", "skipped [2]"]
    assert "[1] conversion failed: allocate_tensors: quantized BATCH_MATMUL not supported (int16x8)" in html
    delegates = next(t for t in page.tables if t[0][:3] == ["variant", "cpu", "xnnpack"])
    assert "11/11 nodes" in delegates[1][2] and "0/11 nodes" in delegates[1][1]
    failures = page.tables[-1]
    assert [r[5] for r in failures[1:]] == ["failed", "skipped"] and "pi5 does not offer it" in failures[2][6]
    titles = [img["alt"] for img in page.images]
    assert titles == ["digits_cnn: Latency against size", "digits_cnn: Accuracy against latency",
                      "digits_cnn: Latency distributions", "digits_cnn: Trend on pi5 over 2 runs"]
    for img in page.images:
        data = base64.b64decode(img["src"].split(",", 1)[1])
        assert img["src"].startswith("data:image/png;base64,") and data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 8_000
    assert "commit <code>1234567890ab (uncommitted changes)</code>" in html and "tensorflow 2.21.0" in html
    assert f"Run {run} — plan quick" in html


def test_text_from_the_store_is_escaped(fixed_store):
    store, run = fixed_store
    store.add_cell(run, _cell("float16", "cpu", 0, status="failed", reason="<script>alert(1)</script> & more"))
    html = _page(store, run)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium: `make test` installs Debian's chromium when run as root")
def test_a_real_browser_renders_every_table_and_image(fixed_store, tmp_path):
    store, run = fixed_store
    page = tmp_path / "report.html"
    page.write_text(_page(store, run))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout).group(1)
    attributes = dict(re.findall(r'(data-[a-z-]+)="(\d+)"', body))
    assert attributes == {"data-images": "4", "data-broken-images": "0", "data-script-errors": "0"}, body
    assert dom.stdout.count("<table") == len(re.findall(r"<table", page.read_text()))
    shown = subprocess.run(flags + ["--window-size=1400,2400", f"--screenshot={shot}", page.as_uri()],
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert shown.returncode == 0 and shot.exists(), shown.stderr[-2000:]
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert image.shape == (2400, 1400)
    assert (image < 128).mean() > 0.01 and image.std() > 20  # text, tables and plots, not a blank page


def test_exports_are_tidy_tables_for_pandas(fixed_store, tmp_path):
    store, run = fixed_store
    db = str(store.path)
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"metrics.{fmt}"
        result = harness_cli("export", "--format", fmt, "--out", str(out), "--db", db)
        assert result.returncode == 0 and result.stdout.strip() == str(out), result.stderr
        frame = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
        assert len(frame) == store.count("metrics", run) + 0  # every metric row of the run
        assert set(frame["run_id"]) == {run} and set(frame["git_commit"]) == {"1234567890abcdef" * 2 + "12345678"}
        p50 = frame[(frame.metric == "latency_p50_us") & (frame.variant == "int8") & (frame.delegate == "cpu")]
        assert len(p50) == 1 and abs(p50["value"].iloc[0] - 700) < 40 and p50["unit"].iloc[0] == "us"
        failed = frame[frame.status == "failed"]
        assert set(failed["variant"]) == {"int16x8"} and failed["reason"].str.contains("BATCH_MATMUL").all()
        assert (frame["device_fingerprint"] == "a1b2c3d4e5f60718").all()
    samples = tmp_path / "samples.parquet"
    result = harness_cli("export", "--format", "parquet", "--samples", "--out", str(samples), "--run", "all",
                         "--db", db)
    assert result.returncode == 0, result.stderr
    frame = pd.read_parquet(samples)
    assert len(frame) == store.count("samples") == 7 * 200 and frame["run_id"].nunique() == 2
    one = frame[(frame.run_id == run) & (frame.variant == "fp32") & (frame.delegate == "cpu")]
    cell = next(c for c in store.cells(run) if c["variant"] == "fp32" and c["delegate"] == "cpu")
    assert list(one["launch"]) == [k for k in range(5) for _ in range(40)]
    assert list(one["seq"]) == list(range(40)) * 5 and (one["device_identity"] == IDENTITY).all()
    assert np.allclose(one["latency_us"].to_numpy(), store.samples(cell["id"]).astype(np.float64))
    bad = harness_cli("export", "--format", "xlsx", "--out", str(tmp_path / "x"), "--db", db)
    assert bad.returncode == 2 and "invalid choice: 'xlsx'" in bad.stderr


def test_an_output_that_cannot_be_written_is_one_clear_error(fixed_store, tmp_path):
    store, run = fixed_store
    taken = tmp_path / "a-directory"
    taken.mkdir()
    for args in (("export", "--format", "csv"), ("report", "--format", "html")):
        result = harness_cli(*args, "--out", str(taken), "--db", str(store.path))
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip() == f"harness: error: --out: {taken} is a directory (give a file path)"
        assert taken.is_dir() and not list(tmp_path.glob(".a-directory*"))
