"""Turn the plan's models into artifacts: look every variant up in the cache, hand what is missing
to the build worker (a subprocess with TensorFlow), and record a converter crash as that
variant's failure. Also prepares what accuracy needs: the evaluation set and the fp32 outputs
computed on the host (the reference for fidelity)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

import models
from devices.base import sha256_file
from harness.artifacts import Artifact, Cache, source_key, variant_key
from harness.config import ModelEntry, Plan
from harness.config_checks import clip, model_contents, show_path
from harness.edgetpu import Compiled, inspect_tflite
from harness.errors import ConfigError
from harness.provenance import PROJECT_ROOT
from harness.variants import GIVEN, VARIANTS
from models.user_data import spec_to_json

Log = Callable[[str], None]


@dataclass
class ModelBuild:
    name: str
    labeled: bool
    artifacts: dict[str, Artifact]
    eval_path: Path | None = None
    eval_sha256: str | None = None
    labels: np.ndarray | None = None
    reference: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    compiled: dict[str, Compiled] = field(default_factory=dict)  # variant -> its Edge TPU compilation
    top_k: int = 5
    metric: Callable | None = None  # the user's metric (`data.metric`), called with labels and outputs

    def use_eval(self, path: Path, sha256: str) -> None:
        """The eval set the devices run (a whole cache file), with its labels when it has them."""
        self.eval_path, self.eval_sha256 = path, sha256
        with np.load(path) as data:
            self.labels = data["labels"] if "labels" in data else None
        self.labeled = self.labels is not None


@dataclass
class BuildSummary:
    cached: int = 0
    converted: int = 0
    failed: int = 0
    worker_runs: int = 0


def build_models(plan: Plan, cache: Cache, log: Log) -> tuple[dict[str, ModelBuild], BuildSummary]:
    summary = BuildSummary()
    builds = {}
    for i, entry in enumerate(plan.models):
        if entry.kind == "tflite":
            full_integer, precompiled = inspect_tflite(entry.path)
            artifact = Artifact.from_file(entry.name, GIVEN, entry.path, full_integer, precompiled)
            build = ModelBuild(entry.name, False, {GIVEN: artifact})
            if entry.data is not None and entry.data.eval is not None:
                _given_eval(build, entry, cache, plan.source, f"models[{i}]")
            else:
                build.notes.append("a given .tflite: no reference to score accuracy against")
        else:
            build = _build_keras(entry, cache, plan, f"models[{i}]", log, summary)
        if entry.data is not None:
            build.top_k = entry.data.top_k or build.top_k
            if entry.data.metric:
                build.metric = load_metric(entry.data.metric, plan.source, f"models[{i}].data.metric")
        builds[entry.name] = build
    for build in builds.values():
        for note in build.notes:
            log(f"{build.name}: {note}")
    return builds, summary


def _given_eval(build: ModelBuild, entry: ModelEntry, cache: Cache, plan_source: str, where: str) -> None:
    """A given .tflite with the user's eval split: the split, preprocessed for the model's input and
    saved in the cache by its content hash, is what the devices run; no fp32 to compare with."""
    from data import load_for_model, spec_key
    from models.base import EvalSet

    key = source_key({"tflite": sha256_file(entry.path), "data": spec_key(entry.data)})
    path = cache.eval_path(key)
    sha256 = cache.whole(path)
    if sha256 is None:
        split = load_for_model(entry.data, "eval", *tflite_io(entry.path), plan_source, f"{where}.data")
        path.parent.mkdir(parents=True, exist_ok=True)
        EvalSet(split.x, split.y, split.description).save(path)
        sha256 = cache.seal(path)
    build.use_eval(path, sha256)
    build.notes.append("a given .tflite: no fp32 to measure fidelity against; accuracy from the eval data")


def tflite_io(path: Path) -> tuple[tuple[int, ...], int]:
    """(input shape without batch, output units) of a .tflite, read by LiteRT without running it."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    shape = tuple(int(d) for d in interpreter.get_input_details()[0]["shape"][1:])
    return shape, int(interpreter.get_output_details()[0]["shape"][-1])


def load_metric(entry_point: str, plan_source: str, where: str) -> Callable:
    """The user's metric function from `package.module:function`, importable from the plan's folder."""
    from data import resolve_metric

    return resolve_metric(entry_point, Path(plan_source).resolve().parent, plan_source, where)


