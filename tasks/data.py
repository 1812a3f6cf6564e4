"""Data tasks: ingest → validate → split → version (DVC commit + push)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.context import Context
from tinymlops.ml.data import split, versioning
from tinymlops.ml.data.validate import ValidationReport
from tinymlops.pipeline import stages
from tinymlops.tracking import Tracker


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_data(ctx: Context) -> str:
    return str(stages.ingest(ctx.params, ctx.env.root, ctx.raw_dir))


@task(name="validate", cache_policy=NO_CACHE)
def validate_data(ctx: Context) -> ValidationReport:
    report = stages.validate_raw(ctx.params, ctx.raw_dir)
    report.raise_for_failures(str(ctx.raw_dir))
    return report


@task(name="split", cache_policy=NO_CACHE)
def split_data(ctx: Context) -> split.PreparedMeta:
    return stages.prepare(ctx.params, ctx.raw_dir, ctx.prepared_dir)


@task(name="version-data", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def version_data(ctx: Context, tracker: Tracker, meta: split.PreparedMeta, report: ValidationReport) -> str:
    """Record the data stages in dvc.lock, push to the DVC remote, and log the version to MLflow."""
    versioning.record(ctx.env.root)
    versioning.push(ctx.env.root, ctx.env.dvc_remote)
    md5 = versioning.output_md5(ctx.env.root)
    splits = {name: split.load_split(ctx.prepared_dir, name) for name in split.SPLITS}
    tracker.log_data(md5, meta, report, splits, ctx.prepared_dir)
    return md5
