"""The build worker: `python -m harness.worker REQUEST.json` makes one model's missing artifacts.

It is the only process that imports TensorFlow. It runs apart from the sweep so that TensorFlow's
memory and noise stay out of it, and so that a converter that aborts or segfaults costs one
variant, not the sweep: the parent sees which variant was in progress and records it as failed.

Each event is one JSON line on stdout: {"event": "log"|"start"|"done", ...}. stderr (TensorFlow's
logging) goes to the cache's log file."""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

import models
from harness.artifacts import Cache, conversion_versions
from harness.errors import ConfigError
from harness.variants import VARIANTS
from models.user_data import spec_from_json

MAX_REASON_CHARS = 600
EXIT_REFUSED = 3


def emit(**event) -> None:
    print(json.dumps(event), flush=True)


def refuse(exc: ConfigError) -> int:
    """The plan cannot be built as given: the coordinator raises this as its error (exit 2)."""
    emit(event="refused", source=exc.source, key=exc.key, message=exc.message)
    return EXIT_REFUSED


def short_reason(exc: BaseException) -> str:
    """The converter's message, trimmed: the lines that say what went wrong, not the MLIR dump."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    wanted = [line for line in lines if "error" in line.lower()] or lines
    text = f"{type(exc).__name__}: " + " | ".join(dict.fromkeys(wanted))
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


class Builder:
    def __init__(self, request: dict):
        from harness.tfenv import import_tf, import_tfmot

        self.tf, self.keras = import_tf()
        self.tfmot = import_tfmot()
        entry = request["entry"]
        data = spec_from_json(entry["data"]) if entry.get("data") else None
        self.source = models.resolve(entry["name"], entry["kind"], entry.get("zoo"),
                                     Path(entry["path"]) if entry.get("path") else None, data,
                                     entry.get("plan", ""), entry.get("where", ""), entry.get("weights"))
        self.cache = Cache(request["cache"])
        self.source_key = request["source_key"]
        self._representative = self._fine_tune = self._pruned = None

    def log(self, message: str) -> None:
        emit(event="log", message=message)

    def load_source(self):
        workdir = self.cache.source_dir(self.source_key)
        self.model = self.source.keras_model(workdir, self.log)

    def load_data(self, variants) -> None:
        """The evaluation set, and the calibration and fine-tuning data the variants need, loaded
        before any conversion: data that does not fit the model is refused before anything is built."""
        eval_path = self.cache.eval_path(self.source_key)
        if not eval_path.exists():
            eval_path.parent.mkdir(parents=True, exist_ok=True)
            self.source.eval_set(self.model).save(eval_path)
        if getattr(self.source, "spec", None) is None:  # the zoo's own data: loaded when a variant needs it
            return
        recipes = [VARIANTS[v] for v in variants]
        if any(r.representative for r in recipes):
            self.representative()
        if any(r.train for r in recipes) and self.model is not None:
            self.fine_tune_data()

    def representative(self):
        if self._representative is None:
            self._representative = self.source.representative(self.model)
        return self._representative

    def fine_tune_data(self):
        if self._fine_tune is None:
            self._fine_tune = self.source.fine_tune(self.model)
        return self._fine_tune

    def variant(self, name: str) -> tuple[bytes, dict]:
        from harness.convert import convert
        from harness.optimize import prune, quantization_aware

        recipe = VARIANTS[name]
        model, info = self.model, {}
        if recipe.train == "prune":
            if self._pruned is None:  # pruned and pruned_dynamic share one fine-tune
                self._pruned = prune(self.tf, self.keras, self.tfmot, self.model, self.fine_tune_data())
            model, info = self._pruned
            self.log(f"{self.source.name}/{name}: pruned to {info['sparsity']:.1%} sparsity "
                     f"({info['steps']} steps, masks every {info['schedule']['frequency']})")
        elif recipe.train == "qat":
            model = quantization_aware(self.tf, self.keras, self.tfmot, self.model, self.fine_tune_data())
        if recipe.train:
            info["fine_tune_examples"] = len(self.fine_tune_data().x)
        converter = self.source.converter(self.tf, model)
        representative = self.representative() if recipe.representative else None
        if representative is not None:
            info["calibration_examples"] = len(representative)
        return convert(self.tf, converter, recipe, representative), info


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    builder = Builder(request)
    name = builder.source.name
    try:
        builder.load_source()
        source_failure = None
    except ConfigError as exc:  # trained weights this machine cannot fetch: the plan is refused (exit 2)
        return refuse(exc)
    except Exception as exc:  # a source that cannot be loaded fails every variant, with its reason
        traceback.print_exc()
        source_failure = f"cannot load the source model: {short_reason(exc)}"
    if source_failure is None:
        try:
            builder.load_data(request["variants"])
        except ConfigError as exc:  # the user's data does not fit the model: the plan is refused (exit 2)
            return refuse(exc)
        except Exception as exc:
            traceback.print_exc()
            source_failure = f"cannot load the evaluation or training data: {short_reason(exc)}"
    for variant, key in request["variants"].items():
        emit(event="start", variant=variant)
        started = time.monotonic()
        meta = {"model": name, "variant": variant, "recipe": VARIANTS[variant].key(),
                "versions": conversion_versions(), "source_key": builder.source_key,
                "full_integer": VARIANTS[variant].full_integer}
        data = None
        if source_failure:
            meta.update(status="failed", reason=source_failure)
        else:
            try:
                data, info = builder.variant(variant)
                meta.update(status="ok", **info)
            except Exception as exc:  # every converter/tfmot failure is the variant's stored reason
                traceback.print_exc()
                meta.update(status="failed", reason=short_reason(exc))
        meta["seconds"] = time.monotonic() - started
        builder.cache.write_artifact(key, meta, data)
        emit(event="done", variant=variant, status=meta["status"], seconds=meta["seconds"],
             reason=meta.get("reason"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
