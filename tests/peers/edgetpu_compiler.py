#!/usr/bin/env python3
"""A stand-in for Coral's `edgetpu_compiler` 16.0.384591198, for tests on a machine without it.

What is as the real tool (formats from published output: tests/fixtures/edgetpu_compiler/, and
v16 consoles and `.log` files quoted in Coral issues and tutorials):

- the command line: `edgetpu_compiler [options] model...` with -a, -d, -k N, -i NAMES, -m N,
  -n N, -o DIR, -s, -t N, -v/--version, -h/--help;
- the output files `X_edgetpu.tflite` and `X_edgetpu.log` next to `-o DIR` (default: the current
  directory), and with `-n N` `X_segment_K_of_N_edgetpu.tflite`;
- the console: version line, "Started a compilation timeout timer of N seconds.", "Model compiled
  successfully in N ms.", input/output model and sizes, on-chip and off-chip memory, subgraphs,
  total operations, operation log; when some operations stay on the CPU, the "not all operations
  are supported" paragraph and both per-target counts; `-s` prints the operator table, else "See
  the operation log file for individual operation details."; then "Compilation child process
  completed within timeout period." and "Compilation succeeded!". Sizes print as `%.2f` with B,
  KiB or MiB; the table's columns are 31 and 11 characters wide;
- a model with float tensors fails with "Invalid model: X" / "Model not quantized";
- the `.log` file: version line, "Input:", "Output:", then the operator table.

What is not real:

- no Edge TPU code is produced: `X_edgetpu.tflite` holds the input model's bytes unchanged (so
  tests can still run it on CPU kernels), and segments are copies too;
- which operations map: an operation maps when it is in Coral's supported-operations list
  (coral.ai/docs/edgetpu/models-intro) and its data is 8-bit (int32 biases and shape operands aside,
  so shape arithmetic such as SHAPE / STRIDED_SLICE / PACK on int32 stays on the CPU); without
  `-a` an operation fed by one that stays on the CPU stays there too (one subgraph from the inputs,
  as the compiler documents), with `-a` each run of mappable operations is a subgraph.
  Only the three statuses seen in published logs are used; an unsupported operation on 8-bit
  tensors is reported as "working on an unsupported data type" too;
- memory: the parameters (constant tensors) of mapped operations are cached on chip up to 7.98 MiB
  (the "remaining" a parameter-free model shows in published v16 output), the rest is off-chip;
- the exit code of a failure (1) is assumed; `-t` only sets the printed timer; `-i` is accepted
  and ignored.

Test knobs (environment): EDGETPU_STANDIN_RECORD=path appends {"argv", "cwd"} as a JSON line per
invocation; EDGETPU_STANDIN_SLEEP=seconds sleeps before compiling; EDGETPU_STANDIN_FAIL=internal
fails every compilation with "Internal compiler error. Aborting!".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

VERSION = "16.0.384591198"
SUPPORTED = frozenset((
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD",
    "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE",
    "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV"))
MAPPED = "Mapped to Edge TPU"
AFTER_UNMAPPED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
BAD_TYPE = "Operation is working on an unsupported data type"
ON_CHIP_CAPACITY = round(7.98 * 1024 ** 2)
NOT_ALL_MAPPED = ("Model successfully compiled but not all operations are supported by the Edge TPU. A percentage "
                  "of the model will instead run on the CPU, which is slower. If possible, consider updating your "
                  "model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.")


def install_compiler(bin_dir: Path, env: dict | None = None) -> Path:
    """An executable `bin_dir/edgetpu_compiler` that runs this stand-in with `env` exported."""
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    exports = "".join(f"export {k}='{v}'\n" for k, v in (env or {}).items())
    path = bin_dir / "edgetpu_compiler"
    path.write_text(f"#!/bin/sh\n{exports}exec '{sys.executable}' '{Path(__file__).resolve()}' \"$@\"\n")
    path.chmod(0o755)
    return path


def size(value: int) -> str:
    for unit, scale in (("MiB", 1024 ** 2), ("KiB", 1024)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.2f}B"


def analyse(model: Path, multiple_subgraphs: bool) -> dict | None:
    """Per-operation mapping of a model, or None when it is not quantized."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    if any(t["dtype"].__name__ in ("float32", "float16", "float64") for t in tensors.values()):
        return None
    ops = interpreter._get_ops_details()
    produced = {int(i) for o in ops for i in o["outputs"]}
    inputs = {d["index"] for d in interpreter.get_input_details()}
    on_cpu: set[int] = set()  # tensors computed on the CPU
    rows, params, subgraphs, previous_mapped = [], 0, 0, False
    for op in ops:
        indices = [int(i) for i in list(op["inputs"]) + list(op["outputs"]) if int(i) >= 0]
        kinds = {i: tensors[i]["dtype"].__name__ for i in indices}
        # data is 8-bit; int32 tensors are biases and shape operands, not data
        eight_bit = (all(k in ("int8", "uint8", "int32") for k in kinds.values())
                     and any(kinds[int(i)] in ("int8", "uint8") for i in op["outputs"]))
        mappable = op["op_name"] in SUPPORTED and eight_bit
        # one subgraph from the inputs: an op whose data comes from the CPU stays there (unless -a)
        after_cpu = not multiple_subgraphs and any(
            int(i) in on_cpu and kinds[int(i)] != "int32" for i in op["inputs"] if int(i) >= 0)
        if mappable and not after_cpu:
            status = MAPPED
            subgraphs += not previous_mapped or multiple_subgraphs and subgraphs == 0
            params += sum(_bytes(tensors[i]) for i in indices if i not in produced and i not in inputs)
        else:
            status = AFTER_UNMAPPED if mappable else BAD_TYPE
            on_cpu.update(int(i) for i in op["outputs"])
        previous_mapped = status == MAPPED if multiple_subgraphs else previous_mapped or status == MAPPED
        rows.append((op["op_name"], status))
    return {"rows": rows, "params": params, "subgraphs": subgraphs}


