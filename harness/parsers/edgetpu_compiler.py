"""Coral's `edgetpu_compiler`, its console output or its `*_edgetpu.log`, into one JSON object.

Formats handled (each seen in published output; tests/fixtures/edgetpu_compiler/ names sources):

- the console of versions 14–16: "Edge TPU Compiler version X", "Model compiled successfully in
  N ms.", then "Input model:", "Input size:", "Output model:", "Output size:", "On-chip memory used
  for caching model parameters:", "On-chip memory remaining …", "Off-chip memory used for
  streaming uncached model parameters:", "Number of Edge TPU subgraphs:", "Total number of
  operations:", "Operation log:"; when some operations stay on the CPU, "Number of operations that
  will run on Edge TPU: N" / "… on CPU: N"; with `-s` the operator table (operator, count,
  status; one operator may have a row per status); v16 adds "Started a compilation timeout timer
  of N seconds." and "Compilation succeeded!";
- the log file (and the 2019 v2.0 console): "Input: X", "Output: Y" and the operator table;
- failures: "Invalid model: X" then the reason ("Model not quantized"), "Internal compiler error.
  Aborting!", "ERROR: …" lines, "Compilation failed…".

Sizes (`7.37MiB`, `128.00KiB`, `0.00B`) become bytes. A value the text does not have is None.
When the per-target operation counts are absent but the table is there, they are summed from it.
Unrecognised lines (prompts, a `# source:` line, banners) are ignored.
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

UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3}
SIZE = r"([0-9]+(?:\.[0-9]+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)"
VERSION = re.compile(r"Edge TPU Compiler version (\S+)")
FIELDS = {  # line pattern -> (key, kind)
    re.compile(r"^Input model:\s*(\S.*)$"): ("input_model", "text"),
    re.compile(r"^Input:\s*(\S.*)$"): ("input_model", "text"),
    re.compile(r"^Output model:\s*(\S.*)$"): ("output_model", "text"),
    re.compile(r"^Output:\s*(\S.*)$"): ("output_model", "text"),
    re.compile(rf"^Input size:\s*{SIZE}$"): ("input_size_bytes", "size"),
    re.compile(rf"^Output size:\s*{SIZE}$"): ("output_size_bytes", "size"),
    re.compile(rf"^On-chip memory used for caching model parameters:\s*{SIZE}$"): ("on_chip_memory_bytes", "size"),
    re.compile(rf"^On-chip memory remaining for caching model parameters:\s*{SIZE}$"):
        ("on_chip_memory_remaining_bytes", "size"),
    re.compile(rf"^Off-chip memory used for streaming uncached model parameters:\s*{SIZE}$"):
        ("off_chip_memory_bytes", "size"),
    re.compile(r"^Number of Edge TPU subgraphs:\s*(\d+)$"): ("subgraphs", "int"),
    re.compile(r"^Total number of operations:\s*(\d+)$"): ("total_ops", "int"),
    re.compile(r"^Number of operations that will run on Edge TPU:\s*(\d+)$"): ("ops_on_edgetpu", "int"),
    re.compile(r"^Number of operations that will run on CPU:\s*(\d+)$"): ("ops_on_cpu", "int"),
    re.compile(r"^Operation log:\s*(\S.*)$"): ("log_file", "text"),
    re.compile(r"^Models? compiled successfully in (\d+) ms\.?$"): ("compile_ms", "int"),
    re.compile(r"^Started a compilation timeout timer of (\d+) seconds\.?$"): ("timeout_s", "int"),
}
TABLE_HEAD = re.compile(r"^Operator\s+Count\s+Status$")
TABLE_ROW = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*)$")
SUCCESS = re.compile(r"^(Models? compiled successfully|Compilation succeeded)")
FAILURE = re.compile(r"^(Invalid model:.*|Model not quantized.*|Internal compiler error.*|ERROR:.*|Error:.*|"
                     r"Compilation failed.*|.*[Cc]ompilation timed out.*|.*terminated.*timeout.*)$")


def size_bytes(number: str, unit: str) -> int:
    return round(float(number) * UNITS[unit])


def parse(text: str) -> dict[str, Any]:
    result: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    result["operators"] = []
    errors: list[str] = []
    succeeded = in_table = False
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        version = VERSION.search(line)
        if version:
            if result["compiler_version"] is not None:  # a second model's output: keep the first
                break
            result["compiler_version"] = version.group(1)
            continue
        if TABLE_HEAD.match(line):
            in_table = True
            continue
        if in_table:
            row = TABLE_ROW.match(line)
            if row:
                result["operators"].append({"operator": row.group(1), "count": int(row.group(2)),
                                            "status": row.group(3).strip()})
                continue
            in_table = False
        if SUCCESS.match(line):
            succeeded = True
        if _field(line, result):
            continue
        if FAILURE.match(line):
            errors.append(line)
    _derive_counts(result)
    if errors:
        result["success"] = False
        result["error"] = " | ".join(dict.fromkeys(errors))
    elif succeeded or (result["output_model"] and result["operators"]):
        result["success"] = True
    return result


def _field(line: str, result: dict[str, Any]) -> bool:
    for pattern, (key, kind) in FIELDS.items():
        match = pattern.match(line)
        if match:
            if result[key] is None:
                value = match.groups()
                result[key] = (size_bytes(*value) if kind == "size" else int(value[0]) if kind == "int"
                               else value[0].strip())
            return True
    return False


def _derive_counts(result: dict[str, Any]) -> None:
    """Per-target counts from the table when the compiler did not print them (all mapped, or the
    log format); the total from those when it is absent."""
    rows = result["operators"]
    if rows:
        on_tpu = sum(r["count"] for r in rows if r["status"] == MAPPED)
        on_cpu = sum(r["count"] for r in rows if r["status"] != MAPPED)
        if result["ops_on_edgetpu"] is None:
            result["ops_on_edgetpu"] = on_tpu
        if result["ops_on_cpu"] is None:
            result["ops_on_cpu"] = on_cpu
    elif result["total_ops"] is not None and result["ops_on_edgetpu"] is None and result["subgraphs"]:
        # no table, no per-target lines: v14+ print those lines only when something stays on the CPU
        result["ops_on_edgetpu"], result["ops_on_cpu"] = result["total_ops"], 0
    if result["total_ops"] is None and result["ops_on_edgetpu"] is not None and result["ops_on_cpu"] is not None:
        result["total_ops"] = result["ops_on_edgetpu"] + result["ops_on_cpu"]
