"""The user's own labelled data (issue 17): a model's `data:` block parsed at the plan's boundary,
its splits loaded and preprocessed for the model, checked against its input and output, and
hashed for the cache. numpy, Pillow and PyYAML-level Python only: no TensorFlow, so a plan with
data is validated and its cache key computed without the 600 MB import."""

from __future__ import annotations

from data.hashing import content_sha256, spec_key
from data.keras_modes import KERAS_MODES
from data.listing import IMAGE_EXTENSIONS
from data.load import Split, check_labels, check_split_alone, load_for_model, load_split
from data.spec import KINDS, DataSource, DataSpec, Preprocess, check_metric, parse_data, resolve_metric

__all__ = ["IMAGE_EXTENSIONS", "KERAS_MODES", "KINDS", "DataSource", "DataSpec", "Preprocess", "Split",
           "check_labels", "check_metric", "check_split_alone", "content_sha256", "load_for_model", "load_split", "parse_data", "resolve_metric",
           "spec_key"]