def _bytes(tensor: dict) -> int:
    count = 1
    for dim in tensor["shape"]:
        count *= int(dim)
    return count * tensor["dtype"]().itemsize


def table(rows: list[tuple[str, str]]) -> list[str]:
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        counts[row] = counts.get(row, 0) + 1
    return [f"{'Operator':<31}{'Count':<11}Status", ""] + [f"{op:<31}{n:<11}{status}" for (op, status), n in counts.items()]


def compile_one(model: Path, out_dir: Path, args: argparse.Namespace) -> int:
    started = time.monotonic()
    if os.environ.get("EDGETPU_STANDIN_FAIL") == "internal":
        print("\nInternal compiler error. Aborting! ")
        return 1
    found = analyse(model, args.enable_multiple_subgraphs)
    if found is None:
        print(f"Invalid model: {model.name}\nModel not quantized")
        return 1
    print(f"Started a compilation timeout timer of {args.timeout_sec} seconds.")
    rows = found["rows"]
    on_tpu = sum(status == MAPPED for _, status in rows)
    on_chip = min(found["params"], ON_CHIP_CAPACITY)
    segments = args.num_segments if args.num_segments and args.num_segments > 1 else 1
    names = ([f"{model.stem}_edgetpu.tflite"] if segments == 1 else
             [f"{model.stem}_segment_{k}_of_{segments}_edgetpu.tflite" for k in range(segments)])
    for name in names:
        shutil.copyfile(model, out_dir / name)
    log_name = f"{model.stem}_edgetpu.log"
    (out_dir / log_name).write_text("\n".join([f"Edge TPU Compiler version {VERSION}", f"Input: {model.name}",
                                               f"Output: {names[0]}", "", *table(rows)]) + "\n")
    print(f"\nModel compiled successfully in {max(1, round((time.monotonic() - started) * 1000))} ms.\n")
    print(f"Input model: {model.name}\nInput size: {size(model.stat().st_size)}")
    for name in names:
        print(f"Output model: {name}\nOutput size: {size((out_dir / name).stat().st_size)}")
    print(f"On-chip memory used for caching model parameters: {size(on_chip)}")
    print(f"On-chip memory remaining for caching model parameters: {size(ON_CHIP_CAPACITY - on_chip)}")
    print(f"Off-chip memory used for streaming uncached model parameters: {size(found['params'] - on_chip)}")
    print(f"Number of Edge TPU subgraphs: {found['subgraphs']}\nTotal number of operations: {len(rows)}")
    print(f"Operation log: {log_name}")
    if on_tpu < len(rows):
        print(f"\n{NOT_ALL_MAPPED}\nNumber of operations that will run on Edge TPU: {on_tpu}")
        print(f"Number of operations that will run on CPU: {len(rows) - on_tpu}")
    if args.show_operations:
        print("\n" + "\n".join(table(rows)))
    else:
        print("See the operation log file for individual operation details.")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgetpu_compiler", usage="edgetpu_compiler [options] model...", add_help=False)
    p.add_argument("models", nargs="*")
    p.add_argument("-a", "--enable_multiple_subgraphs", action="store_true")
    p.add_argument("-d", "--search_delegate", action="store_true")
    p.add_argument("-k", "--delegate_search_step", type=int)
    p.add_argument("-i", "--intermediate_tensors")
    p.add_argument("-m", "--min_runtime_version", type=int)
    p.add_argument("-n", "--num_segments", type=int)
    p.add_argument("-o", "--out_dir", default=".")
    p.add_argument("-s", "--show_operations", action="store_true")
    p.add_argument("-t", "--timeout_sec", type=int, default=180)
    p.add_argument("-v", "--version", action="store_true")
    p.add_argument("-h", "--help", action="store_true")
    return p


def main(argv: list[str]) -> int:
    record = os.environ.get("EDGETPU_STANDIN_RECORD")
    if record:
        with open(record, "a") as f:
            f.write(json.dumps({"argv": argv, "cwd": os.getcwd()}) + "\n")
    args = parser().parse_args(argv)  # unknown flags: usage on stderr, exit 2
    print(f"Edge TPU Compiler version {VERSION}")
    if args.version:
        return 0
    if args.help or not args.models:
        print("\nUsage:\nedgetpu_compiler [options] model...")
        return 0 if args.help else 1
    time.sleep(float(os.environ.get("EDGETPU_STANDIN_SLEEP", "0")))
    out_dir = Path(args.out_dir)
    code = max(compile_one(Path(m), out_dir, args) for m in args.models)
    if code == 0:
        print("Compilation child process completed within timeout period.\nCompilation succeeded! ")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
