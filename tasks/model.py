"""Model tasks: train (cached on data version, params and code) → quantize → evaluate."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast
from uuid import UUID

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.context import Context
from tinymlops.ml.evaluate import EvaluationReport
from tinymlops.pipeline import cache, stages
from tinymlops.tracking import Tracker


class TrainedModel(BaseModel):
    model_dir: Path
    cache_key: str
    cache_hit: bool


class Progress:
    """A Prefect progress artifact that follows the epochs and always ends: at 100 % with what
    happened (e.g. early stopping at epoch 12 of 40), or where it stopped and why."""

    def __init__(self, description: str) -> None:
        self.description, self.percent, self.note = description, 0.0, ""
        self.id = cast(UUID, create_progress_artifact(progress=0.0, description=description))

    def __call__(self, epoch: int, total: int, logs: dict[str, float]) -> None:
        self.percent = 100.0 * epoch / max(total, 1)
        update_progress_artifact(self.id, progress=self.percent)

    def finish(self) -> None:
        described = f"{self.description}: {self.note}" if self.note else f"{self.description}: done"
        update_progress_artifact(self.id, progress=100.0, description=described)

    def stop(self, why: str) -> None:
        update_progress_artifact(self.id, progress=self.percent, description=f"{self.description}: stopped: {why}")


@contextmanager
def progress_artifact(description: str) -> Iterator[Progress]:
    progress = Progress(description)
    try:
        yield progress
    except KeyboardInterrupt:
        progress.stop("interrupted")
        raise
    except Exception as exc:
        progress.stop(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    progress.finish()


def train_with_progress(ctx: Context, out: Path) -> None:
    p = ctx.params
    with progress_artifact(f"training {p.model.architecture}") as progress:
        result = stages.train(p, ctx.prepared_dir, out, progress, root=ctx.env.root)
        if result.epochs_run < p.train.epochs:
            progress.note = (
                f"early stopping after epoch {result.epochs_run} of {p.train.epochs} (best: {result.best_epoch})"
            )
        else:
            progress.note = f"{result.epochs_run} epochs"


def quantize_with_progress(ctx: Context, model_dir: Path, out: Path) -> None:
    """Only quantization-aware training has epochs to follow; PTQ shows no progress artifact."""
    p = ctx.params
    if p.quantize.mode != "qat":
        stages.quantize(p, ctx.prepared_dir, model_dir, out)
        return
    with progress_artifact("quantization-aware training") as progress:
        stages.quantize(p, ctx.prepared_dir, model_dir, out, progress)


# Our cache is content-addressed on the DVC data md5, params and library code; Prefect's own result
# cache would have to pickle Keras models, so its cache policy is off on every task.
@task(name="train", cache_policy=NO_CACHE)
def train_model(ctx: Context, tracker: Tracker, data_md5: str) -> TrainedModel:
    p = ctx.params
    key = cache.key(
        data=data_md5,
        seed=p.seed,
        model=p.model,
        train=p.train,
        code=cache.code_fingerprint(cache.TRAIN_CODE),
        builder=cache.builder_fingerprint(p.model.architecture, ctx.env.root),
    )
    model_dir, hit = cache.cached_dir(
        ctx.env.cache_dir,
        "train",
        key,
        lambda out: train_with_progress(ctx, out),
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
        lambda out: quantize_with_progress(ctx, trained.model_dir, out),
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