def _keys(entry: ModelEntry, plan_source: str = "", where: str = "") -> tuple[object, str, dict[str, str]]:
    """(the model's source, its cache key, the cache key of each variant it needs)."""
    source = models.resolve(entry.name, entry.kind, entry.zoo, entry.path, entry.data, plan_source, where,
                            entry.weights)
    skey = source_key(source.key_material())
    wanted = tuple(dict.fromkeys(("fp32", *entry.variants)))  # fp32 is the fidelity reference
    return source, skey, {v: variant_key(skey, VARIANTS[v]) for v in wanted}


def require_converter(plan: Plan, cache: Cache) -> None:
    """Before anything runs: a plan that needs a conversion the cache does not hold, on a Python
    without TensorFlow, is refused (naming the first such model), rather than failing every variant."""
    import importlib.util

    try:  # asked first: with TensorFlow there (the usual case) no cache entry need be read here
        if all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tf_keras")):
            return
    except (ImportError, ValueError):
        pass
    for i, entry in enumerate(plan.models):
        if entry.kind == "tflite":
            continue
        _, skey, keys = _keys(entry, plan.source, f"models[{i}]")
        if all(cache.read_artifact(k) is not None for k in keys.values()) and cache.eval_path(skey).exists():
            continue
        raise ConfigError(plan.source, f"models[{i}]", f"{entry.name} must be converted and this Python "
                          f"({sys.executable}) has no TensorFlow: install the harness's dependencies "
                          "(pip install -c constraints.txt -e .), or give a .tflite file")


def check_model_files(plan: Plan) -> None:
    """Before anything is built or measured: each model file holds what its kind needs. A .tflite's
    FlatBuffer is verified by LiteRT (building an Interpreter verifies the buffer, allocates nothing:
    about 0.1 s to import LiteRT once, under 1 ms per model); a .keras or SavedModel as far as can be
    known without TensorFlow (harness/config_checks.py model_contents)."""
    for i, entry in enumerate(plan.models):
        where = f"models[{i}].path"
        if entry.kind == "tflite":
            verify_tflite(entry.path, plan.source, where)
        elif entry.kind in ("keras", "saved_model"):
            model_contents(entry.kind, entry.path, plan.source, where)


