#!/usr/bin/env python3
"""A stand-in for Coral's `edgetpu_compiler` 16.0.384591198 (x86-64 Linux), for tests on a machine
without it: `python edgetpu_compiler.py [options] model...`, or `install_compiler(bin_dir, env)`.

What is as the real tool, and where it was seen (#N is github.com/google-coral/edgetpu/issues/N;
"fixture 01" is tests/fixtures/edgetpu_compiler/01-…, from jveitchmichaelis/edgetpu-yolo export.md):

- the command line of coral.ai/docs/edgetpu/compiler (Table 1): -a, -d, -k N, -i NAMES, -m N, -n N,
  -o DIR, -s, -t N, -v, -h and their long forms; clustered short flags (`-sa`, `-sd`, #728) and
  `--num_segments=2` (#411); defaults: 180 s timer (every v16 capture), search step 1 (#608),
  runtime 14 (#439);
- the console, line for line: fixture 01 (-sa, CPU ops), #557 (no -s, all mapped; -n), #671 (-s,
  all mapped; -d), #530 (no -s, CPU ops); "Models compiled successfully" for co-compiled models
  (HanChangHun/EdgeTPU-Compiler-Log-Parser, README and parser); "Compilation succeeded! " and
  "Compilation failed! " with their trailing space (#557, #714, #829); sizes `%.2f` in B, KiB or
  MiB at 1024 steps (fixture 01; #211: 74.00KiB; #609: 0.00B);
- paths: "Input model:" is the argument as given (#322); "Output model:" and "Operation log:" are
  joined to -o as given (#393: `./EdgeTPU/…`), bare names without -o (fixture 01); segment k of N is
  `X_segment_k_of_N_edgetpu.tflite` / `.log` from `X_segment_k_of_N.tflite`, each compiled on its
  own (timer, block, "Compilation succeeded! ", #557);
- the `.log` file: version, "Input:", "Output:", blank, the operator table (v16 logs in
  HanChangHun/EdgeTPU-Compiler-Log-Parser test/model/compiled/);
- the supported operations of coral.ai/docs/edgetpu/models-intro#supported-operations (also at
  developer.axis.com/computer-vision/on-device/system-on-chip/artpec-7/supported-ops/), and the
  statuses next to each constant below;
- failures: a model without any 8-bit tensor: "Invalid model: X" / "Model not quantized", before
  any timer (tensorflow/tensorflow#46806, #168; v16's order in #879); a file LiteRT cannot read:
  "Invalid model: X" / "Model could not be parsed" (#879, #340); an expired -t timer: "Compilation
  timeout. This is usually caused by large activations." / "Compilation failed! " (#686);
  "Compilation failed!" exits 1 (#512: "returned non-zero exit status 1"); 0 subgraphs leave
  0.00B used and 0.00B remaining on chip (#609, #225).

What is not real:

- there is no Edge TPU code: each `*_edgetpu.tflite` holds the input model's bytes unchanged (a
  segment the whole model; the CPU segment files `X_segment_k_of_N.tflite` are not written), so
  tests can still run it on CPU kernels; "Input size" and "Output size" are the input model's;
- which operations map follows the rules below only (name, 8-bit data, rank, order), not the
  compiler's other limits; the table lists operators in graph order (the real order is not);
- memory: the constant tensors of mapped operations are cached on chip up to 8 MiB (the SRAM,
  coral.ai/docs/edgetpu/pipeline "~8 MB"; real used + remaining is 6.1 to 8.0 MiB, by model), the
  rest is off-chip; co-compiled models fill it in the order given;
- segments split the operation list evenly; -m, -i and -k are accepted and change nothing but
  what -d prints ("Searching for valid delegate with step K", "Try to compile segment with N ops",
  #608, #671): the stand-in never has a failure to search back from;
- no published v16 output shows an internal compiler error: EDGETPU_STANDIN_FAIL=internal prints
  v14's "Internal compiler error. Aborting! " (#211) between v16's child-process lines (#829);
- command-line errors and -h are not in published output: errors take glibc getopt_long's wording
  (the real parser accepts getopt_long's forms, above), -h paraphrases the documentation; their
  exit codes (1, 0) are assumed, as is 1 for "Invalid model"; a missing -o directory is created.

Test knobs (environment): EDGETPU_STANDIN_RECORD=path appends {"argv", "cwd"} as one JSON line per
invocation; EDGETPU_STANDIN_SLEEP=seconds sleeps once the timer has started (past -t, the timer
expires as the real one does); EDGETPU_STANDIN_FAIL=internal fails every compilation.
"""

