"""Rollout tasks: the candidate's bundles and the rollback release, a staged rollout — on a fleet
server by URL, or on a simulated fleet — and the `production` alias, moved only when the last
group passes."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.context import Context
from tasks.release import sign_per_class, signing_keys
from tinymlops.bundle import Lineage, read_manifest
from tinymlops.device.profiles import load_profiles
from tinymlops.errors import TinyMLOpsError
from tinymlops.fleet.client import FleetAdmin
from tinymlops.fleet.engine import RolloutReport
from tinymlops.fleet.policy import RolloutPolicy
from tinymlops.fleet.remote import FollowedRollout, follow_rollout, plot_progress
from tinymlops.fleet.simulation import SimulatedRollout, plot_states, simulate_rollout
from tinymlops.fleet.simulator import Faults, RoundStats, SimulationConfig
from tinymlops.io import write_json
from tinymlops.tracking import Artifact, Metric, Registry, Tag, Tracker


class RolloutError(TinyMLOpsError):
    """Nothing to roll out, or the candidate cannot be found."""


class RolloutPlan(BaseModel):
    candidate_version: str
    candidate_run_id: str
    release_id: str
    sequence: int
    bundles: dict[str, Path]  # device class → candidate bundle
    rollback_id: str | None  # the production model re-signed at a higher sequence, if there is one
    rollback_bundles: dict[str, Path] | None
    excluded: list[str]  # classes HIL found the model cannot fit: the rollout skips them


@task(name="plan-rollout", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def plan_rollout(ctx: Context) -> RolloutPlan:
    registry = Registry(ctx.env, ctx.tracking)
    candidate = registry.version(ctx.tracking.candidate_alias)
    if candidate is None:
        raise RolloutError(f"no model has the alias '{ctx.tracking.candidate_alias}' yet: run the pipeline first")
    client, run_id = registry.client, candidate.run_id
    local = Path(client.download_artifacts(run_id, Artifact.BUNDLES, str(ctx.run_dir / "release")))
    bundles = {p.stem: p for p in sorted(local.rglob("*.bundle"))}
    experiment = client.get_run(run_id).info.experiment_id
    hil_runs = client.search_runs([experiment], filter_string=f"tags.`{Tag.PARENT_RUN}` = '{run_id}'")
    excluded_profiles = {
        r.data.tags.get(Tag.HIL_PROFILE) for r in hil_runs if r.data.tags.get(Tag.HIL_STATUS) == "excluded"
    }
    excluded = sorted({p.device_class for p in load_profiles(ctx.env.root) if p.name in excluded_profiles})
    bundles = {c: b for c, b in bundles.items() if c not in excluded}
    if not bundles:
        raise RolloutError(f"candidate v{candidate.version} has no bundle for a class that can run it")
    sequence = read_manifest(next(iter(bundles.values()))).sequence
    rollback_id = rollback_bundles = None
    production = registry.version(ctx.tracking.production_alias)
    if production is not None and production.version != candidate.version:
        # Rollback keeps anti-rollback intact: the old model, signed again with a higher sequence.
        old = registry.production_model(ctx.run_dir / "production")
        rollback_id = f"v{production.version}-rollback-{sequence + 1}"
        signed = sign_per_class(
            ctx,
            old.read_bytes(),
            version=rollback_id,
            sequence=sequence + 1,
            lineage=Lineage(mlflow_run_id=production.run_id),
            out_dir=ctx.run_dir / "rollback",
        )
        rollback_bundles = {c: b for c, b in signed.items() if c in bundles}
    return RolloutPlan(
        candidate_version=str(candidate.version),
        candidate_run_id=run_id,
        release_id=f"v{candidate.version}",
        sequence=sequence,
        bundles=bundles,
        rollback_id=rollback_id,
        rollback_bundles=rollback_bundles,
        excluded=excluded,
    )


def _on_report(tracker: Tracker):
    """Per report: a Prefect progress artifact per group, MLflow metrics (step = report), a log line."""
    artifacts: dict[str, str] = {}

    def on_report(i: int, report: RolloutReport, extra: dict[str, float] | None = None) -> None:
        group = report.group_name or "done"
        if group not in artifacts:
            artifacts[group] = create_progress_artifact(0.0, description=f"rollout group {group}")
        counts = report.counts
        update_progress_artifact(artifacts[group], progress=100.0 * counts.finished / max(counts.assigned, 1))
        metrics = {
            Metric.ROLLOUT_GROUP: report.group_index,
            Metric.ROLLOUT_SUCCESS_RATE: report.success_rate,
            Metric.ROLLOUT_ERROR_RATE: report.error_rate,
        }
        tracker.metrics({**metrics, **(extra or {})}, step=i)
        print(f"rollout {i}: group {group} ({report.percent:g} %) {report.decision}: {report.reason}")

    return on_report


def _record(
    ctx: Context, tracker: Tracker, plan: RolloutPlan, result: BaseModel, reports: list[RolloutReport], plot: Path
) -> None:
    """The gate table artifact, the report JSON and PNG to MLflow, the outcome as tags."""
    gates = [
        {
            "step": i,
            "group": r.group_name,
            "gate": g.gate,
            "passed": g.passed,
            "value": g.value,
            "limit": g.limit,
            "canary": g.canary,
            "control": g.control,
        }
        for i, r in enumerate(reports)
        if r.health is not None and r.health.judged
        for g in r.health.gates
    ]
    create_table_artifact(gates or [{"gate": "none judged"}], key="rollout-gates", description="health gates per step")
    tracker.artifact(write_json(ctx.run_dir / "rollout.json", result.model_dump(mode="json")), Artifact.ROLLOUT)
    tracker.artifact(plot, Artifact.PLOTS)
    status, decision = result.status, result.decision  # type: ignore[attr-defined]
    excluded = ",".join(plan.excluded) or "none"
    tracker.tags({Tag.ROLLOUT_STATUS: status, Tag.ROLLOUT_DECISION: decision, Tag.ROLLOUT_EXCLUDED: excluded})


@task(name="staged-rollout", cache_policy=NO_CACHE)
def staged_rollout(ctx: Context, tracker: Tracker, plan: RolloutPlan, devices: int, faults: Faults) -> SimulatedRollout:
    policy = RolloutPolicy.load_from(ctx.env.root)
    config = SimulationConfig(
        devices=devices,
        classes=sorted(plan.bundles),
        seed=ctx.params.seed,
        faults=faults,
        profiles=load_profiles(ctx.env.root),
        field_data=ctx.prepared_dir,  # devices see the held-out split: what they report is measured on TFLM
    )
    on_report = _on_report(tracker)

    def on_round(i: int, stats: RoundStats, report: RolloutReport) -> None:
        on_report(i, report, {Metric.ROLLOUT_INSTALLED: stats.installed, Metric.ROLLOUT_FAILED: stats.failed})

    result = simulate_rollout(
        plan.release_id,
        plan.bundles,
        plan.rollback_id,
        plan.rollback_bundles,
        signing_keys(ctx).root_public,
        config,
        policy,
        ctx.run_dir / "fleet",
        on_round=on_round,
    )
    _record(ctx, tracker, plan, result, result.reports, plot_states(result, ctx.run_dir / "rollout_states.png"))
    return result


@task(name="fleet-rollout", cache_policy=NO_CACHE)
def fleet_rollout(
    ctx: Context, tracker: Tracker, plan: RolloutPlan, url: str, rollout_id: str | None, timeout_seconds: float
) -> FollowedRollout:
    """The rollout on the fleet server at `url`: publish, create or resume, follow to a verdict.
    Its id defaults to the release's, so a re-run after a crash resumes the same rollout."""
    token = ctx.env.fleet_admin_token
    if token is None:
        raise RolloutError(f"TINYMLOPS_FLEET_ADMIN_TOKEN is not set: the fleet server at {url} needs an admin token")
    on_report = _on_report(tracker)
    steps = iter(range(1_000_000))
    with FleetAdmin(url, token.get_secret_value()) as admin:
        result = follow_rollout(
            admin,
            rollout_id or plan.release_id,
            plan.release_id,
            plan.bundles,
            plan.rollback_id,
            plan.rollback_bundles,
            RolloutPolicy.load_from(ctx.env.root),
            timeout_seconds=timeout_seconds,
            on_report=lambda report: on_report(next(steps), report),
        )
    how = "resumed" if result.resumed else "created"
    print(f"rollout {result.rollout_id} ({how}) on {url}: {result.status}, uploaded {result.uploaded or 'nothing'}")
    _record(ctx, tracker, plan, result, result.reports, plot_progress(result, ctx.run_dir / "rollout_progress.png"))
    return result


@task(name="promote", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def promote(ctx: Context, tracker: Tracker, plan: RolloutPlan, result: SimulatedRollout | FollowedRollout) -> bool:
    """`production` moves to the candidate only when the last group passed; otherwise it stays."""
    if result.status != "succeeded":
        print(f"rollout {result.status} ({result.decision}): '{ctx.tracking.production_alias}' stays where it was")
        return False
    Registry(ctx.env, ctx.tracking).promote(plan.candidate_version)
    tracker.tags({Tag.ROLLOUT_PROMOTED: plan.release_id})
    print(f"rollout succeeded: v{plan.candidate_version} is now '{ctx.tracking.production_alias}'")
    return True
