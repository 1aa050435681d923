"""Each delegate's outputs of the evaluation set, computed on the phone by `benchmark_model`.

A phone without Python still has the tool that measures, and the tool can run given inputs and
save what the model output (tensorflow/lite/tools/benchmark/benchmark_tflite_model.cc):

- `--input_layer=NAME --input_layer_shape=B,D1,… --input_layer_value_files=NAME:FILE`: the input
  tensor is resized to the shape before the delegate is applied, and FILE must hold exactly the
  resized tensor's bytes (else `FATAL: The size of FILE is … bytes. It should be … bytes.` and an
  abort). The name need not match the model's (a warning); `:` in a name is escaped as `::` only
  by recent versions, so names with `:` or `,` are given with those replaced.
- `--output_filepath=FILE` (the `OutputSaver` listener, at the end of the benchmark): the raw
  bytes of every output tensor after the last invoke, in the model's output order, concatenated.
  Builds older than the flag warn `Unconsumed cmdline flags` and write nothing.

So one run with `--warmup_runs=0 --num_runs=1` is one invoke on B examples with the cell's
delegate, threads and CPU mask. When the model's batch dimension is dynamic (its signature says
-1) the evaluation set goes in runs of up to `CHUNK_BYTES` of input; otherwise one run per
example, and at most `MAX_RUNS` runs per cell (each one loads the model and, for NNAPI or GPU,
compiles it: seconds on a phone) — past that the outputs come from the host, with that reason.
Inputs are quantized with the input tensor's scale and zero point and output 0 dequantized with
its own (devices/runner.py `quantize` / `dequantize`), so the block returned is the Python
runner's (`float32-le-base64`, or `top5-int32-le-base64` past `max_values`).

What runs on this host (reading the model, quantizing, decoding) holds the device's `host_work`;
the runs on the phone happen after the launch's timed run, never beside one.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager

from devices.android.benchmark_model import delegate_flags, taskset, tool_failure
from devices.base import Job

CHUNK_BYTES = 16 << 20  # input bytes per run when the batch can be resized
MAX_RUNS = 256  # runs per cell when it cannot (one example per run)
MAX_VALUES = 4_000_000  # past this many output values, top-5 indices (devices/runner.py's default)


@dataclass(frozen=True)
class TensorSpec:
    """A model's input or output tensor, as the interpreter describes it."""

    name: str
    shape: tuple[int, ...]
    signature: tuple[int, ...]  # -1 where the dimension may be resized
    dtype: str  # numpy's name: float32, int8, uint8, …
    scale: float = 0.0
    zero_point: int = 0

    @classmethod
    def of(cls, detail: dict[str, Any]) -> TensorSpec:
        scale, zero_point = detail.get("quantization", (0.0, 0))
        shape = tuple(int(d) for d in detail["shape"])
        signature = tuple(int(d) for d in detail.get("shape_signature", shape))
        return cls(detail["name"], shape, signature, str(detail["dtype"].__name__), float(scale), int(zero_point))

    def example_bytes(self) -> int:
        """Bytes of one example of this tensor (its first dimension being the batch)."""
        import numpy as np

        count = 1
        for d in self.shape[1:]:
            count *= d
        return count * np.dtype(self.dtype).itemsize

    def detail(self) -> dict[str, Any]:
        """The interpreter's description again, as devices/runner.py's (de)quantize take it."""
        import numpy as np

        return {"dtype": np.dtype(self.dtype).type, "quantization": (self.scale, self.zero_point)}


