#!/usr/bin/env python3
"""The on-device runner: loads one .tflite model, measures it, prints one JSON object.

Single file, stdlib + numpy + the first TFLite runtime that imports (ai_edge_litert, then
tflite_runtime, then tensorflow.lite), so it runs on a Raspberry Pi or a Coral Dev Board with
only those installed. It is pushed to the device by content hash and run there; every time it
reports was taken on the device.

The measurement protocol is benchmark_model's: a first inference, then warm-up runs (at least
--warmup_runs and at least --warmup_min_secs), then timed runs (at least --num_runs and at least
--min_secs, never starting a run after --max_secs). Each timed run is one invoke() between two
monotonic clock reads, and every sample is reported. The first inference is reported apart: on an
Edge TPU it includes loading the model into the TPU's memory, as Coral's own examples note.

The edgetpu delegate goes through pycoral's make_interpreter where pycoral is installed, else
loads libedgetpu as a delegate; without either the runner exits 3 with the Edge TPU runtime's
install hint.

Exit codes: 0 measured; 1 the model failed (load, allocate, invoke); 2 bad arguments;
3 no runtime; 4 the delegate is not available here. Except for 2, stdout holds the JSON object
with "error" set, so the caller always has something to store.
"""

import argparse
import base64
import glob
import json
import os
import platform
import resource
import sys
import time

SCHEMA_VERSION = 1
EXIT_OK, EXIT_MODEL, EXIT_USAGE, EXIT_NO_RUNTIME, EXIT_NO_DELEGATE = 0, 1, 2, 3, 4
DELEGATES = ("cpu", "xnnpack", "reference", "gpu", "nnapi", "edgetpu")
RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
INSTALL_HINT = "python3 -m pip install numpy ai-edge-litert  (or, where LiteRT has no wheel: tflite-runtime)"
EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
EDGETPU_INSTALL_HINT = ("the Edge TPU runtime: sudo apt-get install libedgetpu1-std from Coral's apt repository "
                        "(https://coral.ai/docs/accelerator/get-started/)")
# USB ids of a Coral USB Accelerator: before its firmware is loaded, and after (coral.ai/docs/accelerator)
EDGETPU_USB_IDS = (("1a6e", "089a"), ("18d1", "9302"))
GPU_LIBRARY = {"Linux": "libtensorflowlite_gpu_delegate.so"}


class RunnerFailure(Exception):
    def __init__(self, stage, kind, message, exit_code):
        Exception.__init__(self, message)
        self.stage, self.kind, self.exit_code = stage, kind, exit_code


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--graph", help="path of the .tflite model")
    p.add_argument("--delegate", default="xnnpack", choices=DELEGATES,
                   help="cpu: built-in kernels without XNNPACK; xnnpack: the default delegate; "
                        "reference: reference kernels; gpu, nnapi, edgetpu: delegate libraries")
    p.add_argument("--delegate_option", action="append", default=[], metavar="KEY=VALUE",
                   help="option passed to a loaded delegate (e.g. device=usb:0 for edgetpu)")
    p.add_argument("--num_threads", type=int, default=1)
    p.add_argument("--warmup_runs", type=int, default=1)
    p.add_argument("--warmup_min_secs", type=float, default=0.5)
    p.add_argument("--num_runs", type=int, default=50)
    p.add_argument("--min_secs", type=float, default=1.0)
    p.add_argument("--max_secs", type=float, default=150.0)
    p.add_argument("--inputs", help=".npz whose array 'x' holds examples to run for accuracy")
    p.add_argument("--max_output_values", type=int, default=4_000_000,
                   help="above this many output values, return top-5 indices instead of tensors")
    p.add_argument("--runtime", choices=("auto",) + RUNTIMES, default="auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the random timing inputs")
    p.add_argument("--probe", action="store_true",
                   help="print the device's fingerprint, telemetry and runtime instead of measuring")
    p.add_argument("--edgetpu", action="store_true",
                   help="with --probe: also report the Edge TPU runtime and the Edge TPUs attached")
    p.add_argument("--telemetry", action="store_true",
                   help="print only temperatures and CPU frequencies (imports no runtime)")
    args = p.parse_args(argv)
    if not (args.probe or args.telemetry) and not args.graph:
        p.error("--graph is required unless --probe or --telemetry is given")
    if args.num_threads < 1 or args.num_runs < 1 or args.warmup_runs < 0:
        p.error("--num_threads and --num_runs must be >= 1, --warmup_runs >= 0")
    if args.max_secs <= 0 or args.min_secs < 0 or args.warmup_min_secs < 0:
        p.error("--max_secs must be > 0; --min_secs and --warmup_min_secs >= 0")
    return args


