"""Stand-ins of two Android binaries for the adb test peer (tests/peers/adbd.py).

`benchmark_main`: TFLite's `benchmark_model` (tensorflow/lite/tools/benchmark, TF 2.18 as built for
Android). It really runs `--graph` with LiteRT (`ai_edge_litert.interpreter`) on this host, with
benchmark_model's protocol: warm-up runs (at least --warmup_runs and --warmup_min_secs; the first
of them is the "First inference") then timed runs (at least --num_runs and --min_secs, no run
started after --max_secs), each one `invoke()` between two `time.perf_counter_ns()` reads. It
prints what the real tool prints, where it prints it: the tool's own lines (tools/logging.h) go
to stdout as `INFO: …` and `ERROR: …` to stderr; the runtime's lines (minimal logging: `INFO:
Initialized TensorFlow Lite runtime.`, delegate creation, `INFO: Replacing N out of M node(s) …`)
to stderr. Sources of the wording: benchmark_model.cc, benchmark_tflite_model.cc,
benchmark_main.cc, tools/logging.h and stats_calculator.h (Stat / StatWithPercentiles) of
tensorflow/tensorflow; TI processor-sdk-doc tflite.rst (TF 2.18 output with p5/median/p95 and
`Signature to run: []`); Synaptics SyNAP docs (TF 2.15 `adb shell benchmark_model --use_nnapi`
output); tensorflow/tensorflow#70664 and google-ai-edge/LiteRT#56 (Android: `Replacing … for the
whole graph.` logged at INFO); the NNAPI failure of
tests/fixtures/benchmark_model/04-android-adb-mi11-tf24-nnapi-delegate-fails.txt.

What is not real: this host has no GPU and no NNAPI. With --use_gpu or --use_nnapi the stand-in
measures with XNNPACK and prints what the real tool prints for that delegate (`Created TensorFlow
Lite delegate for GPU.` / `for NNAPI.`, `Replacing … (TfLiteGpuDelegateV2)` /
`(TfLiteNnapiDelegate)`) with the node counts XNNPACK really took on this graph. --use_xnnpack=false
uses the built-in kernels without the default delegate (BUILTIN_WITHOUT_DEFAULT_DELEGATES).
--enable_op_profiling is accepted and echoed; the profiling tables are not printed. A
--nnapi_accelerator_name not in the device's list fails as the NNAPI delegate does; the peer's
`delegate_failure` (`{"nnapi": "op_failed"}`, `{"gpu": "<error text>"}`) makes the delegate fail;
the value `corrupt_outputs` (for any delegate: cpu, xnnpack, gpu, nnapi) lets it run at its
normal speed but saves wrong outputs, every output tensor rolled by one along its last axis, the
way a broken NNAPI driver returns plausible but wrong logits. Exit status 0, or 1 (EXIT_FAILURE)
on any failure; a FATAL line aborts (SIGABRT), as TFLITE_LOG(FATAL) and TFLITE_TOOLS_CHECK do.

Given inputs and saved outputs, as benchmark_tflite_model.cc (TF 2.16-era: the version with
`signature_to_run_for`, `list_signatures` and `OutputSaver`) has them: `--input_layer` (names,
`,`), `--input_layer_shape` (one shape per name, `:` between them; a -1 is refused), and
`--input_layer_value_files` (`NAME:FILE` items, `,` between them, `::` for a `:` in either half;
SplitInputLayerNameAndValueFile). Each input is resized to its shape before the delegate is
applied (a name that differs from the model's only warns); a value file must hold exactly the
resized tensor's bytes (`FATAL: The size of F is N bytes. It should be M bytes.`) and replaces
that input's random data. `--output_filepath`: after the runs, every output tensor's raw bytes
in the model's output order, concatenated (OutputSaver::OnBenchmarkEnd; nothing when the file
cannot be opened).

`taskset_main`: toybox's taskset (toys/other/taskset.c): `taskset MASK CMD [ARGS…]` runs CMD with
that CPU affinity, `taskset -p [MASK] PID` shows or sets a pid's. The phone's CPU k is this host's
allowed CPU number (k mod count), so a Pixel mask like f0 runs on this 2-core machine; a mask
with a non-hex digit (`0x` included) fails with toybox's `taskset: bad mask '…'`, exit 1.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time

# -- taskset ------------------------------------------------------------------------------------------


def _die(message: str, code: int = 1) -> int:
    sys.stderr.write(f"taskset: {message}\n")
    sys.stderr.flush()
    return code


def _parse_mask(text: str) -> int | None:
    value = 0
    for ch in text:
        digit = "0123456789abcdef".find(ch.lower())
        if digit < 0:
            return None
        value = value * 16 + digit
    return value


def _host_cpus(device_mask: int, device_cpus: int) -> set[int]:
    allowed = sorted(os.sched_getaffinity(0))
    return {allowed[k % len(allowed)] for k in range(device_cpus) if device_mask >> k & 1}


def _device_mask(host: set[int], device_cpus: int) -> int:
    allowed = sorted(os.sched_getaffinity(0))
    return sum(1 << k for k in range(device_cpus) if allowed[k % len(allowed)] in host)


def taskset_main(argv: list[str], cpus: int = 8) -> int:
    flags, args = set(), list(argv)
    while args and args[0].startswith("-") and len(args[0]) > 1 and set(args[0][1:]) <= {"p", "a"}:
        flags |= set(args.pop(0)[1:])
    if "p" not in flags:
        if len(args) < 2:
            return _die("Needs 2 args")
        mask = _parse_mask(args[0])
        if mask is None:
            return _die(f"bad mask '{args[0]}'")
        target = _host_cpus(mask, cpus)
        if not target:
            return _die(f"failed to set pid {os.getpid()}'s affinity: Invalid argument")
        os.sched_setaffinity(0, target)
        try:
            os.execvp(args[1], args[1:])
        except OSError as exc:
            return _die(f"exec {args[1]}: {exc.strerror}", 127 if isinstance(exc, FileNotFoundError) else 126)
    if not args:
        return _die("Needs 1 argument")
    try:
        pid = int(args[-1])
    except ValueError:
        return _die(f"Not int {args[-1]}")
    try:
        current = os.sched_getaffinity(pid)
        print(f"pid {pid}'s current affinity mask: {_device_mask(current, cpus):x}")
        if len(args) >= 2:
            mask = _parse_mask(args[0])
            if mask is None:
                return _die(f"bad mask '{args[0]}'")
            target = _host_cpus(mask, cpus)
            if not target:
                return _die(f"failed to set pid {pid}'s affinity: Invalid argument")
            os.sched_setaffinity(pid, target)
            print(f"pid {pid}'s new affinity mask: {_device_mask(os.sched_getaffinity(pid), cpus):x}")
    except OSError as exc:
        return _die(f"failed to get pid {pid}'s affinity: {exc.strerror}")
    return 0


# -- benchmark_model ------------------------------------------------------------------------------------

# flag: (type, label in LogParams or None). The order is the order LogParams prints them in:
# BenchmarkModel, BenchmarkTfLiteModel, then the delegate providers (default, GPU, NNAPI, XNNPACK).
FLAGS = {
    "num_runs": (int, "Min num runs"), "min_secs": (float, "Min runs duration (seconds)"),
    "max_secs": (float, "Max runs duration (seconds)"), "run_delay": (float, "Inter-run delay (seconds)"),
    "num_threads": (int, "Num threads"), "warmup_runs": (int, "Min warmup runs"),
    "warmup_min_secs": (float, "Min warmup runs duration (seconds)"),
    "report_peak_memory_footprint": (bool, "Report the peak memory footprint"),
    "memory_footprint_check_interval_ms": (int, "Memory footprint check interval (ms)"),
    "graph": (str, "Graph"), "signature_to_run_for": (str, "Signature to run"),
    "input_layer": (str, "Input layers"), "input_layer_shape": (str, "Input shapes"),
    "input_layer_value_files": (str, "Input value files"),
    "allow_fp16": (bool, "Allow fp16"), "require_full_delegation": (bool, "Require full delegation"),
    "enable_op_profiling": (bool, "Enable op profiling"), "verbose": (bool, None),
    "output_filepath": (str, "File path to export outputs layer to"),
    "use_gpu": (bool, "Use gpu"), "gpu_backend": (str, "GPU backend"),
    "use_nnapi": (bool, "Use NNAPI"), "nnapi_execution_preference": (str, "NNAPI execution preference"),
    "nnapi_accelerator_name": (str, "NNAPI accelerator name"), "use_xnnpack": (bool, "Use xnnpack"),
}
DEFAULTS = {"num_runs": 50, "min_secs": 1.0, "max_secs": 150.0, "run_delay": -1.0, "num_threads": -1,
            "warmup_runs": 1, "warmup_min_secs": 0.5, "report_peak_memory_footprint": False,
            "memory_footprint_check_interval_ms": 50, "graph": "", "signature_to_run_for": "",
            "input_layer": "", "input_layer_shape": "", "input_layer_value_files": "", "output_filepath": "",
            "allow_fp16": False, "require_full_delegation": False, "enable_op_profiling": False, "verbose": False,
            "use_gpu": False, "gpu_backend": "", "use_nnapi": False, "nnapi_execution_preference": "",
            "nnapi_accelerator_name": "", "use_xnnpack": False}
NNAPI_LINE = 3779  # the nnapi_delegate.cc line in the real capture (fixture 04, TF 2.4)
CORRUPT = "corrupt_outputs"  # a `delegate_failure` value: the delegate runs, its outputs are wrong


def _out(line: str) -> None:
    """A line of the tool's own logging (TFLITE_LOG INFO/WARN): stdout."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    """A runtime (minimal logging) line or a TFLITE_LOG(ERROR): stderr."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _g(value: float) -> str:
    """A double as std::ostream prints it by default (6 significant digits)."""
    return f"{value:g}"