def model_specs(model: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of a .tflite, read with this host's TFLite runtime (nothing allocated)."""
    from devices.runner import load_runtime

    interpreter = load_runtime("auto")[2].Interpreter(model_path=str(model))
    return ([TensorSpec.of(d) for d in interpreter.get_input_details()],
            [TensorSpec.of(d) for d in interpreter.get_output_details()])


def batchable(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> bool:
    """Whether several examples can go in one run: a batch of one that the model declares
    resizable (-1), and outputs that each carry that batch first."""
    (tensor,) = inputs
    return (len(tensor.shape) > 0 and tensor.shape[0] == 1 and tensor.signature[:1] == (-1,)
            and all(len(o.shape) > 0 and o.shape[0] == 1 for o in outputs))


def chunks(count: int, example_bytes: int, batch: bool) -> list[tuple[int, int]]:
    """[start, stop) of each run's examples."""
    size = max(1, min(count, CHUNK_BYTES // max(1, example_bytes))) if batch else 1
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def layer_name(name: str) -> str:
    """An input name every version of the flags' parser takes (no `:` or `,`)."""
    return name.replace(":", "_").replace(",", "_") or "input"


def input_bytes(x, tensor: TensorSpec) -> bytes:
    """Examples x (B, *shape) as the input tensor holds them: quantized when it is, little-endian."""
    import numpy as np

    from devices.runner import quantize

    data = quantize(np, np.asarray(x, dtype=np.float32), tensor.detail())
    return np.ascontiguousarray(data).astype(np.dtype(tensor.dtype).newbyteorder("<")).tobytes()


def outputs_argv(binary: str, graph: str, job: Job, cpu_mask: str | None, tensor: TensorSpec, batch: int,
                 value_file: str, output_file: str) -> list[str]:
    """The command line that runs `batch` examples from value_file once and saves the outputs."""
    name = layer_name(tensor.name)
    shape = ",".join(str(d) for d in (batch, *tensor.shape[1:]))
    return taskset(cpu_mask) + [
        binary, f"--graph={graph}", f"--num_threads={job.num_threads}", "--warmup_runs=0",
        "--warmup_min_secs=0", "--num_runs=1", "--min_secs=0", f"--input_layer={name}",
        f"--input_layer_shape={shape}", f"--input_layer_value_files={name}:{value_file}",
        f"--output_filepath={output_file}", *delegate_flags(job)]


def parse_output_file(data: bytes, outputs: list[TensorSpec], batch: int):
    """Output 0 of `batch` examples, dequantized and flattened per example, from the bytes
    --output_filepath wrote (every output's raw bytes in order). ValueError when the size is not
    what the model's outputs make."""
    import numpy as np

    from devices.runner import dequantize

    sizes = [o.example_bytes() * batch for o in outputs]
    if len(data) != sum(sizes):
        raise ValueError(f"the output file has {len(data)} bytes; {len(outputs)} output(s) of {batch} example(s) "
                         f"make {sum(sizes)}")
    first = outputs[0]
    raw = np.frombuffer(data[:sizes[0]], dtype=np.dtype(first.dtype).newbyteorder("<"))
    return dequantize(np, raw.reshape(batch, -1), first.detail()).astype(np.float32)


def accuracy_block(y, max_values: int = MAX_VALUES) -> dict[str, Any]:
    """The runner's accuracy block (devices/runner.py `run_examples`) of outputs y (N, values)."""
    import numpy as np

    from devices.runner import outputs_block

    return outputs_block(np, y, max_values)


class Unavailable(Exception):
    """The phone cannot give this cell's outputs; the message says why (the host then does)."""


class PhoneOutputs:
    """Runs a cell's evaluation set through benchmark_model on the phone (see the module)."""

    def __init__(self, transport: Any, tool: Any, cpu_mask: str | None):
        self.transport, self.tool, self.cpu_mask = transport, tool, cpu_mask

    def run(self, job: Job, host_work: ContextManager) -> dict[str, Any]:
        """The accuracy block of job.inputs on job's delegate; Unavailable with the reason."""
        import numpy as np

        with tempfile.TemporaryDirectory(prefix="harness-eval-") as scratch:
            with host_work:
                inputs, outputs = model_specs(job.model)
                if len(inputs) != 1:
                    raise Unavailable(f"accuracy needs a single-input model; this one has {len(inputs)} inputs")
                x = np.load(job.inputs)["x"]
                tensor = inputs[0]
                if tuple(x.shape[1:]) != tensor.shape[1:]:
                    raise Unavailable(f"examples have shape {list(x.shape[1:])}, the model's input is "
                                      f"{list(tensor.shape)}")
                batch = batchable(inputs, outputs)
                spans = chunks(len(x), tensor.example_bytes(), batch)
                if len(spans) > MAX_RUNS:
                    raise Unavailable(f"its {len(x)} examples would take {len(spans)} runs of benchmark_model "
                                      f"(at most {MAX_RUNS} per cell; the model's batch size is "
                                      f"{'resizable' if batch else 'fixed'})")
                files = [Path(scratch) / f"chunk{i}.bin" for i in range(len(spans))]
                for path, (start, stop) in zip(files, spans):
                    path.write_bytes(input_bytes(x[start:stop], tensor))
            saved = [self._chunk(job, tensor, stop - start, path) for (start, stop), path in zip(spans, files)]
        with host_work:
            try:
                rows = [parse_output_file(data, outputs, stop - start) for data, (start, stop) in zip(saved, spans)]
            except ValueError as exc:
                raise Unavailable(str(exc)) from None
            return accuracy_block(np.concatenate(rows))

    def _chunk(self, job: Job, tensor: TensorSpec, batch: int, values: Path) -> bytes:
        """One run of the tool on one chunk (pushed by sha256): the output file it saved, pulled
        and removed from the phone."""
        from harness.parsers.benchmark_model import parse

        binary = self.tool.binary()[0]
        remote_out = f"{self.transport.config.workdir.rstrip('/')}/.outputs-{uuid.uuid4().hex[:12]}.bin"
        argv = outputs_argv(binary, self.transport.push(job.model), job, self.cpu_mask, tensor, batch,
                            self.transport.push(values), remote_out)
        started = time.monotonic()
        result = self.transport.run(argv, job.timeout_s)
        try:
            data = self.transport.pull(remote_out, max(job.timeout_s - (time.monotonic() - started), 30.0))
        finally:
            self.transport.run(["rm", "-f", remote_out], self.tool.probe_timeout_s)
        if result.exit_code != 0:
            raise Unavailable(tool_failure(result, parse(result.stdout)))
        if data is None:
            ignored = "--output_filepath" in result.stdout and "Unconsumed cmdline flags" in result.stdout
            raise Unavailable("benchmark_model wrote no --output_filepath file" + (
                " (this build predates the flag: it said `Unconsumed cmdline flags`)" if ignored else ""))
        return data
