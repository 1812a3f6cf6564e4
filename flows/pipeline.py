"""The pipeline: versioned data → trained model → int8 → verified on TFLite Micro → candidate."""

from __future__ import annotations

import time

from prefect import flow, runtime

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before any TensorFlow import)
from tasks.context import PipelineRun, load_context
from tasks.data import ingest_data, split_data, validate_data, version_data
from tasks.model import evaluate_model, quantize_model, train_model
from tasks.tracking import register_candidate, start_run, summarise
from tinymlops.summary import PipelineSummary


@flow(name="pipeline", log_prints=True)
def pipeline(run: PipelineRun = PipelineRun()) -> PipelineSummary:
    started = time.perf_counter()
    ctx = load_context(run, str(runtime.flow_run.id))
    tracker = start_run(ctx, run.trigger)
    ok = False
    try:
        ingest_data(ctx)
        report = validate_data(ctx)
        meta = split_data(ctx)
        data_md5 = version_data(ctx, tracker, meta, report)
        trained = train_model(ctx, tracker, data_md5)
        tflite_dir = quantize_model(ctx, tracker, trained)
        evaluation = evaluate_model(ctx, tracker, trained, tflite_dir)
        version = register_candidate(ctx, tracker)
        summary = summarise(ctx, tracker, meta, data_md5, trained, tflite_dir, evaluation, version, started)
        ok = True
        return summary
    finally:
        tracker.finish(ok)


if __name__ == "__main__":
    pipeline()