def verify_tflite(path: Path, plan_source: str, where: str) -> None:
    """A .tflite whose FlatBuffer LiteRT's verifier refuses (cut short, bytes flipped) is the plan's
    refusal, not a cell that fails to load on every device."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the runner falls back to tflite_runtime or tf.lite: they verify when loading
        return
    try:
        Interpreter(model_path=str(path))
    except ValueError as exc:
        raise ConfigError(plan_source, where, f"{show_path(path)} is not a valid TFLite model "
                          f"(LiteRT: {clip(str(exc))!r}; cut short or corrupted?)") from None


def check_data(plan: Plan, cache: Cache) -> None:
    """Before anything is trained or converted: a model's `data:` splits are loaded as far as the
    model is known without TensorFlow (a zoo model's input shape and outputs are in its definition;
    a Keras file's are not, so its arrays are checked alone), so a split the build would refuse is
    refused before minutes of training. Only where the build worker will run: with every variant
    and the eval set cached, the data was checked when they were built (its hash is in their key)."""
    for i, entry in enumerate(plan.models):
        if entry.kind == "tflite" or entry.data is None:
            continue  # a given .tflite's eval split is loaded (and checked) before anything is measured
        source, skey, keys = _keys(entry, plan.source, f"models[{i}]")
        if all(cache.read_artifact(k) is not None for k in keys.values()) and cache.eval_path(skey).exists():
            continue
        source.check_data()


def _build_keras(entry: ModelEntry, cache: Cache, plan: Plan, where: str, log: Log,
                 summary: BuildSummary) -> ModelBuild:
    source, skey, keys = _keys(entry, plan.source, where)
    timeout_s = plan.timeouts.convert_timeout_s
    wanted = tuple(keys)
    cache.check_source(skey)  # before anything is read from it: a damaged file is made again
    missing = {v: k for v, k in keys.items() if cache.read_artifact(k) is None}
    eval_path = cache.eval_path(skey)
    crashes: dict[str, str] = {}
    if missing or not eval_path.exists():
        crashes = _run_worker(entry, skey, missing, cache, timeout_s, log, plan.source, where)
        cache.seal_source(skey)
        summary.worker_runs += 1
    else:
        log(f"{entry.name}: all {len(wanted)} variants from cache, nothing to convert or train")
    artifacts = {}
    for variant in wanted:
        artifact = cache.read_artifact(keys[variant])
        if artifact is None:
            artifact = Artifact(entry.name, variant, "failed", reason=crashes.get(variant, "not built"))
        elif variant in missing:
            artifact = replace(artifact, cached=False)
        artifacts[variant] = artifact
        if variant in entry.variants:
            summary.cached += artifact.cached
            summary.converted += artifact.status == "ok" and not artifact.cached
            summary.failed += artifact.status == "failed"
    build = ModelBuild(entry.name, False, artifacts)
    eval_sha256 = cache.whole(eval_path)
    if eval_sha256 is not None:
        build.use_eval(eval_path, eval_sha256)
        fp32 = artifacts["fp32"]
        if fp32.status == "ok":
            reference = host_reference(cache, fp32, eval_path, build.eval_sha256)
            flat = reference.reshape(len(reference), -1)
            # the same outputs for every example, or every row uniform (an untrained softmax)
            if flat.size == 0 or np.ptp(flat, axis=0).max() == 0.0 or flat.shape[1] > 1 and np.ptp(flat, axis=1).max() == 0.0:
                build.notes.append("fp32 outputs are constant over the evaluation set: fidelity would "
                                   "measure nothing, so none is reported")
            else:
                build.reference = reference
        else:
            build.notes.append("fp32 failed: no reference for fidelity")
    return build


def _run_worker(entry: ModelEntry, skey: str, variants: dict[str, str], cache: Cache, timeout_s: float,
                log: Log, plan_source: str = "", where: str = "") -> dict[str, str]:
    """Run the build worker until every variant is attempted; returns crash reasons by variant."""
    crashes: dict[str, str] = {}
    pending = dict(variants)
    log_path = cache.log_path(skey)
    request_path = log_path.with_suffix(".request.json")
    while True:  # once, and again after a crash for the variants not yet attempted
        request = {"entry": {"name": entry.name, "kind": entry.kind, "zoo": entry.zoo,
                             "path": str(entry.path) if entry.path else None,
                             "data": spec_to_json(entry.data) if entry.data is not None else None,
                             "plan": plan_source, "where": where, "weights": entry.weights},
                   "source_key": skey, "variants": pending, "cache": str(cache.root)}
        request_path.write_text(json.dumps(request, indent=1))
        started, finished, code, timed_out = _worker_once(entry.name, request_path, log_path, timeout_s, log)
        for variant in finished:
            pending.pop(variant, None)
        if code == 0 or not pending:
            break
        tail = " | ".join(_tail(log_path, 3))
        how = f"ran past convert_timeout_s={timeout_s:g}" if timed_out else _exit_text(code)
        in_progress = [v for v in started if v not in finished]
        if in_progress:  # the variant being converted when the worker died gets the blame
            crashes[in_progress[0]] = f"build worker {how} while converting {in_progress[0]} ({log_path}): {tail}"
            pending.pop(in_progress[0], None)
        if timed_out or not in_progress:  # no progress possible: fail the rest with the same cause
            for variant in pending:
                crashes[variant] = f"not built: build worker {how} ({log_path}): {tail}"
            break
        if not pending:
            break
        log(f"{entry.name}: {crashes[in_progress[0]]}; retrying the remaining {len(pending)} variants")
    return crashes


def _worker_once(model: str, request_path: Path, log_path: Path, timeout_s: float, log: Log):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    started, finished = [], []
    refused = None
    with open(log_path, "ab") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "harness.worker", str(request_path)], stdout=subprocess.PIPE,
                                stderr=stderr, stdin=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        try:
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if event.get("event") == "log":
                    log(event["message"])
                elif event.get("event") == "start":
                    started.append(event["variant"])
                    log(f"{model}/{event['variant']}: converting")
                elif event.get("event") == "refused":  # the user's data does not fit the model
                    refused = ConfigError(event["source"], event["key"], event["message"])
                elif event.get("event") == "done":
                    finished.append(event["variant"])
                    what = (f"converted in {event['seconds']:.1f} s" if event["status"] == "ok"
                            else f"FAILED: {event['reason']}")
                    log(f"{model}/{event['variant']}: {what}")
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if refused is not None:
        raise refused
    return started, finished, code, timed_out.is_set()


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _tail(path: Path, lines: int) -> list[str]:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return []
    return [line.strip() for line in text[-lines:]]


def host_reference(cache: Cache, fp32: Artifact, eval_path: Path, eval_sha256: str) -> np.ndarray:
    """fp32 outputs on the eval set, computed on this host with LiteRT's built-in kernels; cached."""
    path = cache.reference_path(fp32.sha256, eval_sha256)
    if cache.whole(path) is not None:
        return np.load(path)
    from devices import runner
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(fp32.path), num_threads=1,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    with np.load(eval_path) as data:
        outputs = runner.example_outputs(np, interpreter, data["x"]).astype(np.float32)
    cache.keep_array(path, outputs)
    return outputs