from __future__ import annotations

import getopt
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

VERSION = "16.0.384591198"
SUPPORTED = frozenset((
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD",
    "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE",
    "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV"))
MAPPED = "Mapped to Edge TPU"  # fixture 01
# a supported operation after mapping stopped, without -a (#342, #490, #537)
ONE_SUBGRAPH = "More than one subgraph is not supported"
NOT_SUPPORTED = "Operation not supported"  # 8-bit data, operation not in the list (#342: TRANSPOSE in v15)
BAD_TYPE = "Operation is working on an unsupported data type"  # data not 8-bit (#609; #490: DEQUANTIZE)
# a QUANTIZE from float (system-software-lab/nrf20 convert/quantize/README.md; #342)
OTHERWISE = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
# a data tensor with a size > 1 outside its 3 innermost dimensions, the limit models-intro documents (#537)
BAD_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
NOT_ALL_MAPPED = ("Model successfully compiled but not all operations are supported by the Edge TPU. A percentage "
                  "of the model will instead run on the CPU, which is slower. If possible, consider updating your "
                  "model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.")
ON_CHIP_BYTES = 8 * 1024 ** 2
EIGHT_BIT = ("int8", "uint8")
CONSTANT_TYPES = ("int8", "uint8", "int32")  # weights, biases, shape operands
SHORT_OPTIONS = "adk:i:m:n:o:st:vh"  # in the order of LONG_OPTIONS
LONG_OPTIONS = ["enable_multiple_subgraphs", "search_delegate", "delegate_search_step=", "intermediate_tensors=",
                "min_runtime_version=", "num_segments=", "out_dir=", "show_operations", "timeout_sec=", "version",
                "help"]
HELP = """Usage: edgetpu_compiler [options] model...

Options:
  -a, --enable_multiple_subgraphs   Map every supported operation, making more than one Edge TPU subgraph.
  -d, --search_delegate             When compilation fails, search back for an earlier stopping point.
  -k, --delegate_search_step N      Operations to step back per try of -d (default 1).
  -i, --intermediate_tensors NAMES  Comma-separated tensors to output from the Edge TPU custom op.
  -m, --min_runtime_version N       Oldest Edge TPU runtime the model must run on (default 14).
  -n, --num_segments N              Compile into N segments for a pipeline of Edge TPUs (default 1).
  -o, --out_dir DIR                 Where the compiled model and its log go (default: current directory).
  -s, --show_operations             Print the operation log.
  -t, --timeout_sec N               Compilation timeout in seconds (default 180).
  -v, --version                     Print the compiler version and exit.
  -h, --help                        Print this help and exit."""


def install_compiler(bin_dir: Path, env: dict | None = None) -> Path:
    """An executable `bin_dir/edgetpu_compiler` that runs this stand-in with `env` exported."""
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    exports = "".join(f"export {name}={shlex.quote(str(value))}\n" for name, value in (env or {}).items())
    path = bin_dir / "edgetpu_compiler"
    path.write_text(f"#!/bin/sh\n{exports}exec {shlex.quote(sys.executable)} "
                    f"{shlex.quote(str(Path(__file__).resolve()))} \"$@\"\n")
    path.chmod(0o755)
    return path


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def size_text(count: int) -> str:
    """A byte count as the compiler prints it: 0.00B, 74.00KiB, 7.37MiB."""
    for unit, scale in (("MiB", 1024 ** 2), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:.2f}{unit}"
    return f"{count:.2f}B"


