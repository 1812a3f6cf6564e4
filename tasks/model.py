"""Model tasks: train (cached on data version, params and code) → quantize → evaluate."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.context import Context
from tinymlops import cache, stages
from tinymlops.evaluate import EvaluationReport
from tinymlops.model.train import EpochCallback
from tinymlops.tracking import Tracker


class TrainedModel(BaseModel):
    model_dir: Path
    cache_key: str
    cache_hit: bool


def progress_artifact(description: str) -> EpochCallback:
    """A Prefect progress artifact that follows the epochs."""
    artifact_id = create_progress_artifact(progress=0.0, description=description)

    def on_epoch(epoch: int, total: int, logs: dict[str, float]) -> None:
        update_progress_artifact(artifact_id, progress=100.0 * epoch / total)

    return on_epoch


# Our cache is content-addressed on the DVC data md5, params and library code; Prefect's own result
# cache would have to pickle Keras models, so its cache policy is off on every task.
@task(name="train", cache_policy=NO_CACHE)
def train_model(ctx: Context, tracker: Tracker, data_md5: str) -> TrainedModel:
    p = ctx.params
    key = cache.key(
        data=data_md5, seed=p.seed, model=p.model, train=p.train, code=cache.code_fingerprint(cache.TRAIN_CODE)
    )
    model_dir, hit = cache.cached_dir(
        ctx.env.cache_dir,
        "train",
        key,
        lambda out: stages.train(p, ctx.prepared_dir, out, progress_artifact(f"training {p.model.architecture}")),
    )
    print("train: cache hit, nothing changed: reusing the trained model" if hit else "train: trained a new model")
    tracker.log_training(stages.read_train_report(model_dir), model_dir, hit)
    return TrainedModel(model_dir=model_dir, cache_key=key, cache_hit=hit)


@task(name="quantize", cache_policy=NO_CACHE)
def quantize_model(ctx: Context, tracker: Tracker, trained: TrainedModel) -> Path:
    p = ctx.params
    key = cache.key(
        trained=trained.cache_key, seed=p.seed, quantize=p.quantize, code=cache.code_fingerprint(cache.QUANTIZE_CODE)
    )
    tflite_dir, _ = cache.cached_dir(
        ctx.env.cache_dir,
        "quantize",
        key,
        lambda out: stages.quantize(
            p, ctx.prepared_dir, trained.model_dir, out, progress_artifact("quantization-aware training")
        ),
    )
    tracker.log_quantization(stages.read_quantize_report(tflite_dir), tflite_dir)
    return tflite_dir


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_model(ctx: Context, tracker: Tracker, trained: TrainedModel, tflite_dir: Path) -> EvaluationReport:
    """Float vs int8 TFLite vs int8 TFLite Micro on the full test split; fails on a quality gate."""
    report_dir = ctx.run_dir / "reports"
    int8_path = tflite_dir / stages.INT8_TFLITE
    report = stages.evaluate(ctx.params, ctx.prepared_dir, int8_path, report_dir, trained.model_dir)
    tracker.log_evaluation(report, report_dir)
    stages.enforce_gates(ctx.params, report)
    return report
