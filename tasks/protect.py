"""Protection tasks: embed the owner's watermark (cached), and check it on the final int8 file."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.context import Context
from tasks.model import TrainedModel, progress_artifact
from tinymlops import cache, stages
from tinymlops.data.split import load_split
from tinymlops.io import write_json
from tinymlops.model import train as training
from tinymlops.tracking import Tracker
from tinymlops.watermark import (
    OwnerKey,
    WatermarkConfig,
    WatermarkReport,
    ensure_dev_key,
    verify_tflite,
)

EMBED_REPORT = "watermark_embed.json"


def owner_key(ctx: Context, config: WatermarkConfig) -> OwnerKey:
    key, created = ensure_dev_key(config.key_path(ctx.env.home), config.dev_owner_id, config.dev_serial)
    if created:
        print(f"created a development owner key in {config.key_path(ctx.env.home)} (keep it secret, back it up)")
    return key


@task(name="embed-watermark", cache_policy=NO_CACHE)
def embed_watermark(ctx: Context, tracker: Tracker, trained: TrainedModel) -> TrainedModel:
    """Fine-tune the trained model with the key's trigger set mixed into clean batches."""
    from tinymlops.watermark.embed import embed

    config = WatermarkConfig.load_from(ctx.env.root)
    key = owner_key(ctx, config)
    # The key's digest (never the key) is part of the cache key: another owner, another model.
    cache_key = cache.key(
        trained=trained.cache_key,
        watermark=config,
        owner=hashlib.sha256(key.secret.get_secret_value()).hexdigest(),
        seed=ctx.params.seed,
    )

    def build(out: Path) -> None:
        splits = (load_split(ctx.prepared_dir, "train"), load_split(ctx.prepared_dir, "val"))
        marked, report = embed(
            training.load(trained.model_dir), *splits, key, config, ctx.params.seed, progress_artifact("watermark")
        )
        training.save(marked, out)
        write_json(out / EMBED_REPORT, report.model_dump(mode="json"))
        write_json(out / stages.TRAIN_REPORT, stages.read_train_report(trained.model_dir).model_dump())

    model_dir, hit = cache.cached_dir(ctx.env.cache_dir, "watermark", cache_key, build)
    tracker.artifact(model_dir / EMBED_REPORT, "reports/watermark")
    return TrainedModel(model_dir=model_dir, cache_key=cache_key, cache_hit=hit and trained.cache_hit)


@task(name="verify-watermark", cache_policy=NO_CACHE)
def verify_watermark(ctx: Context, tracker: Tracker, tflite_dir: Path) -> WatermarkReport:
    """On the int8 file that ships: the run fails unless the watermark is detected."""
    config = WatermarkConfig.load_from(ctx.env.root)
    int8 = tflite_dir / stages.INT8_TFLITE
    report = verify_tflite(int8.read_bytes(), owner_key(ctx, config), config, str(int8.name))
    path = write_json(ctx.run_dir / "reports" / "watermark.json", report.model_dump(mode="json"))
    tracker.log_watermark(report, path)
    print(report.line())
    report.raise_if_not_owned()  # WatermarkError: fails the run
    return report
