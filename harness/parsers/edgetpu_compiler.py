"""Coral's `edgetpu_compiler`, its console output or its `*_edgetpu.log`, into one JSON object.

Formats handled (each seen in published output; tests/fixtures/edgetpu_compiler/ names sources):

- the console of versions 2.x–16: "Edge TPU Compiler version X", "Model compiled successfully in
  N ms." ("Models …" when several models are co-compiled), then per model "Input model:", "Input
  size:", "Output model:", "Output size:", "On-chip memory used for caching model parameters:",
  "On-chip memory remaining …", "Off-chip memory used for streaming uncached model parameters:",
  "Number of Edge TPU subgraphs:", "Total number of operations:", "Operation log:"; when some
  operations stay on the CPU, "Model successfully compiled but not all operations …" and "Number of
  operations that will run on Edge TPU: N" / "… on CPU: N"; with `-s` the operator table (operator,
  count, status; one operator may have a row per status); v16 adds "Started a compilation timeout
  timer of N seconds." and "Compilation succeeded!", and with `-d` repeats "Try to compile segment
  with N ops" … until one attempt compiles;
- the log file (v1.0 to v16, and the v2.0 console): "Input: X", "Output: Y" and the operator table;
- failures: "Invalid model: X" then the reason ("Model not quantized"), "Internal compiler error.
  Aborting!", "ERROR: …" lines, "Compilation failed…", a timeout, the wrapper script's
  "Segmentation fault (core dumped)", libc++'s "terminating with uncaught exception …".

Sizes (`7.37MiB`, `128.00KiB`, `0.00B`) become bytes. A value the text does not have is None.

Pasted text: a line may carry prefixes, removed before matching: markdown quotes (`> `) and
emphasis (`**…**`, `_…_`), timestamps, glog headers, `[tag]` and `INFO:`/`WARNING:` logger
prefixes. Behind any other prefix, the report's lines (version, paths, sizes, counts, times) are
still found, and table rows behind one as wide as the table header's. An exporter's own lines
(YOLOv5's `Edge TPU: starting export …`, `… export failure …`) are not the compiler's and are
ignored. A table row wrapped onto the next line (word- or hard-wrapped) is joined back when that
line starts in lower case and the row's status is not a complete known one (a field line wrapped
within its value is not). The markdown-table form of the operator table (`| CONV_2D | 62 | Mapped
to Edge TPU |`) is read too. Unrecognised lines (prompts, prose, a `# source:` line, banners) are
ignored; the parser never raises, and a cut-off text gives what could be read.

Which output is read when the text holds several:

- Invocations: each "Edge TPU Compiler version" line starts one (the text before the first is one
  too). The FIRST invocation that got to an outcome (success, failure, a model report or a table)
  is read; if none did, the first that printed anything. Several commands pasted together are
  the user's own retries or variants; the first is kept, as this parser always did (the harness
  itself runs one command per text).
- Attempts within one invocation: `-d` compiles again after a failure ("Try to compile segment with
  N ops"), `-n` compiles each segment in turn; each attempt starts at those lines or at a new
  "Started a compilation timeout timer". The LAST attempt that got to an outcome is read (the
  last one at all if none did): it is how the command ended (earlier `-d` failures are steps of
  the search, not its result; a failing later segment fails the command).
- Models within one attempt (co-compiled models, or pastes without version lines): the values
  come from the first model's report; a value printed again, or a second table, marks the next
  report, whose values are ignored (its "Compilation succeeded!"/failure lines still count).
- A log file next to the console (its Input/Output naming the same model) lends its operator table
  when the console has none.

Counts: the per-target counts are summed from the table when the compiler did not print them,
but only from a table known to be whole (a log file's, or one that adds up to the printed total);
with neither the per-target lines nor a table, v14+ printed them only when something stays on the
CPU, so a total with subgraphs means everything is mapped. The total is the sum of the two.
"""

from __future__ import annotations

import re
from typing import Any

RESULT_KEYS = ("compiler_version", "success", "input_model", "output_model", "input_size_bytes",
               "output_size_bytes", "on_chip_memory_bytes", "on_chip_memory_remaining_bytes",
               "off_chip_memory_bytes", "subgraphs", "total_ops", "ops_on_edgetpu", "ops_on_cpu", "operators",
               "error", "log_file", "compile_ms", "timeout_s")
OPERATOR_KEYS = ("operator", "count", "status")
MAPPED = "Mapped to Edge TPU"
KNOWN_STATUSES = frozenset((
    MAPPED, "Operation is otherwise supported, but not mapped due to some unspecified limitation",
    "Operation is working on an unsupported data type", "More than one subgraph is not supported",
    "Operation not supported", "Tensor has unsupported rank (up to 3 innermost dimensions mapped)",
    "For example, a fully-connected or softmax layer with 2D output"))

UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3}
SIZE = r"([0-9]+(?:\.[0-9]+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)"
VERSION = re.compile(r"Edge TPU Compiler version (\d+(?:\.\d+)+)")