def _f32(value: float) -> float:
    import struct

    return struct.unpack("<f", struct.pack("<f", value))[0]


class Stat:
    """tsl::StatWithPercentiles<int64_t>: what `count=… first=… … p95=…` prints."""

    def __init__(self):
        self.values: list[int] = []

    def add(self, us: int) -> None:
        self.values.append(us)

    def avg(self) -> float:
        return sum(self.values) / len(self.values) if self.values else 0.0

    def percentile(self, p: int) -> int:
        if not self.values:
            return 0  # quiet_NaN of an integer type
        return sorted(self.values)[len(self.values) * p // 100]

    def __str__(self) -> str:
        v = self.values
        if not v:
            text = "count=0"
        elif min(v) == max(v):
            text = f"count={len(v)} curr={v[-1]}" + ("(all same)" if len(v) > 1 else "")
        else:
            n, total, squares = len(v), sum(v), sum(x * x for x in v)
            avg = total / n
            variance = int(squares / n - avg * avg)  # ValueType (int64) variance, then int64 sqrt
            std = int(variance ** 0.5) if variance > 0 else 0
            text = (f"count={n} first={v[0]} curr={v[-1]} min={min(v)} max={max(v)} avg={_g(avg)} "
                    f"std={std}")
        return text + f" p5={self.percentile(5)} median={self.percentile(50)} p95={self.percentile(95)}"


def _parse(argv: list[str]) -> tuple[dict, dict, list[str]] | str:
    """(values, set flags, unconsumed args) or the error to print."""
    values, given, unconsumed = dict(DEFAULTS), {}, []
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg or arg[2:].split("=", 1)[0] not in FLAGS:
            unconsumed.append(arg)
            continue
        name, text = arg[2:].split("=", 1)
        kind = FLAGS[name][0]
        try:
            if kind is bool:
                if text not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                value = text in ("true", "1")
            elif kind is int:
                value = int(text)
            elif kind is float:
                value = _f32(float(text))
            else:
                value = text
        except ValueError:
            return f"Failed to parse flag '{name}' against argv '{arg}'"
        values[name] = given[name] = value
    return values, given, unconsumed


def _log_params(values: dict, given: dict, accelerators: list[str]) -> None:
    _out("INFO: Log parameter values verbosely: [0]")

    def show(name: str) -> None:
        kind, label = FLAGS[name]
        value = values[name]
        text = str(int(value)) if kind is bool else _g(value) if kind is float else str(value)
        _out(f"INFO: {label}: [{text}]")

    for name in ("num_runs", "min_secs", "max_secs", "run_delay", "num_threads", "warmup_runs",
                 "warmup_min_secs", "report_peak_memory_footprint", "memory_footprint_check_interval_ms"):
        if name in given:
            show(name)
    show("graph")
    show("signature_to_run_for")
    for name in ("input_layer", "input_layer_shape", "input_layer_value_files", "allow_fp16",
                 "require_full_delegation", "enable_op_profiling", "output_filepath"):
        if name in given:
            show(name)
    if "num_threads" in given:
        _out(f"INFO: #threads used for CPU inference: [{values['num_threads']}]")
    for name in ("use_gpu", "gpu_backend", "use_nnapi", "nnapi_execution_preference", "nnapi_accelerator_name"):
        if name in given:
            show(name)
    if values["use_nnapi"] and accelerators:
        _out(f"INFO: NNAPI accelerators available: [{','.join(accelerators)}]")
    if "use_xnnpack" in given:
        show("use_xnnpack")


class _Fd2Capture:
    """Holds what the native runtime writes on fd 2 while loading, so only the tool's lines show."""

    def __enter__(self):
        import tempfile

        sys.stderr.flush()
        self.file = tempfile.TemporaryFile()
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read().decode(errors="replace")
        self.file.close()
        return False


def _maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class _PeakMemory(threading.Thread):
    """MemoryUsageMonitor: samples the footprint every interval, keeps the peak."""

    def __init__(self, interval_ms: int):
        super().__init__(daemon=True)
        self.interval = max(interval_ms, 1) / 1000
        self.peak_kb = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak_kb = max(self.peak_kb, _maxrss_kb())
            self.stopped.wait(self.interval)

    def stop(self) -> float:
        self.stopped.set()
        self.join()
        self.peak_kb = max(self.peak_kb, _maxrss_kb())
        return self.peak_kb / 1024.0


def _fail() -> int:
    _err("ERROR: Benchmarking failed.")
    return 1


def _fatal(message: str) -> None:
    """TFLITE_LOG(FATAL) and TFLITE_TOOLS_CHECK: the message on stderr, then abort()."""
    _err(f"FATAL: {message}")
    os.abort()


def _split_name_file(item: str) -> tuple[str, str] | str:
    """SplitInputLayerNameAndValueFile: NAME:FILE split on the one `:` that is not doubled; `::`
    stands for `:` in both halves. The error to print otherwise."""
    delim, i = -1, 0
    while i < len(item) - 1:
        if item[i] == ":":
            if item[i + 1] == ":":
                i += 1
            elif delim == -1:
                delim = i
            else:
                return f"{item} contains more than one delimiter."
        i += 1
    if delim == -1:
        return f"{item} doesn't contain any delimiter."
    return item[:delim].replace("::", ":"), item[delim + 1:].replace("::", ":")


def _input_layers(values: dict) -> list[dict] | str:
    """PopulateInputLayerInfo: --input_layer (`,`), --input_layer_shape (`:` between inputs, `,`
    inside) and --input_layer_value_files (`,` between items) -> [{name, shape, file}], or the
    error to print. A value file naming no --input_layer is fatal, as in the real tool."""
    names = values["input_layer"].split(",") if values["input_layer"] else []
    shapes = values["input_layer_shape"].split(":") if values["input_layer_shape"] else []
    if len(names) != len(shapes):
        return (f"The number of items in --input_layer_shape ({values['input_layer_shape']}, with {len(shapes)} "
                f"items) must match the number of items in --input_layer ({values['input_layer']}, with "
                f"{len(names)} items). For example --input_layer=input1,input2 --input_layer_shape=1,224,224,4:1,20")
    layers = []
    for name, shape in zip(names, shapes):
        try:
            dims = [int(d) for d in shape.split(",")]
        except ValueError:
            _fatal(f"Incorrect size string specified: {shape}")
        if -1 in dims:
            return "Any unknown sizes in the shapes (-1's) must be replaced with the size you want to benchmark with."
        layers.append({"name": name, "shape": dims, "file": None})
    for item in values["input_layer_value_files"].split(",") if values["input_layer_value_files"] else []:
        pair = _split_name_file(item)
        if isinstance(pair, str):
            _err(f"ERROR: {pair}")
            return f"Wrong input value file item specified: {item}"
        match = [layer for layer in layers if layer["name"] == pair[0]]
        if not match:
            _fatal(f"Cannot find the corresponding input_layer name({pair[0]}) in --input_layer as "
                   f"{values['input_layer']}")
        match[0]["file"] = pair[1]
    return layers


def _resize(interpreter, layers: list[dict]) -> str | None:
    """BenchmarkTfLiteModel::Init before the delegates: one layer per model input, the names only
    warned about, then each input resized to its shape. The error to print, if any."""
    details = interpreter.get_input_details()
    if layers and len(layers) != len(details):
        _fatal(f"Inputs mismatch: Model inputs #:{len(layers)} expected: {len(details)}")
    for layer, detail in zip(layers, details):
        if layer["name"] != detail["name"]:
            _out(f"WARN: Tensor # {detail['index']} is named {detail['name']} but flags call it {layer['name']}")
        if len(layer["shape"]) != len(detail["shape"]):
            return f"Input tensor #{detail['index']} should have {len(detail['shape'])} dimensions!"
    for layer, detail in zip(layers, details):
        interpreter.resize_tensor_input(detail["index"], layer["shape"])
    return None


def _file_inputs(interpreter, layers: list[dict], inputs: list) -> list:
    """PrepareInputData: an input with a value file takes its bytes, which must be exactly the
    (resized) tensor's size; the others keep their random data."""
    import numpy as np

    by_index = dict(inputs)
    for layer, detail in zip(layers, interpreter.get_input_details()):
        if layer["file"] is None:
            continue
        try:
            with open(layer["file"], "rb") as fh:
                data = fh.read()
        except OSError:
            _fatal(f"Failed to read the input_layer_value_file:{layer['file']}")
        dtype = np.dtype(detail["dtype"])
        expected = int(np.prod(detail["shape"])) * dtype.itemsize
        if len(data) != expected:
            _fatal(f"The size of {layer['file']} is {len(data)} bytes. It should be {expected} bytes.")
        by_index[detail["index"]] = np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape(detail["shape"])
    return list(by_index.items())


def _save_outputs(interpreter, path: str, corrupt: bool) -> None:
    """OutputSaver at the end of the benchmark: every output tensor's raw bytes, in the model's
    output order, into `path` (nothing when it cannot be opened). `corrupt`: what a broken driver
    returns, every output rolled by one along its last axis (top-1 moves to the next class)."""
    import numpy as np

    try:
        with open(path, "wb") as fh:
            for detail in interpreter.get_output_details():
                data = interpreter.get_tensor(detail["index"])
                if corrupt and data.ndim:
                    data = np.roll(data, 1, axis=-1)
                fh.write(np.ascontiguousarray(data).tobytes())
    except OSError:
        pass


def _random_inputs(interpreter):
    import numpy as np

    rng = np.random.default_rng()
    inputs = []
    for detail in interpreter.get_input_details():
        shape, dtype = [int(d) for d in detail["shape"]], np.dtype(detail["dtype"])
        if dtype.kind == "f":
            data = rng.uniform(-0.5, 0.5, size=shape).astype(dtype)
        elif dtype == np.int8:
            data = rng.integers(-127, 128, size=shape).astype(dtype)
        elif dtype == np.uint8:
            data = rng.integers(0, 255, size=shape).astype(dtype)
        elif dtype == np.bool_:
            data = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            data = rng.integers(0, 100, size=shape).astype(dtype)
        inputs.append((detail["index"], data))
    return inputs


def _run(interpreter, inputs, min_runs: int, min_secs: float, max_secs: float, run_delay: float) -> Stat:
    """BenchmarkModel::Run: at least min_runs and min_secs, no run started after max_secs."""
    _out(f"INFO: Running benchmark for at least {min_runs} iterations and at least {_g(min_secs)} seconds but "
         f"terminate if exceeding {_g(max_secs)} seconds.")
    stat = Stat()
    now = time.perf_counter_ns()
    min_finish, max_finish = now + int(min_secs * 1e9), now + int(max_secs * 1e9)
    run = 0
    while (run < min_runs or now < min_finish) and now <= max_finish:
        for index, data in inputs:  # ResetInputsAndOutputs, outside the timed region
            interpreter.set_tensor(index, data)
        start = time.perf_counter_ns()
        interpreter.invoke()
        end = time.perf_counter_ns()
        stat.add((end - start) // 1000)
        if run_delay > 0:
            time.sleep(run_delay)
        now = time.perf_counter_ns()
        run += 1
    _out(f"INFO: {stat}\n")
    return stat


def _delegate_lines(kind: str, cover: dict | None) -> None:
    """What applying a delegate prints: creation, the partitioning, the tool's summary line."""
    names = {"gpu": ("GPU", "TfLiteGpuDelegateV2", "INFO: Created TensorFlow Lite delegate for GPU."),
             "nnapi": ("NNAPI", "TfLiteNnapiDelegate", "INFO: Created TensorFlow Lite delegate for NNAPI."),
             "xnnpack": ("XNNPACK", "TfLiteXNNPackDelegate",
                         "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")}
    label, node_name, created = names[kind]
    total = cover["nodes_total"] if cover else 0
    taken = cover["nodes_delegated"] if cover else 0
    partitions = cover["partitions"] if cover else 0
    if taken:
        _err(f"INFO: Replacing {taken} out of {total} node(s) with delegate ({node_name}) node, yielding "
             f"{partitions} partitions for the whole graph.")
    if kind == "gpu" and taken:
        _err("INFO: Initialized OpenCL-based API.")
        _err(f"INFO: Created {partitions} GPU delegate kernels.")
    if taken == total and partitions == 1:
        _out(f"INFO: Explicitly applied {label} delegate, and the model graph will be completely executed by the "
             "delegate.")
    elif taken:
        _out(f"INFO: Explicitly applied {label} delegate, and the model graph will be partially executed by the "
             f"delegate w/ {partitions} delegate kernels.")
    else:
        _out(f"INFO: Though {label} delegate is explicitly applied, the model graph will not be executed by the "
             "delegate.")


def _delegate_failure(kind: str, how: str, cover: dict | None) -> int:
    """A delegate that fails to prepare: the runtime's errors, then the tool's."""
    node = cover["nodes_total"] if cover else 0  # the delegate node comes after the graph's own nodes
    if kind == "nnapi":
        code = how.upper() if how.upper().startswith("ANEURALNETWORKS_") else f"ANEURALNETWORKS_{how.upper()}"
        _err(f"ERROR: NN API returned error {code} at line {NNAPI_LINE} while completing NNAPI compilation.\n")
        _err(f"ERROR: Node number {node} (TfLiteNnapiDelegate) failed to prepare.\n")
    else:
        _err(f"ERROR: TfLiteGpuDelegate Init: {how}")
        _err("INFO: Created 0 GPU delegate kernels.")
        _err("ERROR: TfLiteGpuDelegate Prepare: delegate is not initialized")
        _err(f"ERROR: Node number {node} (TfLiteGpuDelegateV2) failed to prepare.\n")
    _err("ERROR: Restored original execution plan after delegate application failure.")
    _err(f"ERROR: Failed to apply {'NNAPI' if kind == 'nnapi' else 'GPU'} delegate.")
    return _fail()


def benchmark_main(argv: list[str], state_path: str | None = None) -> int:
    _out("INFO: STARTING!")
    state = {}
    if state_path and os.path.exists(state_path):
        with open(state_path) as fh:
            state = json.load(fh)
    accelerators = list(state.get("nnapi_accelerators", []))
    failures = dict(state.get("delegate_failure", {}))
    parsed = _parse(argv)
    if isinstance(parsed, str):
        _err(f"ERROR: {parsed}")
        return _fail()
    values, given, unconsumed = parsed
    if unconsumed:
        _out(f"WARN: Unconsumed cmdline flags: {' '.join(unconsumed)}")
    graph = values["graph"]
    if not graph:
        _err("ERROR: Please specify the name of your TF Lite input file with --graph")
        return _fail()
    _log_params(values, given, accelerators)
    layers = _input_layers(values)
    if isinstance(layers, str):
        _err(f"ERROR: {layers}")
        return _fail()
    peak = _PeakMemory(values["memory_footprint_check_interval_ms"]) if values["report_peak_memory_footprint"] else None
    if peak is not None:
        peak.start()
    try:
        size = os.path.getsize(graph)
        with open(graph, "rb"):
            pass
    except OSError:
        _err(f"ERROR: Could not open '{graph}'.")
        _err(f"ERROR: Failed to mmap model {graph}")
        return _fail()

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from devices.runner import coverage  # the launcher put the repository on sys.path

    kind = "gpu" if values["use_gpu"] else "nnapi" if values["use_nnapi"] else \
        "xnnpack" if "use_xnnpack" in given and values["use_xnnpack"] else \
        "builtin" if "use_xnnpack" in given else "default"
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if kind == "builtin" else OpResolverType.AUTO
    threads = values["num_threads"] if values["num_threads"] > 0 else None
    start_kb = _maxrss_kb()
    init_start = time.perf_counter_ns()
    with _Fd2Capture() as native:
        try:
            interpreter = Interpreter(model_path=graph, num_threads=threads, experimental_op_resolver_type=resolver)
            loaded, error = True, None
        except Exception as exc:  # noqa: BLE001 - the runtime's message is the tool's error
            loaded, error = False, str(exc)
    if not loaded:
        for line in native.text.splitlines():
            _err(line)
        _err(f"ERROR: {error.strip()}")
        _err(f"ERROR: Failed to mmap model {graph}")
        return _fail()
    resize_error = _resize(interpreter, layers)
    if resize_error is not None:
        _err(f"ERROR: {resize_error}")
        return _fail()
    with _Fd2Capture() as allocating:
        try:
            interpreter.allocate_tensors()
        except Exception as exc:  # noqa: BLE001
            error = str(exc)
    native_lines = (native.text + allocating.text).splitlines()
    _out(f"INFO: Loaded model {graph}")
    _err("INFO: Initialized TensorFlow Lite runtime.")
    cover = coverage(interpreter)
    if error is not None:
        for line in native_lines:
            if not line.startswith("INFO: Created TensorFlow Lite XNNPACK"):
                _err(line)
        _err(f"ERROR: {error.strip()}")
        _err("ERROR: Failed to allocate tensors!")
        return _fail()
    if kind == "nnapi":
        name = values["nnapi_accelerator_name"]
        _err("INFO: Created TensorFlow Lite delegate for NNAPI.")
        _out("INFO: NNAPI delegate created.")
        if name and name not in accelerators:
            _err(f"ERROR: Could not find the specified NNAPI accelerator: {name}. Must be one of: "
                 f"{{{','.join(accelerators)}}}.\n")
            _err("ERROR: Restored original execution plan after delegate application failure.")
            _err("ERROR: Failed to apply NNAPI delegate.")
            return _fail()
        if failures.get("nnapi", CORRUPT) != CORRUPT:
            return _delegate_failure("nnapi", failures["nnapi"], cover)
        _delegate_lines("nnapi", cover)
    elif kind == "gpu":
        _err("INFO: Created TensorFlow Lite delegate for GPU.")
        _out("INFO: GPU delegate created.")
        if failures.get("gpu", CORRUPT) != CORRUPT:
            return _delegate_failure("gpu", failures["gpu"], cover)
        _delegate_lines("gpu", cover)
    elif kind == "xnnpack":
        _err("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
        _out("INFO: XNNPACK delegate created.")
        _delegate_lines("xnnpack", cover)
    elif kind == "default":  # the default XNNPACK delegate, applied by the runtime itself
        _err("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
        if cover and cover["nodes_delegated"]:
            _err(f"INFO: Replacing {cover['nodes_delegated']} out of {cover['nodes_total']} node(s) with delegate "
                 f"(TfLiteXNNPackDelegate) node, yielding {cover['partitions']} partitions for the whole graph.")
    if values["require_full_delegation"] and kind != "default" and not (
            cover and cover["nodes_delegated"] == cover["nodes_total"] and cover["partitions"] == 1):
        _err("ERROR: Disallowed CPU fallback detected.")
        return _fail()
    init_us = (time.perf_counter_ns() - init_start) // 1000
    init_kb = _maxrss_kb() - start_kb
    _out(f"INFO: The input model file size (MB): {_g(size / 1e6)}")
    _out(f"INFO: Initialized session in {_g(init_us / 1e3)}ms.")
    inputs = _file_inputs(interpreter, layers, _random_inputs(interpreter))
    try:
        warmup = _run(interpreter, inputs, values["warmup_runs"], values["warmup_min_secs"], values["max_secs"],
                      values["run_delay"])
        timed = _run(interpreter, inputs, values["num_runs"], values["min_secs"], values["max_secs"],
                     values["run_delay"])
    except Exception as exc:  # noqa: BLE001 - a failing invoke is the tool's failure
        _err(f"ERROR: {str(exc).strip()}")
        return _fail()
    overall_kb = _maxrss_kb() - start_kb
    first = warmup.values[0] if warmup.values else 0
    _out(f"INFO: Inference timings in us: Init: {init_us}, First inference: {first}, Warmup (avg): "
         f"{_g(warmup.avg())}, Inference (avg): {_g(timed.avg())}")
    _out("INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to "
         "the actual memory footprint of the model at runtime. Take the information at your discretion.")
    _out(f"INFO: Memory footprint delta from the start of the tool (MB): init={_g(init_kb / 1024.0)} "
         f"overall={_g(overall_kb / 1024.0)}")
    if peak is not None:
        peak_mb = peak.stop()
        if peak_mb > 0:
            _out(f"INFO: Overall peak memory footprint (MB) via periodic monitoring: {_g(peak_mb)}")
    if values["output_filepath"]:
        delegate = {"builtin": "cpu", "default": "xnnpack"}.get(kind, kind)
        _save_outputs(interpreter, values["output_filepath"], failures.get(delegate) == CORRUPT)
    return 0