# -- the command line ---------------------------------------------------------------------------


@dataclass
class Options:
    """The command line, a field per long option."""

    models: list[str] = field(default_factory=list)
    enable_multiple_subgraphs: bool = False
    search_delegate: bool = False
    delegate_search_step: int = 1
    intermediate_tensors: str = ""
    min_runtime_version: int = 14
    num_segments: int = 1
    out_dir: str | None = None
    show_operations: bool = False
    timeout_sec: int = 180
    version: bool = False
    help: bool = False


LONG_NAMES = dict(zip(("-" + c for c in SHORT_OPTIONS.replace(":", "")), (o.rstrip("=") for o in LONG_OPTIONS)))
INTEGERS = ("delegate_search_step", "min_runtime_version", "num_segments", "timeout_sec")


def _getopt_message(error: getopt.GetoptError) -> str:
    """glibc getopt_long's wording for what Python's getopt found."""
    name = error.opt
    is_long = error.msg.startswith("option --")
    if "requires argument" in error.msg:
        return f"option '--{name}' requires an argument" if is_long else f"option requires an argument -- '{name}'"
    if "must not have an argument" in error.msg:
        return f"option '--{name}' doesn't allow an argument"
    if "not a unique prefix" in error.msg:
        return f"option '--{name}' is ambiguous"
    return f"unrecognized option '--{name}'" if is_long else f"invalid option -- '{name}'"


def parse_args(argv: list[str]) -> Options | str:
    """The options, or what is wrong with the command line."""
    try:
        pairs, models = getopt.gnu_getopt(argv, SHORT_OPTIONS, LONG_OPTIONS)
    except getopt.GetoptError as error:
        return _getopt_message(error)
    options = Options(models=models)
    for name, value in pairs:
        key = LONG_NAMES.get(name, name[2:])
        if key + "=" not in LONG_OPTIONS:
            setattr(options, key, True)
        elif key not in INTEGERS:
            setattr(options, key, value)
        elif value.strip().isdigit() and int(value) > 0:
            setattr(options, key, int(value))
        else:
            return f"invalid value '{value}' for {name}"
    return options


# -- what maps ----------------------------------------------------------------------------------


@dataclass
class Op:
    name: str
    problem: str | None  # why it cannot run on the Edge TPU, None when it can
    params: dict[int, int]  # constant tensor index -> bytes


@dataclass
class Model:
    shown: str  # the path as given
    path: Path
    ops: list[Op]


def _bytes(tensor: dict) -> int:
    count = 1
    for dim in tensor["shape"]:
        count *= int(dim)
    return count * tensor["dtype"]().itemsize


def _problem(name: str, data_in: list[dict], data_out: list[dict], constants: list[dict]) -> str | None:
    """Why an operation cannot run on the Edge TPU, None when it can."""
    data = data_in + data_out
    eight_bit = (all(t["dtype"].__name__ in EIGHT_BIT for t in data)
                 and all(t["dtype"].__name__ in CONSTANT_TYPES for t in constants))
    if name not in SUPPORTED:
        return NOT_SUPPORTED if eight_bit else BAD_TYPE
    if not eight_bit:
        quantizes = name == "QUANTIZE" and all(t["dtype"].__name__ in EIGHT_BIT for t in data_out)
        return OTHERWISE if quantizes else BAD_TYPE
    if any(len(t["shape"]) > 3 and any(int(d) > 1 for d in t["shape"][:-3]) for t in data):
        return BAD_RANK
    return None