# prefixes a pasted or logged line may carry, removed one after another until none is left
PREFIXES = (
    re.compile(r"^(?:>\s?)+"),  # markdown quote
    re.compile(r"^\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|\s?[+-]\d\d:?\d\d)?\]?\s*(?:[|-]\s+)?"),
    re.compile(r"^\[?\d\d:\d\d:\d\d(?:[.,]\d+)?\]?(?:\s+|$)"),  # a clock time
    re.compile(r"^[IWEF]\d{4}\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+[^\s\]]+:\d+\]\s?"),  # glog
    re.compile(r"^\[[^\]]{1,40}\]:?\s*"),  # [edgetpu], [INFO]
    re.compile(r"^(?:INFO|DEBUG|WARNING|WARN|NOTICE)(?::[\w.]+)?\s*:\s*"),  # logger levels (not ERROR)
    re.compile(r"^(?:\*\*|__|\*|_)(?=\S)"),  # markdown emphasis, opening
)
EMPHASIS_END = re.compile(r"(?<=\S)(?:\*\*|__|\*|_)$")

FIELDS = (  # (pattern, key, kind); "log": the log file's header, a text value
    (re.compile(r"^Input:\s*(\S.*)$"), "input_model", "log"),
    (re.compile(r"^Output:\s*(\S.*)$"), "output_model", "log"),
    (re.compile(r"\bInput model:\s*(\S.*)$"), "input_model", "text"),
    (re.compile(r"\bOutput model:\s*(\S.*)$"), "output_model", "text"),
    (re.compile(rf"\bInput size:\s*{SIZE}$"), "input_size_bytes", "size"),
    (re.compile(rf"\bOutput size:\s*{SIZE}$"), "output_size_bytes", "size"),
    (re.compile(rf"\bOn-chip memory used for caching model parameters:\s*{SIZE}$"), "on_chip_memory_bytes", "size"),
    (re.compile(rf"\bOn-chip memory remaining for caching model parameters:\s*{SIZE}$"),
     "on_chip_memory_remaining_bytes", "size"),
    (re.compile(rf"\bOff-chip memory used for streaming uncached model parameters:\s*{SIZE}$"),
     "off_chip_memory_bytes", "size"),
    (re.compile(r"\bNumber of Edge TPU subgraphs:\s*(\d+)$"), "subgraphs", "int"),
    (re.compile(r"\bTotal number of operations:\s*(\d+)$"), "total_ops", "int"),
    (re.compile(r"\bNumber of operations that will run on Edge TPU:\s*(\d+)$"), "ops_on_edgetpu", "int"),
    (re.compile(r"\bNumber of operations that will run on CPU:\s*(\d+)$"), "ops_on_cpu", "int"),
    (re.compile(r"\bOperation log:\s*(\S.*)$"), "log_file", "text"),
    (re.compile(r"\bModels? compiled successfully in (\d+) ms\.?$"), "compile_ms", "int"),
    (re.compile(r"\bStarted a compilation timeout timer of (\d+) seconds\.?$"), "timeout_s", "int"),
)
ATTEMPT = re.compile(r"^(?:Searching for valid delegate|Try to compile segment with|"
                     r"Started a compilation timeout timer)")
TABLE_HEAD = re.compile(r"Operator\s+Count\s+Status$")
MD_HEAD = re.compile(r"^\|?\s*Operator\s*\|\s*Count\s*\|\s*Status\s*\|?$")
MD_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?$")
ROW = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+([A-Z].*)$")
MD_ROW = re.compile(r"^\|?\s*([A-Z][A-Z0-9_]*)\s*\|\s*(\d+)\s*\|\s*([A-Z][^|]*?)\s*\|?$")
CONTINUATION = re.compile(r"^[a-z][\w ,.()/-]*$")
SUCCESS = re.compile(r"^(?:Models? compiled successfully|Compilation succeeded|Model successfully compiled)")
FAILURE = re.compile(r"^(?:Invalid model:|Model not quantized|Model could not be parsed|Internal compiler error|"
                     r"ERROR:|Error:|Compilation failed|Compilation timeout)|[Cc]ompilation timed out|"
                     r"terminated.*timeout|Segmentation fault|terminating with uncaught exception|\(core dumped\)")


def size_bytes(number: str, unit: str) -> int:
    return round(float(number) * UNITS[unit])


def clean(raw: str) -> str:
    """One line without its pasting/logging prefixes, trailing markdown emphasis and whitespace."""
    line = raw.strip()
    changed = True
    while changed and line:
        changed = False
        for pattern in PREFIXES:
            match = pattern.match(line)
            if match and match.end():
                line, changed = line[match.end():].strip(), True
    return EMPHASIS_END.sub("", line).strip()


