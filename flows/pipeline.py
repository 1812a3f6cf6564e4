"""The pipeline: versioned data → trained model → watermarked int8 → verified on TFLite Micro →
signed bundle per device class → emulated hardware-in-the-loop → candidate → staged rollout."""

from __future__ import annotations

import time

from prefect import flow, runtime, unmapped

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before any TensorFlow import)
from flows.rollout import RolloutRun, rollout
from flows.runners import task_runner_from_env
from tasks.context import PipelineRun, load_context
from tasks.data import ingest_data, split_data, validate_data, version_data
from tasks.hil import hil_gate, hil_profile
from tasks.model import evaluate_model, quantize_model, train_model
from tasks.protect import embed_watermark, verify_watermark
from tasks.release import build_bundles
from tasks.tracking import register_candidate, start_run, summarise
from tinymlops.device.profiles import load_profiles
from tinymlops.summary import PipelineSummary


@flow(name="pipeline", log_prints=True, task_runner=task_runner_from_env())
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
        marked = embed_watermark(ctx, tracker, trained)
        tflite_dir = quantize_model(ctx, tracker, marked)
        evaluation = evaluate_model(ctx, tracker, marked, tflite_dir)
        watermark = verify_watermark(ctx, tracker, tflite_dir)
        bundle_dir = build_bundles(ctx, tracker, tflite_dir, data_md5, watermark.payload_id)
        profiles = load_profiles(ctx.env.root)
        hil_reports = hil_profile.map(unmapped(ctx), profiles, unmapped(bundle_dir)).result()
        hil_gate(ctx, tracker, hil_reports)
        version = register_candidate(ctx, tracker)
        fleet = None
        if version and run.rollout_devices:  # a dry run, or rollout_devices=0, stops at the candidate
            fleet = rollout(RolloutRun(root=run.root, devices=run.rollout_devices))
        summary = summarise(
            ctx,
            tracker,
            started=started,
            meta=meta,
            data_md5=data_md5,
            trained=trained,
            tflite_dir=tflite_dir,
            evaluation=evaluation,
            watermark=watermark,
            bundle_dir=bundle_dir,
            hil_reports=hil_reports,
            model_version=version,
            fleet=fleet,
        )
        ok = True
        return summary
    finally:
        tracker.finish(ok)


if __name__ == "__main__":
    pipeline()