def load(shown: str) -> Model | str:
    """A model's operations and what stops each from mapping, or why it is not a valid model."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interpreter = Interpreter(model_path=shown,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except ValueError:
        return "Model could not be parsed"
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    if not any(t["dtype"].__name__ in EIGHT_BIT for t in tensors.values()):
        return "Model not quantized"
    details = interpreter._get_ops_details()
    produced = {int(i) for op in details for i in op["outputs"]}
    computed = produced | {d["index"] for d in interpreter.get_input_details()}
    ops = []
    for op in details:
        inputs = [int(i) for i in op["inputs"] if int(i) >= 0]
        constants = {i: tensors[i] for i in inputs if i not in computed}
        problem = _problem(op["op_name"], [tensors[i] for i in inputs if i in computed],
                           [tensors[int(i)] for i in op["outputs"]], list(constants.values()))
        ops.append(Op(op["op_name"], problem, {i: _bytes(t) for i, t in constants.items()}))
    return Model(shown, Path(shown), ops)


def statuses(ops: list[Op], multiple_subgraphs: bool) -> list[str]:
    """Each operation's status: without -a, mapping stops at the first operation that cannot map
    once mapping has begun."""
    result, started, stopped = [], False, False
    for op in ops:
        if op.problem is not None:
            stopped = stopped or started
            result.append(op.problem)
        elif stopped and not multiple_subgraphs:
            result.append(ONE_SUBGRAPH)
        else:
            started = True
            result.append(MAPPED)
    return result


def subgraph_count(rows: list[str]) -> int:
    return sum(status == MAPPED and (k == 0 or rows[k - 1] != MAPPED) for k, status in enumerate(rows))


def table(names: list[str], rows: list[str]) -> list[str]:
    """The operator table: one row per (operator, status), operators in their first order."""
    counts: dict[str, dict[str, int]] = {}
    for name, status in zip(names, rows):
        by_status = counts.setdefault(name, {})
        by_status[status] = by_status.get(status, 0) + 1
    lines = [f"{'Operator':<31}{'Count':<11}Status", ""]
    for name, by_status in counts.items():
        lines += [f"{name:<31}{count:<11}{status}" for status, count in by_status.items()]
    return lines


# -- one compilation ----------------------------------------------------------------------------


@dataclass
class Unit:
    """One output model: a whole input model, or one segment of it."""

    model: Model
    ops: list[Op]
    input_shown: str
    stem: str  # of the outputs: <stem>_edgetpu.tflite / .log


def _shown(options: Options, name: str) -> str:
    return f"{options.out_dir.rstrip('/')}/{name}" if options.out_dir else name


def units_of(models: list[Model], options: Options) -> list[list[Unit]]:
    """The compilations to run: all models co-compiled, or each segment on its own."""
    if options.num_segments == 1:
        return [[Unit(m, m.ops, m.shown, m.path.stem) for m in models]]
    jobs = []
    for model in models:
        count, n = len(model.ops), options.num_segments
        for k in range(n):
            stem = f"{model.path.stem}_segment_{k}_of_{n}"
            jobs.append([Unit(model, model.ops[k * count // n:(k + 1) * count // n],
                              _shown(options, f"{stem}.tflite"), stem)])
    return jobs


def _memory(unit: Unit, rows: list[str], free: int) -> tuple[list[str], int]:
    """The three memory lines, and the on-chip memory left for the next co-compiled model."""
    params: dict[int, int] = {}
    for op, status in zip(unit.ops, rows):
        if status == MAPPED:
            params.update(op.params)
    needed = sum(params.values())
    on_chip = min(needed, free) if MAPPED in rows else 0
    remaining = free - on_chip if MAPPED in rows else 0
    return [f"On-chip memory used for caching model parameters: {size_text(on_chip)}",
            f"On-chip memory remaining for caching model parameters: {size_text(remaining)}",
            f"Off-chip memory used for streaming uncached model parameters: {size_text(needed - on_chip)}"], \
        free - on_chip


def _report(unit: Unit, options: Options, free: int) -> tuple[list[str], int]:
    """Write the unit's model and log; its console block and the on-chip memory left."""
    rows = statuses(unit.ops, options.enable_multiple_subgraphs)
    names = [op.name for op in unit.ops]
    out_dir = Path(options.out_dir or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    output, log = f"{unit.stem}_edgetpu.tflite", f"{unit.stem}_edgetpu.log"
    shutil.copyfile(unit.model.path, out_dir / output)
    (out_dir / log).write_text("\n".join([f"Edge TPU Compiler version {VERSION}", f"Input: {unit.input_shown}",
                                          f"Output: {_shown(options, output)}", "", *table(names, rows)]) + "\n")
    memory, free = _memory(unit, rows, free)
    on_tpu = rows.count(MAPPED)
    lines = ["", f"Input model: {unit.input_shown}", f"Input size: {size_text(unit.model.path.stat().st_size)}",
             f"Output model: {_shown(options, output)}", f"Output size: {size_text((out_dir / output).stat().st_size)}",
             *memory, f"Number of Edge TPU subgraphs: {subgraph_count(rows)}",
             f"Total number of operations: {len(rows)}", f"Operation log: {_shown(options, log)}"]
    if on_tpu < len(rows):
        lines += ["", NOT_ALL_MAPPED, f"Number of operations that will run on Edge TPU: {on_tpu}",
                  f"Number of operations that will run on CPU: {len(rows) - on_tpu}"]
    if options.show_operations:
        return lines + ["", *table(names, rows)], free
    return lines + ["See the operation log file for individual operation details."], free


def _child_outcome(timeout_s: int) -> str | None:
    """What ends the compilation early: "timeout", "internal", or None."""
    sleep = float(os.environ.get("EDGETPU_STANDIN_SLEEP") or 0)
    if sleep > timeout_s:
        time.sleep(timeout_s)
        return "timeout"
    time.sleep(sleep)
    return "internal" if os.environ.get("EDGETPU_STANDIN_FAIL") == "internal" else None


def compile_job(units: list[Unit], options: Options) -> int:
    if options.search_delegate:
        _out(f"Searching for valid delegate with step {options.delegate_search_step}")
        _out(f"Try to compile segment with {sum(len(u.ops) for u in units)} ops")
    _out(f"Started a compilation timeout timer of {options.timeout_sec} seconds.")
    started = time.monotonic()
    outcome = _child_outcome(options.timeout_sec)
    if outcome == "timeout":
        _out("Compilation timeout. This is usually caused by large activations.")
        _out("Compilation failed! ")
        return 1
    if outcome == "internal":
        _out("Internal compiler error. Aborting! ")
        _out("Compilation child process completed within timeout period.")
        _out("Compilation failed! ")
        return 1
    free, blocks = ON_CHIP_BYTES, []
    for unit in units:
        block, free = _report(unit, options, free)
        blocks += block
    elapsed_ms = max(1, round((time.monotonic() - started) * 1000))
    _out(f"\n{'Models' if len(units) > 1 else 'Model'} compiled successfully in {elapsed_ms} ms.")
    for line in blocks:
        _out(line)
    _out("Compilation child process completed within timeout period.")
    _out("Compilation succeeded! ")
    return 0


def main(argv: list[str]) -> int:
    record = os.environ.get("EDGETPU_STANDIN_RECORD")
    if record:
        with open(record, "a") as fh:
            fh.write(json.dumps({"argv": argv, "cwd": os.getcwd()}) + "\n")
    options = parse_args(argv)
    if isinstance(options, str):
        _err(f"edgetpu_compiler: {options}")
        _err("Usage: edgetpu_compiler [options] model...")
        return 1
    _out(f"Edge TPU Compiler version {VERSION}")
    if options.version:
        return 0
    if options.help:
        _out(HELP)
        return 0
    if not options.models:
        _err(HELP)
        return 1
    models = []
    for shown in options.models:
        model = load(shown)
        if isinstance(model, str):
            _out(f"Invalid model: {shown}")
            _out(model)
            return 1
        models.append(model)
    for units in units_of(models, options):
        code = compile_job(units, options)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