class _Report:
    """What one compilation attempt printed (see the module docstring)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.succeeded = self.timer = self.is_log = self.frozen = False
        self.table_seen = self.in_table = self.rows_from_log = False
        self.indent = 0

    def started(self) -> bool:
        return self.timer or self.succeeded or bool(self.errors)

    def complete(self) -> bool:
        return (self.succeeded or bool(self.errors) or bool(self.rows)
                or "output_model" in self.values or "total_ops" in self.values)

    def anything(self) -> bool:
        return self.complete() or bool(self.values)

    def feed(self, line: str) -> None:
        if self._table(line):
            return
        if SUCCESS.match(line):
            self.succeeded = True
        if line.startswith("Started a compilation timeout timer"):
            self.timer = True
        if not self._field(line) and FAILURE.search(line):
            self.errors.append(line)

    def _field(self, line: str) -> bool:
        for pattern, key, kind in FIELDS:
            match = pattern.search(line)
            if not match:
                continue
            if key in self.values or self.frozen:  # printed again: the next model's report
                self.frozen = True
                return True
            groups = match.groups()
            self.values[key] = (size_bytes(*groups) if kind == "size" else int(groups[0]) if kind == "int"
                                else groups[0].strip())
            self.is_log = self.is_log or kind == "log"
            return True
        return False

    def _table(self, line: str) -> bool:
        if TABLE_HEAD.search(line) or MD_HEAD.match(line):
            self.frozen = self.frozen or self.table_seen  # a second table: the next report's
            self.table_seen, self.in_table = True, not self.frozen
            self.indent = max(line.find("Operator"), 0)
            return True
        if not self.in_table:
            return False
        if MD_RULE.match(line):
            return True
        row = ROW.match(line) or MD_ROW.match(line) or (ROW.match(line[self.indent:]) if self.indent else None)
        if row:
            self.rows.append({"operator": row.group(1), "count": int(row.group(2)),
                              "status": EMPHASIS_END.sub("", row.group(3)).strip()})
            return True
        if CONTINUATION.match(line) and self.rows and self.rows[-1]["status"] not in KNOWN_STATUSES:
            status = self.rows[-1]["status"]  # wrapped onto this line: between words, or within one
            within = status + line
            self.rows[-1]["status"] = within if any(s.startswith(within) for s in KNOWN_STATUSES) else (
                f"{status} {line}")
            return True
        self.in_table = False
        return False

    def result(self, version: str | None) -> dict[str, Any]:
        result: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
        result.update(self.values)
        result["compiler_version"] = version
        result["operators"] = [dict(row) for row in self.rows]
        self._counts(result)
        if self.errors:
            result["success"] = False
            result["error"] = " | ".join(dict.fromkeys(self.errors))
        elif self.succeeded or (result["output_model"] and result["operators"]):
            result["success"] = True
        return result

    def _counts(self, result: dict[str, Any]) -> None:
        rows, total = result["operators"], result["total_ops"]
        on_tpu = sum(r["count"] for r in rows if r["status"] == MAPPED)
        on_cpu = sum(r["count"] for r in rows if r["status"] != MAPPED)
        whole = self.is_log or self.rows_from_log or (total is not None and on_tpu + on_cpu == total)
        if rows and whole:
            if result["ops_on_edgetpu"] is None:
                result["ops_on_edgetpu"] = on_tpu
            if result["ops_on_cpu"] is None:
                result["ops_on_cpu"] = on_cpu
        elif (total is not None and result["ops_on_edgetpu"] is None and result["ops_on_cpu"] is None
              and result["subgraphs"] and not on_cpu):
            result["ops_on_edgetpu"], result["ops_on_cpu"] = total, 0
        if total is None and result["ops_on_edgetpu"] is not None and result["ops_on_cpu"] is not None:
            result["total_ops"] = result["ops_on_edgetpu"] + result["ops_on_cpu"]


def parse(text: str) -> dict[str, Any]:
    """The compiler's output as a dict of `RESULT_KEYS` (see the module docstring)."""
    invocations: list[tuple[str | None, list[_Report]]] = []
    version: str | None = None
    reports = [_Report()]
    for raw in text.splitlines():
        line = clean(raw)
        if not line:
            continue
        found = VERSION.search(line)
        if found:
            invocations.append((version, reports))
            version, reports = found.group(1), [_Report()]
            continue
        if ATTEMPT.match(line) and reports[-1].started():
            reports.append(_Report())
        reports[-1].feed(line)
    invocations.append((version, reports))
    picked = [(version, _last_outcome(reports)) for version, reports in invocations]
    chosen = (next((p for p in picked if p[1].complete()), None)
              or next((p for p in picked if p[0] or p[1].anything()), None) or (None, _Report()))
    _borrow_log_table(chosen[1], [report for _, reports in invocations for report in reports])
    return chosen[1].result(chosen[0])


def _last_outcome(reports: list[_Report]) -> _Report:
    return next((r for r in reversed(reports) if r.complete()), None) or next(
        (r for r in reversed(reports) if r.anything()), reports[0])


def _borrow_log_table(report: _Report, others: list[_Report]) -> None:
    """The operator table of a log file of the same model, when the console printed none."""
    if report.rows or report.is_log:
        return
    names = {str(report.values[key]).rsplit("/", 1)[-1] for key in ("input_model", "output_model")
             if key in report.values}
    for other in others:
        if other is not report and other.is_log and other.rows and names & {
                str(other.values[key]).rsplit("/", 1)[-1] for key in ("input_model", "output_model")
                if key in other.values}:
            report.rows, report.rows_from_log = [dict(row) for row in other.rows], True
            return
