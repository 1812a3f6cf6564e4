"""Tracking tasks: open the parent MLflow run with lineage, register the candidate, summarise."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from prefect import runtime, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.context import Context
from tasks.model import TrainedModel
from tinymlops import stages, tracking
from tinymlops.data.split import PreparedMeta
from tinymlops.evaluate import EvaluationReport
from tinymlops.fleet.remote import FollowedRollout
from tinymlops.fleet.simulation import SimulatedRollout
from tinymlops.hil import HILReport
from tinymlops.lineage import git_state
from tinymlops.summary import PipelineSummary
from tinymlops.tracking import Tracker
from tinymlops.watermark import WatermarkReport


@task(name="start-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def start_run(ctx: Context, trigger: str) -> Tracker:
    flow_run_id, flow_name = runtime.flow_run.id, runtime.flow_run.flow_name
    tracker = Tracker.start(ctx.env, ctx.tracking, run_name=runtime.flow_run.name or "pipeline", tags={})
    tracker.log_params(ctx.params)
    asked = ctx.request
    tracker.log_lineage(
        git_state(ctx.env.root),
        flow_run_id,
        flow_name,
        trigger,
        git_ref=asked.git_ref,
        git_sha=asked.git_sha,
        repository=asked.repository,
        dry_run=asked.dry_run,
    )
    return tracker


@task(name="register-candidate", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def register_candidate(ctx: Context, tracker: Tracker) -> str:
    """The new model version and the candidate alias; a dry run records everything but this."""
    if ctx.request.dry_run:
        print("dry run: the candidate alias stays where it was")
        return ""
    return tracker.register_candidate(ctx.tracking)


def prefect_ui(flow_run_id: str) -> tuple[str, str]:
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    api = PREFECT_API_URL.value()
    if api:  # a long-running server: its UI is beside its API
        return f"open {api.removesuffix('/api')}", f"{api.removesuffix('/api')}/runs/flow-run/{flow_run_id}"
    prefect_bin = Path(sys.executable).parent / "prefect"
    return (
        f"PREFECT_HOME={PREFECT_HOME.value()} {prefect_bin} server start",
        f"http://127.0.0.1:4200/runs/flow-run/{flow_run_id}",
    )


@task(name="summarise", cache_policy=NO_CACHE)
def summarise(
    ctx: Context,
    tracker: Tracker,
    *,
    started: float,
    meta: PreparedMeta,
    data_md5: str,
    trained: TrainedModel,
    tflite_dir: Path,
    evaluation: EvaluationReport,
    watermark: WatermarkReport,
    bundle_dir: Path,
    hil_reports: list[HILReport],
    model_version: str,
    fleet: SimulatedRollout | FollowedRollout | None,
) -> PipelineSummary:
    flow_run_id = str(runtime.flow_run.id)
    prefect_cmd, prefect_url = prefect_ui(flow_run_id)
    quant = stages.read_quantize_report(tflite_dir)
    seconds = time.perf_counter() - started
    summary = PipelineSummary(
        dataset=meta.dataset,
        data_md5=data_md5,
        quantize_mode=quant.mode,
        accuracy_float=evaluation.accuracy_float,
        accuracy_int8_tflite=evaluation.accuracy_int8_tflite,
        accuracy_int8_tflm=evaluation.accuracy_int8_tflm,
        tflm_top1_agreement=evaluation.tflite_vs_tflm.top1_agreement,
        tflm_max_abs_diff=evaluation.tflite_vs_tflm.max_abs_diff,
        size_float_bytes=quant.float_model.size_bytes,
        size_int8_bytes=quant.int8_model.size_bytes,
        int8_sha256=quant.int8_model.sha256,
        train_cache_hit=trained.cache_hit,
        model_version=model_version,
        watermark_payload_id=watermark.payload_id,
        watermark_ber=watermark.ber,
        watermark_p_value=watermark.p_value,
        bundles=len(list(bundle_dir.glob("*.bundle"))),
        rollout="not run" if fleet is None else fleet.summary,
        hil={r.profile: r.status + (f" ({r.reason.split(':')[0]})" if r.reason else "") for r in hil_reports},
        mlflow_run_id=tracker.run_id,
        mlflow_run_url=tracking.run_url(ctx.env, tracker.experiment_id, tracker.run_id),
        mlflow_ui_command=tracking.ui_command(ctx.env),
        registered_model=ctx.tracking.registered_model,
        alias=ctx.tracking.candidate_alias,
        prefect_flow_run_id=flow_run_id,
        prefect_ui_command=prefect_cmd,
        prefect_run_url=prefect_url,
        wall_seconds=seconds,
    )
    markdown = summary.markdown()
    tracker.log_summary(markdown, seconds)
    create_markdown_artifact(markdown, key="pipeline-summary", description="tinymlops pipeline run")
    return summary
