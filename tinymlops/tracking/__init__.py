"""MLflow: the only package that calls it. Names in names.py, one run in tracker.py, the model
registry in registry.py. Importing it loads neither MLflow nor TensorFlow."""

from tinymlops.tracking.names import Alias, Artifact, Metric, Param, Tag, VersionTag
from tinymlops.tracking.registry import Registry, download_alias, download_candidate, run_url, ui_command
from tinymlops.tracking.tracker import Tracker

__all__ = [
    "Alias",
    "Artifact",
    "Metric",
    "Param",
    "Registry",
    "Tag",
    "Tracker",
    "VersionTag",
    "download_alias",
    "download_candidate",
    "run_url",
    "ui_command",
]
