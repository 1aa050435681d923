"""Parse the console output of TFLite / LiteRT ``benchmark_model``.

``parse(text)`` is pure: it takes the captured text (stdout, stderr, logcat,
or all of them mixed) and returns a dict. It reads these output generations:

* TF Lite 1.x (2018-2019): ``Running benchmark for N iterations`` and
  ``Average inference timings in us: Warmup: W, Init: I, no stats: A`` (the
  2019 README and Android app print ``Inference: A`` instead of
  ``no stats: A``; the oldest 2018 tool printed the average first,
  ``Average inference timings in us: A , Warmup: W,``).
* TF Lite 2.x: ``Inference timings in us: Init: …, First inference: …,
  Warmup (avg): …, Inference (avg): …``; memory as ``Peak memory footprint
  (MB): init=… overall=…`` (older) or ``Memory footprint delta from the start
  of the tool (MB): init=… overall=…`` (newer); ``Overall peak memory
  footprint (MB) via periodic monitoring: …`` with
  ``--report_peak_memory_footprint=true``; statistics lines with or without
  ``p5=… median=… p95=…``.
* LiteRT 2025 (``litert/tools:benchmark_model``): the
  ``========== BENCHMARK RESULTS ==========`` block, whose values are in ms.

Any line may carry a prefix, removed before matching: Android logcat
(``threadtime``, ``time``, ``brief``, ``tag``, ``thread``, ``process`` and the
documentation's elided ``... tflite  :`` form), absl/glog (``I0000 00:00:…
file.cc:51]``), TFLite's ``INFO:``/``WARNING:``/``ERROR:``/``VERBOSE:`` and
LiteRT's ``[file.h:82]``. Lines that match nothing (shell prompts, the
fixtures' ``# source:`` line, delegate chatter) are ignored.

Result keys (always all present; ``None`` when the output does not say):

* ``count`` (int), ``first_us``, ``curr_us``, ``min_us``, ``max_us``,
  ``avg_us``, ``std_us``, ``p5_us``, ``median_us``, ``p95_us``: the
  statistics line of the timed run. When there is none but a LiteRT results
  block is present, ``count``/``avg_us``/``min_us``/``max_us``/``std_us``
  come from the block (10 µs resolution; the block prints ``Inference
  (std)`` without a unit, LiteRT computes it in ms); nothing else is filled
  in.
* ``init_us``, ``first_inference_us``, ``warmup_avg_us``, ``inference_avg_us``:
  the end-of-run summary line, or the LiteRT block converted from ms.
* ``memory_init_mb``, ``memory_overall_mb``, ``peak_memory_mb`` (None when
  not reported, including LiteRT's "Peak memory usage not available").
* ``delegates``: ``[{"name", "nodes_delegated", "nodes_total", "partitions"}]``
  from every ``Replacing N [out of M] node(s) with delegate (NAME) node,
  yielding K partitions…`` line (``nodes_total`` is None for the older form
  without ``out of M``); ``[]`` when there is none.
* ``ops``: rows of the ``--enable_op_profiling`` tables, each
  ``{"section", "table", "node_type", "start_ms", "first_ms", "avg_ms",
  "percent", "cdf_percent", "mem_kb", "times_called", "count", "name"}``.
  ``section`` is ``"init"`` or ``"run"`` after the tool's "Profiling Info for
  Benchmark Initialization" / "Operator-wise Profiling Info for Regular
  Benchmark Runs" headings, else None; ``table`` is the slugged banner
  (``run_order``, ``top_by_computation_time``, ``summary_by_node_type``…);
  columns a table does not have are None (``count`` exists only in the
  summary table, ``start_ms``/``first_ms``/``name`` only in per-node tables).
  ``ops`` is None when the output has no table.
* ``errors``: the tool's error lines in order, de-duplicated, prefix removed:
  lines logged at error/fatal level (``ERROR:``/``FATAL:``, logcat ``E``/``F``,
  glog ``E``/``F``), and lines starting ``Failed to``, ``Benchmarking
  failed``, ``Could not``, ``Couldn't``, ``Unable to`` or ``Error`` unless
  they are labelled as a warning (``WARNING:``, logcat ``W``) or carry
  TFLite's own ``INFO:``/``VERBOSE:``/``DEBUG:`` word (older tools print
  their errors without any prefix, and captured stdout shows up in logcat at
  level ``I``). ``[]`` when none.

Extra keys: ``warmup`` (the warm-up statistics line as a dict with the ten
statistics keys above, or None), ``model_size_mb`` (``The input model file
size (MB)``), ``num_threads`` (the echoed ``Num threads: [N]`` flag),
``graph`` (the echoed ``Graph: [path]``) and ``runs_in_output`` (how many
runs the text holds, see below).

Choices:

* Warm-up vs timed statistics: the tool prints ``Running benchmark for …``
  before each of its two loops. With two or more such lines, a statistics
  line after the first one is the warm-up and one after a later one is the
  timed run. With exactly one, its statistics are the timed run if the run
  printed its end summary and the warm-up otherwise (the run stopped after
  warm-up). Without any, the last statistics line is the timed run and the
  one before it the warm-up. The op profiler's own ``Timings
  (microseconds): count=…`` and ``Memory (bytes): count=…`` lines are never
  statistics lines.
* Several runs in one text (concatenated logs): a run starts at
  ``STARTING!``, or at a run line (``Loaded model``, ``Initialized
  TensorFlow Lite runtime``, ``Running benchmark…``, a statistics line …)
  that follows an end summary or ``Benchmarking failed``. Every key,
  ``errors`` and ``delegates`` included, describes the last complete run
  (one with a timed statistics line or an end summary); if no run is
  complete, the last run. ``runs_in_output`` counts the runs in which
  anything was recognised.
* Within a run, when a value is printed twice, the last one wins.
* ``nan``/``-nan``/``inf`` become None; ``2.95e+06`` is read as a float.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

__all__ = ["parse"]

# --- numbers -----------------------------------------------------------------

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?i:nan|inf(?:inity)?)"

# --- per-line prefixes ---------------------------------------------------------

_LOGCAT_TS = (
    r"(?:(?:\d{4}-)?\d\d-\d\d\s+\d\d:\d\d:\d\d(?:\.\d+)?|\d+\.\d+)"
    r"(?:\s+(?:[+-]\d{4}|[A-Z]{2,5}))?"
)
_LOGCAT_THREADTIME = re.compile(
    rf"^{_LOGCAT_TS}\s+(?:\S+\s+)?\d+\s+\d+\s+(?P<level>[VDIWEFS])\s+[^:]*?\s*:\s?"
)
_LOGCAT_TIME = re.compile(rf"^{_LOGCAT_TS}\s+(?P<level>[VDIWEFS])/[^(]*?\s*\(\s*\d+\):\s?")
_LOGCAT_BRIEF = re.compile(r"^(?P<level>[VDIWEFS])/[^(:]*?\s*\(\s*\d+\):\s?")
_LOGCAT_TAG = re.compile(r"^(?P<level>[VDIWEFS])/[^\s:(]+\s*:\s?")
_LOGCAT_THREAD = re.compile(r"^(?P<level>[VDIWEFS])\(\s*\d+:\s*\d+\)\s")
_LOGCAT_PROCESS = re.compile(r"^(?P<level>[VDIWEFS])\(\s*\d+\)\s")
_LOGCAT_PROCESS_TAG_SUFFIX = re.compile(r"\s+\([^()\s]+\)$")
_LOGCAT_ELIDED = re.compile(r"^\.\.\.\s+[^\s:]+\s*:\s")
_GLOG = re.compile(r"^(?P<level>[IWEF])\d{4}\s+\d\d:\d\d:\d+(?:\.\d+)?\s+\d+\s+[^\]\s]+:\d+\]\s?")
_LINE_PREFIXES = (
    _LOGCAT_THREADTIME,
    _LOGCAT_TIME,
    _LOGCAT_BRIEF,
    _LOGCAT_TAG,
    _LOGCAT_THREAD,
    _LOGCAT_PROCESS,
    _LOGCAT_ELIDED,
    _GLOG,
)
_TFLITE_LEVEL = re.compile(r"^(?P<word>INFO|WARNING|WARN|ERROR|VERBOSE|DEBUG|FATAL):\s?")
_LEVEL_OF_WORD = {
    "INFO": "I",
    "WARNING": "W",
    "WARN": "W",
    "ERROR": "E",
    "VERBOSE": "V",
    "DEBUG": "D",
    "FATAL": "F",
}
_SOURCE_TAG = re.compile(r"^\[[^\]\s]+:\d+\]\s?")

# --- run structure -------------------------------------------------------------

_STARTING = re.compile(r"^STARTING!$")
_RUN_SETUP = re.compile(
    r"^(?:Log parameter values verbosely|Min num runs|Num runs:|Graph: \[|Loaded model |"
    r"Initialized TensorFlow Lite runtime|Initialized session in )"
)
_RUNNING = re.compile(r"^Running benchmark for (?:at least )?\d+ iterations")
_STATS = re.compile(r"^(?:count|curr)=")
_FAILED = re.compile(r"^Benchmarking failed")
_STATS_TOKEN = re.compile(r"(\w+)=([^\s(,]+)")
_TIMINGS = re.compile(r"^(?:Average )?[Ii]nference timings in us:(?P<rest>.*)$")
_TIMINGS_PAIR = re.compile(rf"(?P<label>[A-Za-z][A-Za-z ()]*?)\s*:\s*(?P<value>{_NUM})")
_TIMINGS_LEADING_AVG = re.compile(rf"^\s*(?P<value>{_NUM})\s*,")

# --- LiteRT results block (values in ms / MB) ---------------------------------

_BLOCK_HEADER = re.compile(r"^=+\s*BENCHMARK RESULTS\s*=+$")
_BLOCK_INIT = re.compile(rf"^Model initialization:\s*(?P<value>{_NUM})\s*ms")
_BLOCK_WARMUP_FIRST = re.compile(rf"^Warmup \(first\):\s*(?P<value>{_NUM})\s*ms")
_BLOCK_WARMUP_AVG = re.compile(rf"^Warmup \(avg\):\s*(?P<value>{_NUM})\s*ms")
_BLOCK_INFERENCE = re.compile(
    rf"^Inference \((?P<what>avg|min|max|std)\):\s*(?P<value>{_NUM})(?:\s*ms)?"
    r"(?:\s*\((?P<runs>\d+) runs\))?"
)
_BLOCK_INIT_FOOTPRINT = re.compile(rf"^Init footprint:\s*(?P<value>{_NUM})\s*MB")
_BLOCK_OVERALL_FOOTPRINT = re.compile(rf"^Overall footprint:\s*(?P<value>{_NUM})\s*MB")
_BLOCK_PEAK = re.compile(rf"^Peak memory:\s*(?P<value>{_NUM})\s*MB")
_BLOCK_PEAK_UNAVAILABLE = re.compile(r"^Peak memory usage not available")

# --- memory, model, flags, delegates -------------------------------------------

_MEMORY = re.compile(
    r"^(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\):"
    rf"\s*init=(?P<init>{_NUM})\s+overall=(?P<overall>{_NUM})"
)
_PEAK = re.compile(
    rf"^Overall peak memory footprint \(MB\) via periodic monitoring:\s*(?P<value>{_NUM})"
)
_MODEL_SIZE = re.compile(rf"^The input model file size \(MB\):\s*(?P<value>{_NUM})")
_NUM_THREADS = re.compile(r"^Num threads\s*:\s*\[(?P<value>-?\d+)\]")
_GRAPH = re.compile(r"^Graph\s*:\s*\[(?P<value>.*)\]$")
_REPLACING = re.compile(
    r"^Replacing (?P<done>\d+)(?: out of (?P<total>\d+))? node\(s\) with delegate "
    r"\((?P<name>.+?)\) node, yielding (?P<partitions>\d+) partitions?"
)

# --- op-profiling tables -------------------------------------------------------

_SECTION_INIT = re.compile(r"^Profiling Info for Benchmark Initialization:")
_SECTION_RUN = re.compile(r"^Operator-wise Profiling Info for Regular Benchmark Runs:")
_TABLE_BANNER = re.compile(r"^={3,}\s*(?P<title>[^=]+?)\s*={3,}$")
_TABLE_HEADER = re.compile(r"\[node type\]", re.IGNORECASE)
_TABLE_COLUMN = re.compile(r"\[([^\]]+)\]")
_NODES_OBSERVED = re.compile(r"^\d+ nodes observed")
_CELL_NUMBER = rf"(?:{_NUM})%?"
_CELL_NUMBER_RE = re.compile(_CELL_NUMBER)
_COLUMN_KEYS = {
    "nodetype": "node_type",
    "start": "start_ms",
    "first": "first_ms",
    "avgms": "avg_ms",
    "%": "percent",
    "avg%": "percent",
    "cdf%": "cdf_percent",
    "memkb": "mem_kb",
    "timescalled": "times_called",
    "count": "count",
    "name": "name",
}
_TEXT_COLUMNS = {"node_type", "name"}
_INT_COLUMNS = {"times_called", "count"}
OP_ROW_KEYS = (
    "section",
    "table",
    "node_type",
    "start_ms",
    "first_ms",
    "avg_ms",
    "percent",
    "cdf_percent",
    "mem_kb",
    "times_called",
    "count",
    "name",
)

# --- errors --------------------------------------------------------------------

_ERROR_LEVELS = {"E", "F"}
_UNPREFIXED_ERROR = re.compile(
    r"^(?:Failed to |Benchmarking failed|Could not |Couldn't |Unable to |Error\b)"
)

# --- result keys ---------------------------------------------------------------

_STATS_KEYS = {
    "count": "count",
    "first": "first_us",
    "curr": "curr_us",
    "min": "min_us",
    "max": "max_us",
    "avg": "avg_us",
    "std": "std_us",
    "p5": "p5_us",
    "median": "median_us",
    "p95": "p95_us",
}
STATS_KEYS = tuple(_STATS_KEYS.values())
SUMMARY_KEYS = ("init_us", "first_inference_us", "warmup_avg_us", "inference_avg_us")
MEMORY_KEYS = ("memory_init_mb", "memory_overall_mb", "peak_memory_mb")
RESULT_KEYS = (
    *STATS_KEYS,
    *SUMMARY_KEYS,
    *MEMORY_KEYS,
    "delegates",
    "ops",
    "errors",
    "warmup",
    "model_size_mb",
    "num_threads",
    "graph",
    "runs_in_output",
)
_SUMMARY_LABELS = {
    "init": "init_us",
    "first inference": "first_inference_us",
    "warmup (avg)": "warmup_avg_us",
    "warmup": "warmup_avg_us",
    "inference (avg)": "inference_avg_us",
    "inference": "inference_avg_us",
    "no stats": "inference_avg_us",
}


# =============================================================================
# helpers
# =============================================================================


def _to_float(text: str) -> float | None:
    """A printed number as float; nan, inf and garbage become None."""
    try:
        value = float(text)
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return value


def _to_int(text: str) -> int | None:
    """A printed integer; anything else becomes None."""
    value = _to_float(text)
    if value is None or value != int(value):
        return None
    return int(value)


def _ms_to_us(text: str) -> float | None:
    """A printed millisecond value as microseconds, without binary rounding noise."""
    if _to_float(text) is None:
        return None
    try:
        return float(Decimal(text) * 1000)
    except InvalidOperation:
        return None


@dataclass(frozen=True)
class _Line:
    level: str | None  # one-letter level (I, W, E, ...) if a prefix gave one
    msg: str  # the message with every known prefix removed, stripped
    worded: bool = False  # the level came from TFLite's own "INFO:"/"ERROR:"/… word

    def is_error(self) -> bool:
        """Error/fatal level, or an error-looking text not explicitly labelled
        warning (any prefix) or info/verbose/debug (TFLite's own word)."""
        if not self.msg:
            return False
        if self.level in _ERROR_LEVELS:
            return True
        if self.level == "W" or self.worded:
            return False
        return bool(_UNPREFIXED_ERROR.match(self.msg))


def _split_line(raw: str) -> _Line:
    """Remove logcat/glog, TFLite level and LiteRT source prefixes from one line."""
    text = raw.rstrip()
    level = None
    for pattern in _LINE_PREFIXES:
        match = pattern.match(text)
        if match:
            level = match.groupdict().get("level")
            text = text[match.end():]
            if pattern is _LOGCAT_PROCESS:
                text = _LOGCAT_PROCESS_TAG_SUFFIX.sub("", text)
            break
    text = text.strip()
    worded = False
    match = _TFLITE_LEVEL.match(text)
    if match:
        level = _LEVEL_OF_WORD[match.group("word")]
        worded = True
        text = text[match.end():]
    text = _SOURCE_TAG.sub("", text, count=1)
    return _Line(level, text.strip(), worded)


def _is_summary(msg: str) -> bool:
    """Whether the line is a run's end summary (TF listener line or LiteRT block)."""
    return bool(_TIMINGS.match(msg) or _BLOCK_HEADER.match(msg) or _BLOCK_INIT.match(msg))


def _is_run_line(msg: str) -> bool:
    """Whether the line belongs to the body of a run (setup, loops, summary)."""
    return bool(
        _STARTING.match(msg)
        or _RUN_SETUP.match(msg)
        or _RUNNING.match(msg)
        or _STATS.match(msg)
        or _is_summary(msg)
    )


def _split_runs(lines: list[_Line]) -> list[list[_Line]]:
    """Cut the lines into runs (see the module docstring)."""
    runs: list[list[_Line]] = [[]]
    has_run_line = ended = False
    for line in lines:
        msg = line.msg
        new_start = _STARTING.match(msg) and has_run_line
        setup_after_end = ended and _is_run_line(msg) and not _is_summary(msg)
        if new_start or setup_after_end:
            runs.append([])
            has_run_line = ended = False
        runs[-1].append(line)
        has_run_line = has_run_line or _is_run_line(msg)
        ended = ended or _is_summary(msg) or bool(_FAILED.match(msg))
    return [run for run in runs if run]


def _parse_stats(msg: str) -> dict:
    """One ``count=… first=… …`` line as a dict with the ten statistics keys."""
    stats = dict.fromkeys(STATS_KEYS)
    for key, value in _STATS_TOKEN.findall(msg):
        name = _STATS_KEYS.get(key)
        if name == "count":
            stats[name] = _to_int(value)
        elif name is not None:
            stats[name] = _to_float(value)
    return stats


def _parse_timings(rest: str) -> dict:
    """The pairs of an ``Inference timings in us:`` line, keyed by result key."""
    values = {}
    leading = _TIMINGS_LEADING_AVG.match(rest)
    if leading:
        values["inference_avg_us"] = _to_float(leading.group("value"))
    for match in _TIMINGS_PAIR.finditer(rest):
        key = _SUMMARY_LABELS.get(match.group("label").strip().lower())
        if key is not None:
            values[key] = _to_float(match.group("value"))
    return values


@functools.lru_cache(maxsize=32)
def _row_pattern(columns: tuple[str, ...]) -> re.Pattern:
    """A regex for a space-separated table row with these (normalised) columns.

    Tables pasted from a terminal often lose their tabs; the column layout
    differs between versions, so the pattern is built (once) per header."""
    pattern = ""
    for index, key in enumerate(columns):
        last = index == len(columns) - 1
        if key in _TEXT_COLUMNS and last:
            pattern += r"(?:\s+(.*))?" if index else r"(.*)"
            continue
        cell = r"(.*?)" if key in _TEXT_COLUMNS else f"({_CELL_NUMBER})"
        pattern += (r"\s+" if index else "") + cell
    return re.compile(f"^{pattern}$")


def _column_key(column: str) -> str | None:
    """The row key of a bracketed header column (``avg ms`` -> ``avg_ms``)."""
    return _COLUMN_KEYS.get(column.replace(" ", "").lower())


def _split_cells(msg: str, keys: tuple[str, ...]) -> list[str] | None:
    """Cells of one table row: tab-separated as printed, else space-separated."""
    if "\t" in msg:
        cells = [cell.strip() for cell in msg.split("\t")]
        if len(cells) == len(keys):
            return cells
    match = _row_pattern(keys).match(msg)
    return [(cell or "").strip() for cell in match.groups()] if match else None


def _convert_cell(key: str, cell: str) -> str | float | int | None:
    """A table cell converted for its key; raises ValueError when it is not one."""
    if key in _TEXT_COLUMNS:
        return cell
    if not _CELL_NUMBER_RE.fullmatch(cell):
        raise ValueError(cell)
    number = cell.rstrip("%")
    return _to_int(number) if key in _INT_COLUMNS else _to_float(number)


def _parse_row(
    msg: str, columns: tuple[str, ...], section: str | None, table: str
) -> dict | None:
    """One op-profiling row as a dict with ``OP_ROW_KEYS``; None if it is not a row."""
    keys = tuple(_column_key(column) or f"?{column}" for column in columns)
    cells = _split_cells(msg, keys)
    if cells is None:
        return None
    row = dict.fromkeys(OP_ROW_KEYS)
    row.update(section=section, table=table)
    try:
        for key, cell in zip(keys, cells):
            if key in OP_ROW_KEYS:
                row[key] = _convert_cell(key, cell)
    except ValueError:
        return None
    return row


def _slug(title: str) -> str:
    """``Top by Computation Time`` -> ``top_by_computation_time``."""
    return re.sub(r"\W+", "_", title.strip().lower()).strip("_")


# =============================================================================
# one run
# =============================================================================


@dataclass
class _Table:
    section: str | None
    name: str
    columns: tuple[str, ...] | None = None


class _RunParser:
    """Accumulates what one run printed; ``result()`` turns it into the result dict."""

    def __init__(self) -> None:
        self.values: dict = {}
        self.stats: list[tuple[int, dict]] = []  # (Running-line ordinal, stats)
        self.running = 0
        self.summarised = False
        self.block: dict = {}
        self.delegates: list[dict] = []
        self.errors: list[str] = []
        self.ops: list[dict] | None = None
        self.section: str | None = None
        self.table: _Table | None = None
        self.in_profile = False
        self.recognised = False  # whether any line of this run meant something
        self.dispatch = (
            (_STATS, self._on_stats),
            (_RUNNING, self._on_running),
            (_TIMINGS, self._on_timings),
            (_BLOCK_HEADER, self._on_block_header),
            (_BLOCK_INIT, self._on_value("init_us", _ms_to_us)),
            (_BLOCK_WARMUP_FIRST, self._on_value("first_inference_us", _ms_to_us)),
            (_BLOCK_WARMUP_AVG, self._on_value("warmup_avg_us", _ms_to_us)),
            (_BLOCK_INFERENCE, self._on_block_inference),
            (_BLOCK_INIT_FOOTPRINT, self._on_value("memory_init_mb", _to_float)),
            (_BLOCK_OVERALL_FOOTPRINT, self._on_value("memory_overall_mb", _to_float)),
            (_BLOCK_PEAK, self._on_value("peak_memory_mb", _to_float)),
            (_BLOCK_PEAK_UNAVAILABLE, self._on_peak_unavailable),
            (_MEMORY, self._on_memory),
            (_PEAK, self._on_value("peak_memory_mb", _to_float)),
            (_MODEL_SIZE, self._on_value("model_size_mb", _to_float)),
            (_NUM_THREADS, self._on_value("num_threads", int)),
            (_GRAPH, self._on_value("graph", str)),
            (_REPLACING, self._on_replacing),
            (_SECTION_INIT, self._on_section("init")),
            (_SECTION_RUN, self._on_section("run")),
            (_NODES_OBSERVED, self._on_nodes_observed),
        )

    # -- feeding ---------------------------------------------------------------

    def feed(self, line: _Line) -> None:
        """Take one prefix-free line."""
        self._collect_error(line)
        if self._feed_table(line.msg):
            self.recognised = True
            return
        for pattern, handler in self.dispatch:
            match = pattern.match(line.msg)
            if match:
                handler(match)
                self.recognised = True
                return

    def _collect_error(self, line: _Line) -> None:
        if line.is_error():
            self.recognised = True
            if line.msg not in self.errors:
                self.errors.append(line.msg)

    def _feed_table(self, msg: str) -> bool:
        """Handle op-profiling banners, headers and rows; True if the line was one."""
        banner = _TABLE_BANNER.match(msg)
        if banner and not _BLOCK_HEADER.match(msg):
            self.table = _Table(self.section, _slug(banner.group("title")))
            self.in_profile = True
            return True
        if self.table is None:
            return False
        if self.table.columns is None:
            if _TABLE_HEADER.search(msg):
                self.table.columns = tuple(_TABLE_COLUMN.findall(msg))
                if self.ops is None:
                    self.ops = []
                return True
            self.table = None
            return False
        row = _parse_row(msg, self.table.columns, self.table.section, self.table.name)
        if row is None:
            self.table = None
            return False
        self.ops.append(row)
        return True

    # -- handlers --------------------------------------------------------------

    def _on_value(self, key, convert):
        def handler(match):
            self.values[key] = convert(match.group("value"))

        return handler

    def _on_section(self, name):
        def handler(match):
            self.section = name

        return handler

    def _on_stats(self, match) -> None:
        if not self.in_profile:
            self.stats.append((self.running, _parse_stats(match.string)))

    def _on_running(self, match) -> None:
        self.running += 1

    def _on_timings(self, match) -> None:
        self.summarised = True
        self.values.update(_parse_timings(match.group("rest")))

    def _on_block_header(self, match) -> None:
        self.summarised = True

    def _on_block_inference(self, match) -> None:
        what = match.group("what")
        value = _ms_to_us(match.group("value"))
        if what == "avg":
            self.values["inference_avg_us"] = value
            if match.group("runs") is not None:
                self.block["count"] = int(match.group("runs"))
        self.block[f"{what}_us"] = value

    def _on_peak_unavailable(self, match) -> None:
        self.values["peak_memory_mb"] = None

    def _on_memory(self, match) -> None:
        self.values["memory_init_mb"] = _to_float(match.group("init"))
        self.values["memory_overall_mb"] = _to_float(match.group("overall"))

    def _on_replacing(self, match) -> None:
        total = match.group("total")
        self.delegates.append(
            {
                "name": match.group("name"),
                "nodes_delegated": int(match.group("done")),
                "nodes_total": int(total) if total is not None else None,
                "partitions": int(match.group("partitions")),
            }
        )

    def _on_nodes_observed(self, match) -> None:
        self.in_profile = False

    # -- result ----------------------------------------------------------------

    def timed_and_warmup(self) -> tuple[dict | None, dict | None]:
        """The timed-run and warm-up statistics lines (see the module docstring)."""
        if not self.stats:
            return None, None
        if self.running == 0:
            warmup = self.stats[-2][1] if len(self.stats) > 1 else None
            return self.stats[-1][1], warmup
        if self.running == 1:
            after = [stats for ordinal, stats in self.stats if ordinal == 1]
            before = [stats for ordinal, stats in self.stats if ordinal == 0]
            if self.summarised:
                return (after or [None])[-1], (before or [None])[-1]
            return None, (after or [None])[-1]
        timed = [stats for ordinal, stats in self.stats if ordinal >= 2]
        warmup = [stats for ordinal, stats in self.stats if ordinal == 1]
        return (timed or [None])[-1], (warmup or [None])[-1]

    def complete(self) -> bool:
        """Whether the run got as far as a timed statistics line or an end summary."""
        return self.summarised or self.timed_and_warmup()[0] is not None

    def result(self) -> dict:
        """The result dict for this run (all ``RESULT_KEYS``)."""
        result = dict.fromkeys(RESULT_KEYS)
        timed, warmup = self.timed_and_warmup()
        if timed is not None:
            result.update(timed)
        else:
            result.update(self.block)
        result.update(self.values)
        result.update(
            warmup=warmup,
            delegates=self.delegates,
            errors=self.errors,
            ops=self.ops,
        )
        return result


# =============================================================================
# public entry point
# =============================================================================


def parse(text: str) -> dict:
    """Parse the captured console output of one ``benchmark_model`` invocation.

    Returns a dict with every key of ``RESULT_KEYS`` (see the module docstring
    for their meaning). Keys the output does not support are None;
    ``delegates`` and ``errors`` are lists, empty when the output has none.
    Several runs in one text are reduced to the last complete one.
    """
    lines = [_split_line(raw) for raw in text.splitlines()]
    runs = []
    for run_lines in _split_runs(lines):
        parser = _RunParser()
        for line in run_lines:
            parser.feed(line)
        if parser.recognised:
            runs.append(parser)
    complete = [parser for parser in runs if parser.complete()]
    chosen = (complete or runs or [_RunParser()])[-1]
    result = chosen.result()
    result["runs_in_output"] = len(runs)
    return result
