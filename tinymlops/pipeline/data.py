"""The data stages (ingest, validate, split): light, so `tinymlops data …` never loads TensorFlow."""

from __future__ import annotations

from pathlib import Path

from tinymlops.ml.data import registry, split, validate
from tinymlops.settings import PipelineParams


def ingest(params: PipelineParams, root: Path, raw_dir: Path) -> Path:
    return registry.ingest(params.data, root, raw_dir)


def validate_raw(params: PipelineParams, raw_dir: Path) -> validate.ValidationReport:
    return validate.validate_dataset(registry.read_raw(raw_dir), params.data.min_class_share)


def prepare(params: PipelineParams, raw_dir: Path, prepared_dir: Path) -> split.PreparedMeta:
    """Validate raw data, then split it; raises DataError naming the first failed check."""
    ds = registry.read_raw(raw_dir)
    report = validate.validate_dataset(ds, params.data.min_class_share)
    return split.prepare(ds, report, params.data, params.seed, prepared_dir)