def load_runtime(preferred):
    """Return (name, version, module with Interpreter and load_delegate), first that imports."""
    errors = []
    for name in RUNTIMES if preferred == "auto" else (preferred,):
        try:
            if name == "ai_edge_litert":
                from ai_edge_litert import interpreter as mod
                version = _dist_version("ai-edge-litert")
            elif name == "tflite_runtime":
                from tflite_runtime import interpreter as mod
                import tflite_runtime
                version = getattr(tflite_runtime, "__version__", None) or _dist_version("tflite-runtime")
            else:
                import tensorflow as tf
                mod, version = tf.lite, tf.__version__
                mod.load_delegate = tf.lite.experimental.load_delegate
        except Exception as exc:  # ImportError, or a runtime that fails to load its library
            errors.append("%s: %s" % (name, exc))
            continue
        return name, version, mod
    raise RunnerFailure("import", "runtime_missing",
                        "no TFLite runtime imports (%s)" % "; ".join(errors), EXIT_NO_RUNTIME)


def _dist_version(dist):
    try:
        from importlib import metadata
        return metadata.version(dist)
    except Exception:
        return None


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def telemetry(root="/"):
    """Temperatures (degrees C) and current CPU frequencies (kHz), where the device shows them:
    every /sys/class/thermal zone (millidegrees), the Raspberry Pi firmware's `vcgencmd
    measure_temp` ("temp=48.3'C") where that tool exists, and each CPU's scaling_cur_freq."""
    zones = {}
    for zone in sorted(glob.glob(os.path.join(root, "sys/class/thermal/thermal_zone*"))):
        raw = _read(zone + "/temp")
        if raw and raw.lstrip("-").isdigit():
            zones["%s:%s" % (os.path.basename(zone), _read(zone + "/type") or "?")] = int(raw) / 1000.0
    vcgencmd = _which("vcgencmd") if root == "/" else None
    if vcgencmd:
        temp = parse_vcgencmd_temp(_output([vcgencmd, "measure_temp"]))
        if temp is not None:
            zones["vcgencmd"] = temp
    freqs = []
    for path in sorted(glob.glob(os.path.join(root, "sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"))):
        raw = _read(path)
        if raw and raw.isdigit():
            freqs.append(int(raw))
    return {"temp_c": max(zones.values()) if zones else None, "zones": zones,
            "freq_khz": freqs, "time_unix": time.time()}


def parse_vcgencmd_temp(text):
    """48.3 from "temp=48.3'C" (what `vcgencmd measure_temp` prints); None otherwise."""
    text = (text or "").strip()
    if not text.startswith("temp="):
        return None
    try:
        return float(text[5:].rstrip("C").rstrip("'").rstrip("\u00b0"))
    except ValueError:
        return None


def _which(name):
    import shutil
    return shutil.which(name)


