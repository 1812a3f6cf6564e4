"""Tracking tasks: open the parent MLflow run with lineage, register the candidate, summarise."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from prefect import runtime, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.context import Context, current_project
from tasks.model import TrainedModel
from tinymlops import tracking
from tinymlops.device.hil import HILReport
from tinymlops.fleet.policy import RolloutPolicy
from tinymlops.fleet.remote import FollowedRollout
from tinymlops.fleetsim.simulation import SimulatedRollout
from tinymlops.ml.data.split import PreparedMeta
from tinymlops.ml.evaluate import EvaluationReport
from tinymlops.ml.watermark import WatermarkReport
from tinymlops.pipeline import protect, stages
from tinymlops.pipeline.summary import PipelineSummary, rollout_line
from tinymlops.tracking import Alias, Registry, Tracker, VersionTag
from tinymlops.util.lineage import git_state


def describe_request(ctx: Context, flow_run_name: str) -> str:
    asked, p = ctx.request, ctx.params
    origin = f"{asked.trigger} run" + (f" for a push to {asked.repository} {asked.git_ref}" if asked.git_ref else "")
    return (
        f"Pipeline {origin} (Prefect flow run `{flow_run_name}`): {p.data.dataset} → {p.model.architecture}, "
        f"up to {p.train.epochs} epochs, int8 {p.quantize.mode}"
        + (", dry run (the candidate alias stays)" if asked.dry_run else "")
        + ". The run summary follows when it ends."
    )


@task(name="start-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def start_run(ctx: Context) -> str:
    """The parent MLflow run: params, lineage, origin and a description; → its id."""
    flow_run_id, flow_name = runtime.flow_run.id, runtime.flow_run.flow_name
    name = runtime.flow_run.name or "pipeline"
    tracker = Tracker.start(ctx.env, ctx.tracking, run_name=name, tags={})
    tracker.log_params(ctx.params)
    asked = ctx.request
    tracker.log_lineage(
        git_state(ctx.env.root),
        flow_run_id,
        flow_name,
        asked.trigger,
        git_ref=asked.git_ref,
        git_sha=asked.git_sha,
        repository=asked.repository,
        alarm_id=asked.alarm_id,
        alarm_url=asked.alarm_url,
        dry_run=asked.dry_run,
    )
    tracker.describe(describe_request(ctx, name))
    return tracker.run_id


@task(name="register-candidate", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def register_candidate(
    ctx: Context,
    tracker: Tracker,
    tflite_dir: Path,
    evaluation: EvaluationReport,
    watermark: WatermarkReport,
    hil_reports: list[HILReport],
) -> str:
    """The model version (identical bytes: the same version), its tags and description, and the
    candidate alias; a dry run records everything but this."""
    if ctx.request.dry_run:
        print("dry run: the candidate alias stays where it was")
        return ""
    quant = stages.read_quantize_report(tflite_dir)
    i8 = quant.int8_model
    p = ctx.params
    tags: dict[str, object] = {
        VersionTag.ACCURACY: f"{evaluation.accuracy_int8_tflm:.4f}",
        VersionTag.ACCURACY_FLOAT: "" if evaluation.accuracy_float is None else f"{evaluation.accuracy_float:.4f}",
        VersionTag.QUANT_MODE: quant.mode,
        VersionTag.DATA_MD5: tracker.client.get_run(tracker.run_id).data.tags.get(tracking.Tag.DATA_MD5, ""),
        VersionTag.GIT_SHA: git_state(ctx.env.root).sha,
        VersionTag.INSTANCE: watermark.payload_id if watermark.owned else "",
        **{VersionTag.HIL + r.profile: r.status for r in hil_reports},
    }
    passed = sorted(r.profile for r in hil_reports if r.status == "passed")
    mark = watermark.payload_id if watermark.owned else "none (refused, shipped unmarked)"
    description = (
        f"{p.model.architecture} on {p.data.dataset}, int8 {quant.mode}: TFLM accuracy "
        f"{evaluation.accuracy_int8_tflm:.4f}, {i8.size_bytes:,} B, sha256 {i8.sha256[:12]}…; "
        f"HIL passed on {', '.join(passed) or 'no profile'}; watermark {mark}; "
        f"from MLflow run {tracker.run_id}"
    )
    version = tracker.register_candidate(ctx.tracking, sha256=i8.sha256, tags=tags, description=description)
    print(f"registered {ctx.tracking.registered_model} v{version} @{ctx.tracking.candidate_alias}")
    return version


def prefect_ui(flow_run_id: str) -> tuple[str, str]:
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    api = PREFECT_API_URL.value()
    if api and not current_project().ephemeral_prefect:  # a long-running server: its UI is beside its API
        return "", f"{api.removesuffix('/api')}/runs/flow-run/{flow_run_id}"
    prefect_bin = Path(sys.executable).parent / "prefect"
    return (
        f"PREFECT_HOME={PREFECT_HOME.value()} {prefect_bin} server start",
        f"http://127.0.0.1:4200/runs/flow-run/{flow_run_id}",
    )


def describe_rollout(ctx: Context, fleet: SimulatedRollout | FollowedRollout | None) -> str:
    if fleet is None:
        if ctx.request.dry_run:
            return "not run (dry run)"
        return "not run (rollout_devices=0)" if not ctx.request.rollout_devices else "not run"
    groups = [g.name for g in RolloutPolicy.load_from(ctx.env.root).groups]
    if isinstance(fleet, SimulatedRollout):
        where, alias = f"{fleet.devices} simulated devices", Alias.SIMULATED_OK
    else:
        where, alias = f"the fleet at {fleet.url}", ctx.tracking.production_alias
    return rollout_line(fleet.status, where, fleet.reports, groups, alias if fleet.status == "succeeded" else None)


@task(name="summarise", cache_policy=NO_CACHE)
def _plan_line(marked: TrainedModel | None) -> str:
    """The watermark stage's plan in one line for the summary ('' for a model from before plans)."""
    plan = protect.read_plan(marked.model_dir) if marked is not None else None
    if plan is None:
        return ""
    if not plan["accepted"]:
        return f"SHIPPED UNMARKED: {plan['reason']}"
    return f"embedding {plan['reason']}, {len(plan['attempts'])} attempt(s), min {plan['min_triggers']} triggers"


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
    marked: TrainedModel | None = None,
) -> PipelineSummary:
    flow_run_id = str(runtime.flow_run.id)
    prefect_cmd, prefect_url = prefect_ui(flow_run_id)
    quant = stages.read_quantize_report(tflite_dir)
    # The int8 file beside the bundles in this run's directory: the cache entry may be pruned.
    int8 = ctx.run_dir / stages.INT8_TFLITE
    int8.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tflite_dir / stages.INT8_TFLITE, int8)
    aliases = Registry(ctx.env, ctx.tracking).aliases(model_version) if model_version else []
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
        int8_path=str(int8),
        bundle_dir=str(bundle_dir),
        train_cache_hit=trained.cache_hit,
        model_version=model_version,
        aliases=aliases,
        watermark_payload_id=watermark.payload_id,
        watermark_ber=watermark.ber,
        watermark_p_value=watermark.p_value,
        watermark_plan=_plan_line(marked),
        bundles=len(list(bundle_dir.glob("*.bundle"))),
        rollout=describe_rollout(ctx, fleet),
        rollout_url=f"{fleet.url}/ui/rollouts/{fleet.rollout_id}" if isinstance(fleet, FollowedRollout) else "",
        hil={r.profile: r.status + (f" ({r.reason.split(':')[0]})" if r.reason else "") for r in hil_reports},
        mlflow_run_id=tracker.run_id,
        mlflow_run_url=tracking.run_url(ctx.env, tracker.experiment_id, tracker.run_id),
        mlflow_ui_command=tracking.ui_command(ctx.env),
        registered_model=ctx.tracking.registered_model,
        alias=ctx.tracking.candidate_alias,
        prefect_flow_run_id=flow_run_id,
        prefect_flow_run_name=runtime.flow_run.name or "",
        prefect_ui_command=prefect_cmd,
        prefect_run_url=prefect_url,
        trigger=ctx.request.trigger,
        wall_seconds=seconds,
    )
    markdown = summary.markdown()
    tracker.log_summary(markdown, seconds)
    asked = describe_request(ctx, summary.prefect_flow_run_name).removesuffix(" The run summary follows when it ends.")
    tracker.describe(f"{asked}\n\n{markdown}")
    create_markdown_artifact(markdown, key="pipeline-summary", description="tinymlops pipeline run")
    return summary
