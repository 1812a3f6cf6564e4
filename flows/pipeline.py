"""The pipeline: versioned data → trained model → watermarked int8 → verified on TFLite Micro →
a variant for each device class the model misses → signed bundle per device class → emulated
hardware-in-the-loop → candidate → staged rollout.

The flow's parameters are flat and typed, so the Prefect UI renders a plain form: the defaults it
shows are the effective ones, read from this checkout's params.yaml (a deployment runs in its
checkout). Where the project lives is not a parameter: the CLI sets it (tasks.context.project),
a deployment runs in its working directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal, cast

from prefect import flow, runtime, unmapped
from pydantic import Field

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before any TensorFlow import)
from flows.rollout import RolloutRun, rollout
from flows.runners import task_runner_from_env
from tasks.context import PipelineRun, Trigger, current_project, load_context
from tasks.data import ingest_data, split_data, validate_data, version_data
from tasks.hil import hil_gate, hil_profile
from tasks.model import evaluate_model, quantize_model, train_model
from tasks.protect import build_instances, embed_watermark, verify_watermark
from tasks.release import build_bundles, record_baselines
from tasks.tracking import register_candidate, start_run, summarise
from tasks.variants import derive_variants, tag_release
from tinymlops.device.profiles import load_profiles
from tinymlops.errors import ConfigError, TinyMLOpsError
from tinymlops.pipeline.summary import PipelineSummary
from tinymlops.settings import PipelineParams, load_params
from tinymlops.tracking import Tracker
from tinymlops.util.interrupt import interrupted


def _checkout_params() -> PipelineParams:
    """params.yaml of the checkout these flows are loaded from: the defaults the form shows."""
    try:
        return load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    except TinyMLOpsError:  # a broken or missing file fails the run itself, with its one-line error
        return PipelineParams()


Dataset = Literal["digits", "npz", "wav", "csv"]  # tinymlops.ml.data.registry.REGISTRY (a test keeps them equal)
Quantization = Literal["ptq", "qat"]
DEFAULTS = _checkout_params()
DEFAULT_DATASET = cast(Dataset, DEFAULTS.data.dataset)


@flow(name="pipeline", log_prints=True, task_runner=task_runner_from_env())
def pipeline(
    dataset: Dataset = DEFAULT_DATASET,
    epochs: Annotated[int, Field(ge=1, le=10_000)] = DEFAULTS.train.epochs,
    quantization: Quantization = DEFAULTS.quantize.mode,
    dry_run: bool = False,
    rollout_devices: Annotated[int, Field(ge=0)] = 400,
    fleet_url: str = "",
    trigger: Trigger = "api",
    git_ref: str = "",
    git_sha: str = "",
    repository: str = "",
    alarm_id: str = "",
    alarm_url: str = "",
) -> PipelineSummary:
    """Train, quantize, protect, sign and test one model, then stage it across a fleet.

    Args:
        dataset: Dataset from the registry (params.yaml data.dataset); npz also needs data.path.
        epochs: Training epochs, an upper bound: early stopping may end sooner (params.yaml train.epochs).
        quantization: ptq: post-training quantization; qat: quantization-aware fine-tuning (params.yaml quantize.mode).
        dry_run: Run and record everything, but leave the candidate alias where it is.
        rollout_devices: Size of the simulated fleet for the staged rollout at the end; 0 stops at the candidate.
        fleet_url: Fleet server to roll out on (empty: TINYMLOPS_FLEET_URL if set, else a simulated fleet).
        trigger: Where the run came from: cli, ui, schedule, webhook or api.
        git_ref: Webhook runs: the git ref that was pushed, e.g. refs/heads/main.
        git_sha: Webhook runs: the commit the push pointed at.
        repository: Webhook runs: the repository pushed to, owner/name.
        alarm_id: Drift runs (pipeline/retrain-on-drift): the fleet's drift alarm that started the run.
        alarm_url: Drift runs: that alarm on the fleet dashboard.
    """
    started = time.perf_counter()
    if 0 < rollout_devices < 10:
        raise ConfigError(f"rollout_devices={rollout_devices}: 0 (stop at the candidate) or at least 10")
    where = current_project()
    # A value equal to the form's default leaves the project's own params.yaml in charge (the same
    # file for a deployment; another project's may differ). Anything else overrides it.
    run = PipelineRun(
        root=where.root,
        params_file=where.params_file,
        epochs=None if epochs == DEFAULTS.train.epochs else epochs,
        quantization_mode=None if quantization == DEFAULTS.quantize.mode else quantization,
        trigger=trigger,
        dataset=None if dataset == DEFAULTS.data.dataset else dataset,
        dry_run=dry_run,
        rollout_devices=rollout_devices,
        fleet_url=fleet_url or None,
        git_ref=git_ref or None,
        git_sha=git_sha or None,
        repository=repository or None,
        alarm_id=alarm_id or None,
        alarm_url=alarm_url or None,
    )
    ctx = load_context(run, str(runtime.flow_run.id))
    # A handle on the MLflow run, not data: made here, so the graph's edges are the data flow
    # (a task result passed to every task would draw an edge from start-run to each of them).
    # a fresh copy of the run id: Prefect links a task to the task whose returned object it receives,
    # and the MLflow handle is not data that flows between the stages
    tracker = Tracker(ctx.env.tracking_uri, "".join(list(start_run(ctx))))
    try:
        raw = ingest_data(ctx)
        report = validate_data(ctx, wait_for=[raw])
        meta = split_data(ctx, wait_for=[report])
        data_md5 = version_data(ctx, tracker, meta, report)
        trained = train_model(ctx, tracker, data_md5)
        marked = embed_watermark(ctx, tracker, trained)
        tflite_dir = quantize_model(ctx, tracker, marked)
        evaluation = evaluate_model(ctx, tracker, marked, tflite_dir)
        watermark = verify_watermark(ctx, tracker, tflite_dir, marked)
        release = derive_variants(ctx, tracker, data_md5, tflite_dir, evaluation)  # a model for every class
        bundle_dir = build_bundles(
            ctx,
            tracker,
            tflite_dir,
            data_md5,
            watermark.payload_id if watermark.owned else None,
            release,
            wait_for=[watermark],
        )
        build_instances(ctx, tracker, marked, data_md5)  # configs/watermark.yaml `instances`; none by default
        profiles = load_profiles(ctx.env.root)
        hil_started = time.perf_counter()
        hil_reports = hil_profile.map(unmapped(ctx), profiles, unmapped(bundle_dir)).result()
        gate = hil_gate(ctx, tracker, hil_reports, time.perf_counter() - hil_started)
        record_baselines(ctx, tracker, bundle_dir, tflite_dir, hil_reports, release)  # production's reference
        version = register_candidate(ctx, tracker, tflite_dir, evaluation, watermark, gate)
        tag_release(ctx, tracker, version, release, data_md5)
        fleet = None
        if version and run.rollout_devices:  # a dry run, or rollout_devices=0, stops at the candidate
            fleet = rollout(RolloutRun(root=str(ctx.env.root), devices=run.rollout_devices, fleet_url=run.fleet_url))
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
            marked=marked,
        )
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) or interrupted():  # Ctrl-C: MLflow's KILLED, Prefect's Crashed,
            tracker.finish("KILLED")  # even when a library turned the interrupt into its own error
            if not isinstance(exc, KeyboardInterrupt):
                raise KeyboardInterrupt from exc
            raise
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    return summary


if __name__ == "__main__":
    pipeline()