def _output(argv):
    import subprocess
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def fingerprint():
    uname = platform.uname()
    cpu_model, hardware = None, None
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "processor") and not cpu_model and not value.strip().isdigit():
            cpu_model = value.strip()
        elif key == "hardware":
            hardware = value.strip()
    os_name = None
    for line in (_read("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            os_name = line.split("=", 1)[1].strip('"')
    model = _read("/proc/device-tree/model")
    return {
        "serial": hardware_serial(), "machine_id": _read("/etc/machine-id") or _read("/var/lib/dbus/machine-id"),
        "machine": uname.machine, "system": uname.system, "kernel": uname.release,
        "os": os_name or "%s %s" % (uname.system, uname.release),
        "cpu_model": cpu_model or hardware or uname.processor or None,
        "cores": os.cpu_count(), "device_model": model.rstrip("\x00") if model else None,
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "hostname": uname.node, "python": platform.python_version(),
    }


def hardware_serial():
    """The board's own serial number where the system shows it: the device tree's (Raspberry Pi,
    Jetson, Coral Dev Board), /proc/cpuinfo's `Serial` line (older Pi kernels), or the firmware's
    product UUID / serial (x86; readable by root only). None elsewhere."""
    tree = _read("/proc/device-tree/serial-number")
    if tree and tree.rstrip("\x00").strip("0"):
        return tree.rstrip("\x00")
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "serial" and value.strip().strip("0"):
            return value.strip()
    for name in ("product_uuid", "product_serial", "board_serial"):
        value = _read("/sys/class/dmi/id/" + name)
        if value and value.strip("0-") and value.lower() not in ("none", "not specified", "default string"):
            return value
    return None


def rss_mb(field="VmRSS"):
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return None


def peak_rss_mb():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def make_interpreter(rt, args):
    mod = rt[2]
    kwargs = {"model_path": args.graph, "num_threads": args.num_threads}
    resolver = getattr(mod, "OpResolverType", None)
    if args.delegate in ("cpu", "reference"):
        if resolver is None:
            raise RunnerFailure("load", "delegate_unavailable",
                                "runtime %s cannot choose its kernels (no OpResolverType)" % rt[0],
                                EXIT_NO_DELEGATE)
        kwargs["experimental_op_resolver_type"] = (resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
                                                   if args.delegate == "cpu" else resolver.BUILTIN_REF)
    elif args.delegate == "edgetpu":
        return edgetpu_interpreter(mod, args)
    elif args.delegate in ("gpu", "nnapi"):
        library = GPU_LIBRARY.get(platform.system())
        if args.delegate == "nnapi" or library is None:
            raise RunnerFailure("load", "delegate_unavailable", "the %s delegate is not available on %s"
                                % (args.delegate, platform.system()), EXIT_NO_DELEGATE)
        options = dict(o.split("=", 1) for o in args.delegate_option)
        try:
            kwargs["experimental_delegates"] = [mod.load_delegate(library, options)]
        except (ValueError, OSError, RuntimeError) as exc:
            raise RunnerFailure("load", "delegate_unavailable",
                                "cannot load %s: %s" % (library, exc), EXIT_NO_DELEGATE)
    try:
        interpreter = mod.Interpreter(**kwargs)
    except (ValueError, RuntimeError) as exc:
        raise RunnerFailure("load", "model_error", str(exc), EXIT_MODEL)
    return allocate(interpreter)


def allocate(interpreter):
    try:
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise RunnerFailure("allocate", "model_error", str(exc), EXIT_MODEL)
    return interpreter


def _pycoral_edgetpu():
    """Coral's pycoral.utils.edgetpu, or None (PyPI's unrelated `pycoral` has no such module)."""
    try:
        from pycoral.utils import edgetpu
    except ImportError:
        return None
    return edgetpu


def _load_library(library):
    """(ctypes handle, None) or (None, why it does not load)."""
    import ctypes
    try:
        return ctypes.CDLL(library), None
    except OSError as exc:
        return None, str(exc)


def edgetpu_interpreter(mod, args):
    """The model on an Edge TPU: pycoral's make_interpreter where pycoral is installed (it pairs
    libedgetpu with its own tflite_runtime), else libedgetpu loaded as a delegate of this runtime,
    with the device string (usb, usb:N, pci, pci:N) as its `device` option."""
    options = dict(o.split("=", 1) for o in args.delegate_option)
    edgetpu = _pycoral_edgetpu()
    if edgetpu is not None:
        try:
            interpreter = edgetpu.make_interpreter(args.graph, device=options.get("device"))
        except (ValueError, RuntimeError, OSError) as exc:
            raise RunnerFailure("load", "delegate_unavailable",
                                "pycoral cannot open the Edge TPU %s: %s" % (options.get("device") or "", exc),
                                EXIT_NO_DELEGATE)
        return allocate(interpreter)
    library = EDGETPU_LIBRARY.get(platform.system())
    if library is None:
        raise RunnerFailure("load", "delegate_unavailable", "no Edge TPU runtime exists for %s"
                            % platform.system(), EXIT_NO_DELEGATE)
    handle, why = _load_library(library)
    if handle is None:
        raise RunnerFailure("load", "edgetpu_runtime_missing",
                            "no Edge TPU runtime: %s does not load (%s) and pycoral is not installed"
                            % (library, why), EXIT_NO_RUNTIME)
    try:
        delegate = mod.load_delegate(library, options)
    except (ValueError, OSError, RuntimeError) as exc:
        found = list_edge_tpus(handle)
        raise RunnerFailure("load", "delegate_unavailable", "%s loads but the Edge TPU %s cannot be opened (%s); "
                            "Edge TPUs found: %s" % (library, options.get("device") or "(first)", exc,
                                                     ", ".join("%s:%s" % (t["type"], t["path"]) for t in found)
                                                     or "none"), EXIT_NO_DELEGATE)
    try:
        interpreter = mod.Interpreter(model_path=args.graph, num_threads=args.num_threads,
                                      experimental_delegates=[delegate])
    except (ValueError, RuntimeError) as exc:
        raise RunnerFailure("load", "model_error", str(exc), EXIT_MODEL)
    return allocate(interpreter)


def list_edge_tpus(handle=None):
    """Attached Edge TPUs as pycoral lists them, [{"type": "usb"|"pci", "path": ...}]: from
    libedgetpu's C API (edgetpu_list_devices) when the library loads, else from sysfs (a Coral
    USB Accelerator's vendor:product ids) and /dev/apex_* (the PCIe driver's nodes)."""
    if handle is not None:
        try:
            return _list_with_library(handle)
        except (AttributeError, OSError):
            pass
    found = []
    for dev in sorted(glob.glob("/sys/bus/usb/devices/*")):
        if (_read(dev + "/idVendor"), _read(dev + "/idProduct")) in EDGETPU_USB_IDS:
            found.append({"type": "usb", "path": dev})
    found += [{"type": "pci", "path": p} for p in sorted(glob.glob("/dev/apex_*"))]
    return found


def _list_with_library(handle):
    import ctypes

    class EdgeTpuDevice(ctypes.Structure):  # edgetpu_c.h: struct edgetpu_device {type, path}
        _fields_ = [("type", ctypes.c_int), ("path", ctypes.c_char_p)]

    count = ctypes.c_size_t(0)
    handle.edgetpu_list_devices.restype = ctypes.POINTER(EdgeTpuDevice)
    devices = handle.edgetpu_list_devices(ctypes.byref(count))
    found = [{"type": "pci" if devices[i].type == 0 else "usb", "path": devices[i].path.decode()}
             for i in range(count.value)]
    if devices:
        handle.edgetpu_free_devices(devices)
    return found


def edgetpu_probe():
    """What this host has for an Edge TPU: pycoral, the library, its version, the TPUs attached."""
    library = EDGETPU_LIBRARY.get(platform.system())
    info = {"library": library, "library_loads": False, "library_error": None, "pycoral": None,
            "runtime_version": None, "tpus": []}
    edgetpu = _pycoral_edgetpu()
    if edgetpu is not None:
        import pycoral
        info["pycoral"] = getattr(pycoral, "__version__", None) or "installed"
        try:
            info["runtime_version"] = edgetpu.get_runtime_version()
            info["tpus"] = list(edgetpu.list_edge_tpus())
        except (RuntimeError, OSError, ValueError) as exc:
            info["library_error"] = str(exc)
        return info
    handle, info["library_error"] = _load_library(library) if library else (None, "no library for this system")
    if handle is not None:
        info["library_loads"] = True
        try:
            import ctypes
            handle.edgetpu_version.restype = ctypes.c_char_p
            info["runtime_version"] = handle.edgetpu_version().decode()
        except (AttributeError, OSError):
            pass
    info["tpus"] = list_edge_tpus(handle)
    return info


def coverage(interpreter):
    """Nodes delegated / total. A DELEGATE node's inputs bound its partition: walking back from
    its outputs to those inputs finds exactly the original nodes it replaced."""
    try:
        ops = interpreter._get_ops_details()
    except Exception:
        return None
    originals = [o for o in ops if o["op_name"] != "DELEGATE"]
    producer = {int(t): o["index"] for o in originals for t in o["outputs"]}
    replaced = set()
    partitions = 0
    for node in ops:
        if node["op_name"] != "DELEGATE":
            continue
        partitions += 1
        boundary = set(int(t) for t in node["inputs"])
        stack, seen = [int(t) for t in node["outputs"]], set()
        while stack:
            tensor = stack.pop()
            if tensor in boundary or tensor in seen:
                continue
            seen.add(tensor)
            index = producer.get(tensor)
            if index is not None and index not in replaced:
                replaced.add(index)
                stack.extend(int(t) for t in ops[index]["inputs"] if t >= 0)
    left = {}
    for o in originals:
        if o["index"] not in replaced:
            left[o["op_name"]] = left.get(o["op_name"], 0) + 1
    return {"nodes_total": len(originals), "nodes_delegated": len(replaced),
            "partitions": partitions, "undelegated_ops": left}


def tensor_spec(detail):
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return {"name": detail["name"], "shape": [int(d) for d in detail["shape"]],
            "dtype": detail["dtype"].__name__, "scale": float(scale), "zero_point": int(zero_point)}


def random_input(np, rng, detail):
    shape, dtype = detail["shape"], detail["dtype"]
    if dtype in (np.float32, np.float16, np.float64):
        return rng.random(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape).astype(dtype)
    raise RunnerFailure("inputs", "model_error", "cannot make a random %s input" % dtype.__name__, EXIT_MODEL)


def quantize(np, x, detail):
    dtype = detail["dtype"]
    scale, zero_point = detail["quantization"]
    if dtype in (np.float32, np.float16):
        return x.astype(dtype)
    if not scale:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(np, y, detail):
    scale, zero_point = detail["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32)


def timed_loop(invoke, min_runs, min_secs, max_secs):
    """benchmark_model's loop: at least min_runs and min_secs; no run starts after max_secs."""
    samples = []
    clock = time.perf_counter_ns
    start = clock()
    limit_min, limit_max = min_secs * 1e9, max_secs * 1e9
    while True:
        t0 = clock()
        invoke()
        t1 = clock()
        samples.append((t1 - t0) / 1000.0)
        elapsed = t1 - start
        if elapsed >= limit_max or (len(samples) >= min_runs and elapsed >= limit_min):
            return samples, elapsed / 1e9


def example_outputs(np, interpreter, x):
    """Output 0 (dequantized, flattened) for each example of x, run one by one: (N, values)."""
    inp = interpreter.get_input_details()
    out = interpreter.get_output_details()[0]
    if len(inp) != 1:
        raise ValueError("accuracy needs a single-input model; this one has %d inputs" % len(inp))
    inp = inp[0]
    if tuple(x.shape[1:]) != tuple(int(d) for d in inp["shape"][1:]):
        raise ValueError("examples have shape %s, the model's input is %s"
                         % (list(x.shape[1:]), [int(d) for d in inp["shape"]]))
    rows = []
    for example in x:
        interpreter.set_tensor(inp["index"], quantize(np, example[None], inp))
        interpreter.invoke()
        rows.append(dequantize(np, interpreter.get_tensor(out["index"]), out).reshape(-1))
    return np.stack(rows)


def run_examples(np, interpreter, path, max_values):
    """Run the .npz's examples; return output 0 compactly for the host to score."""
    return outputs_block(np, example_outputs(np, interpreter, np.load(path)["x"]), max_values)


def outputs_block(np, y, max_values):
    """Outputs y (N, values) as the accuracy block the host scores: every value, or past
    `max_values` only each example's top-5 class indices."""
    if y.size <= max_values:
        return {"count": len(y), "shape": list(y.shape), "encoding": "float32-le-base64",
                "data": base64.b64encode(y.astype("<f4").tobytes()).decode("ascii")}
    top5 = np.argsort(-y, axis=1)[:, :5].astype("<i4")
    return {"count": len(y), "shape": list(top5.shape), "encoding": "top5-int32-le-base64",
            "data": base64.b64encode(top5.tobytes()).decode("ascii")}


def measure(args, report):
    try:
        import numpy as np
    except ImportError as exc:
        raise RunnerFailure("import", "runtime_missing", "numpy does not import (%s)" % exc, EXIT_NO_RUNTIME)
    report["numpy"] = np.__version__
    rt = load_runtime(args.runtime)
    report["runtime"] = {"name": rt[0], "version": rt[1]}
    report["rss_before_mb"] = rss_mb()
    report["model"] = {"path": args.graph, "bytes": os.path.getsize(args.graph)}
    t0 = time.perf_counter_ns()
    interpreter = make_interpreter(rt, args)
    report["init_us"] = (time.perf_counter_ns() - t0) / 1000.0
    if args.delegate == "edgetpu":  # the first invoke also loads the model into the TPU's memory
        options = dict(o.split("=", 1) for o in args.delegate_option)
        report["edgetpu"] = {"api": "pycoral" if _pycoral_edgetpu() else "libedgetpu",
                             "device": options.get("device")}
    report["rss_after_init_mb"] = rss_mb()
    report["coverage"] = cov = coverage(interpreter)
    if args.delegate == "xnnpack" and cov is not None and cov["partitions"] == 0:
        report["warnings"].append("XNNPACK was requested but the runtime applied no delegate")
    inputs = interpreter.get_input_details()
    report["inputs"] = [tensor_spec(d) for d in inputs]
    report["outputs"] = [tensor_spec(d) for d in interpreter.get_output_details()]
    rng = np.random.default_rng(args.seed)
    for detail in inputs:
        interpreter.set_tensor(detail["index"], random_input(np, rng, detail))
    invoke = interpreter.invoke
    try:
        t0 = time.perf_counter_ns()
        invoke()
        report["first_inference_us"] = (time.perf_counter_ns() - t0) / 1000.0
        warm, warm_s = timed_loop(invoke, args.warmup_runs, args.warmup_min_secs, args.max_secs) \
            if args.warmup_runs or args.warmup_min_secs else ([], 0.0)
        report["warmup"] = {"runs": len(warm), "seconds": warm_s,
                            "avg_us": sum(warm) / len(warm) if warm else None}
        samples, seconds = timed_loop(invoke, args.num_runs, args.min_secs, args.max_secs)
    except (ValueError, RuntimeError) as exc:
        raise RunnerFailure("invoke", "model_error", str(exc), EXIT_MODEL)
    report["samples_us"] = samples
    report["timed_seconds"] = seconds
    report["peak_rss_mb"] = peak_rss_mb()
    report["telemetry"]["after"] = telemetry()
    if args.inputs:
        try:
            report["accuracy"] = run_examples(np, interpreter, args.inputs, args.max_output_values)
        except (ValueError, RuntimeError, OSError, KeyError) as exc:
            report["accuracy"] = {"error": "%s: %s" % (type(exc).__name__, exc)}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Runtimes may print to stdout; the JSON object must be the only thing there.
    json_out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    report = {"schema_version": SCHEMA_VERSION, "tool": "harness-runner", "python": platform.python_version(),
              "warnings": [], "error": None, "telemetry": {"before": telemetry()}}
    code = EXIT_OK
    if args.telemetry:
        pass
    elif args.probe:
        report["fingerprint"] = fingerprint()
        try:
            rt = load_runtime(args.runtime)
            report["runtime"] = {"name": rt[0], "version": rt[1]}
        except RunnerFailure as exc:
            report["runtime"] = None
            report["runtime_error"] = str(exc)
            report["install_hint"] = INSTALL_HINT
        if args.edgetpu:
            report["edgetpu"] = edgetpu_probe()
    else:
        report.update(delegate=args.delegate, num_threads=args.num_threads, accuracy=None, protocol={
            k: getattr(args, k) for k in ("warmup_runs", "warmup_min_secs", "num_runs", "min_secs", "max_secs")})
        try:
            measure(args, report)
        except RunnerFailure as exc:
            report["error"] = {"stage": exc.stage, "kind": exc.kind, "message": str(exc)}
            if exc.kind == "runtime_missing":
                report["install_hint"] = INSTALL_HINT
            elif exc.kind == "edgetpu_runtime_missing":
                report["install_hint"] = EDGETPU_INSTALL_HINT
            code = exc.exit_code
        except OSError as exc:
            report["error"] = {"stage": "load", "kind": "model_error", "message": str(exc)}
            code = EXIT_MODEL
    json_out.write(json.dumps(report, separators=(",", ":")) + "\n")
    json_out.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
