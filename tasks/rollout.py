"""Rollout tasks: the candidate's bundles and the rollback release, a staged rollout — on a fleet
server by URL, or on a simulated fleet — and the `production` alias, moved only when the last
group passes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import cast
from uuid import UUID

from prefect import task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.context import Context
from tasks.release import resign_release, signing_keys
from tinymlops.bundle import read_manifest
from tinymlops.device.profiles import load_profiles
from tinymlops.errors import FleetError, RolloutError
from tinymlops.fleet.client import FleetAdmin
from tinymlops.fleet.engine import RolloutReport
from tinymlops.fleet.policy import RolloutPolicy, demo_policy, describe
from tinymlops.fleet.remote import FollowedRollout, follow_rollout, plot_progress
from tinymlops.fleetsim.simulation import SimulatedRollout, plot_states, simulate_rollout
from tinymlops.fleetsim.simulator import Faults, RoundStats, SimulationConfig
from tinymlops.pipeline.summary import GATE_HEADER, gate_rows, judged_group
from tinymlops.tracking import Alias, Artifact, Metric, Registry, Tag, Tracker, VersionTag
from tinymlops.util.io import write_json


class RolloutPlan(BaseModel):
    candidate_version: str
    candidate_run_id: str
    release_id: str
    sequence: int
    bundles: dict[str, Path]  # device class → candidate bundle
    rollback_id: str | None  # the production model re-signed at a higher sequence, if there is one
    rollback_bundles: dict[str, Path] | None
    excluded: list[str]  # classes HIL found the model cannot fit: the rollout skips them


def baseline_alias(ctx: Context, simulated: bool) -> str:
    """What a rollout moves when it passes, and rolls back to when it fails: a fleet server's
    `production`; a simulated fleet's own `simulated-ok` (a simulation never moves production)."""
    return Alias.SIMULATED_OK if simulated else ctx.tracking.production_alias


@task(name="plan-rollout", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def plan_rollout(ctx: Context, simulated: bool = False, instance_id: int | None = None) -> RolloutPlan:
    """`simulated`: a simulated fleet (it moves `simulated-ok`, never production); `instance_id`:
    roll out that watermark instance's bundles (one fleet, one instance) instead of the base."""
    registry = Registry(ctx.env, ctx.tracking)
    baseline = baseline_alias(ctx, simulated)
    candidate = registry.version(ctx.tracking.candidate_alias)
    if candidate is None:
        raise RolloutError(f"no model has the alias '{ctx.tracking.candidate_alias}' yet: run the pipeline first")
    run_id = candidate.run_id
    pipeline_run = Tracker(ctx.env.tracking_uri, run_id)
    source = Artifact.BUNDLES if instance_id is None else f"instances/{instance_id}"
    try:
        local = pipeline_run.download(source, ctx.run_dir / "release")
    except Exception:  # MLflow raises its own error kinds for a missing artifact path
        if instance_id is None:
            raise
        raise RolloutError(
            f"candidate v{candidate.version} has no bundles for watermark instance {instance_id}"
        ) from None
    bundles = {p.stem: p for p in sorted(local.rglob("*.bundle"))}
    excluded_profiles = {
        tags.get(Tag.HIL_PROFILE) for tags in pipeline_run.children() if tags.get(Tag.HIL_STATUS) == "excluded"
    }
    excluded = sorted({p.device_class for p in load_profiles(ctx.env.root) if p.name in excluded_profiles})
    bundles = {c: b for c, b in bundles.items() if c not in excluded}
    if not bundles:
        raise RolloutError(f"candidate v{candidate.version} has no bundle for a class that can run it")
    manifest = read_manifest(next(iter(bundles.values())))
    sequence = manifest.sequence
    # Named by the model's bytes, not the registry version: identical int8 bytes are the same
    # release, and so (by default) the same rollout on a fleet server, which a re-run resumes.
    release_id = f"model-{manifest.payload_sha256[:16]}"
    rollback_id = rollback_bundles = None
    production = registry.version(baseline)
    if production is not None and production.version != candidate.version:
        # Rollback keeps anti-rollback intact: the production release's own bundles (per class:
        # its model or variant, golden vectors and input transform from the data it was built
        # on, never today's), signed again with a higher sequence.
        old_dir = Tracker(ctx.env.tracking_uri, production.run_id).download(
            Artifact.BUNDLES, ctx.run_dir / "production"
        )
        old = {p.stem: p for p in sorted(old_dir.rglob("*.bundle")) if p.stem in bundles}
        # named by the bytes it takes back, so a re-run resumes the same rollback release
        taken_back = hashlib.sha256(b"".join(old[c].read_bytes() for c in sorted(old))).hexdigest()[:16]
        rollback_id = f"model-{taken_back}-rb{sequence + 1}"
        signed = resign_release(ctx, old, version=rollback_id, sequence=sequence + 1, out_dir=ctx.run_dir / "rollback")
        shapes = {c: _input_shape(b) for c, b in bundles.items()}
        changed = sorted(c for c, b in signed.items() if _input_shape(b) != shapes[c])
        if set(signed) == set(bundles) and not changed:
            rollback_bundles = signed
        else:  # the production release cannot take back every class this release serves
            why = (
                f"its inputs differ for {changed}" if changed else f"no bundle for {sorted(set(bundles) - set(signed))}"
            )
            print(f"no rollback release: v{production.version} ({why}; the data changed since)")
            rollback_id = None
    return RolloutPlan(
        candidate_version=str(candidate.version),
        candidate_run_id=run_id,
        release_id=release_id,
        sequence=sequence,
        bundles=bundles,
        rollback_id=rollback_id,
        rollback_bundles=rollback_bundles,
        excluded=excluded,
    )


def _input_shape(bundle: Path) -> list[int] | None:
    selftest = read_manifest(bundle).selftest
    return None if selftest is None else list(selftest.input_shape)


def _on_report(tracker: Tracker):
    """Per report: a Prefect progress artifact per group, MLflow metrics (step = report), a log line."""
    artifacts: dict[str, UUID] = {}

    def on_report(i: int, report: RolloutReport, extra: dict[str, float] | None = None) -> None:
        group = report.group_name or "done"
        if group not in artifacts:
            artifacts[group] = cast(UUID, create_progress_artifact(0.0, description=f"rollout group {group}"))
        counts = report.counts
        update_progress_artifact(artifacts[group], progress=100.0 * counts.finished / max(counts.assigned, 1))
        metrics = {
            Metric.ROLLOUT_GROUP: report.group_index,
            Metric.ROLLOUT_SUCCESS_RATE: report.success_rate,
            Metric.ROLLOUT_ERROR_RATE: report.error_rate,
        }
        tracker.metrics({**metrics, **(extra or {})}, step=i)
        reason = report.reason
        if report.decision in ("advance", "succeed") and report.health is not None and not report.health.judged:
            reason = reason.replace(f", {report.health.reason}", "")  # no telemetry verdict: not "waiting"
        print(f"rollout {report.rollout_id}: group {group} ({report.percent:g} %) {report.decision}: {reason}")

    return on_report


def _record(
    ctx: Context, tracker: Tracker, plan: RolloutPlan, result: BaseModel, reports: list[RolloutReport], plot: Path
) -> None:
    """The gate table artifact, the report JSON and PNG to MLflow, the outcome as tags."""
    groups = [g.name for g in RolloutPolicy.load_from(ctx.env.root).groups]
    gates = gate_rows(reports, groups)  # the group judged, canary beside control, 3 significant digits
    none = {**dict.fromkeys(GATE_HEADER, "—"), "gate": "no verdict judged the health gates"}
    create_table_artifact(
        gates or [none], key="rollout-gates", description="health gates at each verdict: canary vs control"
    )
    tracker.artifact(write_json(ctx.run_dir / "rollout.json", result.model_dump(mode="json")), Artifact.ROLLOUT)
    tracker.artifact(plot, Artifact.PLOTS)
    status, decision = result.status, result.decision  # type: ignore[attr-defined]
    excluded = ",".join(plan.excluded) or "none"
    usage = getattr(result, "usage", None)
    if usage:
        tracker.metrics(usage_metrics(usage))
    tracker.tags({Tag.ROLLOUT_STATUS: status, Tag.ROLLOUT_DECISION: decision, Tag.ROLLOUT_EXCLUDED: excluded})


def usage_metrics(usage: dict) -> dict[str, float]:
    """The rollout run's usage figures from the server's reconciliation (tinymlops.fleet.identity)."""
    devices = usage.get("devices", [])
    return {
        Metric.ROLLOUT_USAGE_INFERENCES: float(sum(usage.get("customers", {}).values())),
        Metric.ROLLOUT_USAGE_DEVICES: float(sum(1 for d in devices if d.get("inference_count") is not None)),
        Metric.ROLLOUT_USAGE_ALARMS: float(sum(1 for d in devices if d.get("counter_alarm"))),
    }


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
        attestation=True,  # keys at enrolment, "confirmed" on evidence, signed telemetry (docs/threat-model.md)
        # the canary group on the C agent of its part's emulated core: install, evidence, telemetry
        # signatures (bench/attestation.py: 400 devices, 25.6 s → 35.6 s once the firmware is cached)
        emulated_canary=True,
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
    ctx: Context,
    tracker: Tracker,
    plan: RolloutPlan,
    url: str,
    rollout_id: str | None,
    timeout_seconds: float,
    follow: bool = True,
    demo: bool = False,
) -> FollowedRollout:
    """The rollout on the fleet server at `url`: publish, create or resume, follow to a verdict
    (logging only its state changes), or with `follow=False` hand it to the server and return.
    Its id defaults to the release's, so a re-run after a crash resumes the same rollout."""
    token = ctx.env.fleet_admin_token
    if token is None:
        raise RolloutError(f"TINYMLOPS_FLEET_ADMIN_TOKEN is not set: the fleet server at {url} needs an admin token")
    policy = demo_policy() if demo else RolloutPolicy.load_from(ctx.env.root)
    print(f"rollout {rollout_id or plan.release_id} on {url}: {describe(policy)}")
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
            policy,
            timeout_seconds=timeout_seconds,
            on_report=lambda report: on_report(next(steps), report),
            follow=follow,
            links=_links(ctx, tracker),
        )
        try:  # a server with attestation reconciles usage; an older one has no such route
            tracker.metrics(usage_metrics(admin.usage()))
        except FleetError:
            pass
    how = "resumed" if result.resumed else "created"
    print(f"rollout {result.rollout_id} ({how}) on {url}: {result.status}, uploaded {result.uploaded or 'nothing'}")
    _record(ctx, tracker, plan, result, result.reports, plot_progress(result, ctx.run_dir / "rollout_progress.png"))
    return result


def _links(ctx: Context, tracker: Tracker) -> dict[str, str]:
    """Where this rollout came from, for the fleet dashboard's rollout page."""
    from prefect import runtime

    from tasks.tracking import prefect_ui
    from tinymlops import tracking

    links = {"MLflow run": tracking.run_url(ctx.env, tracker.experiment_id, tracker.run_id)}
    if runtime.flow_run.id:
        links["Prefect flow run"] = prefect_ui(str(runtime.flow_run.id))[1]
    return {k: v for k, v in links.items() if v.startswith(("http://", "https://"))}


@task(name="promote", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def promote(ctx: Context, tracker: Tracker, plan: RolloutPlan, result: SimulatedRollout | FollowedRollout) -> bool:
    """When the last group passed, the alias moves to the candidate: `production` after a rollout
    on a fleet server, `simulated-ok` after a simulated one; otherwise it stays. The version
    carries the rollout's verdict either way."""
    simulated = isinstance(result, SimulatedRollout)
    alias = baseline_alias(ctx, simulated)
    registry = Registry(ctx.env, ctx.tracking)
    where = f"{result.devices} simulated devices" if isinstance(result, SimulatedRollout) else result.url
    last = next((r for r in reversed(result.reports) if r.decision != "wait"), None)
    groups = [g.name for g in RolloutPolicy.load_from(ctx.env.root).groups]
    at = f" at {judged_group(last, groups)}" if last is not None and result.status != "succeeded" else ""
    registry.tag_version(plan.candidate_version, {VersionTag.ROLLOUT: f"{result.status}{at} on {where}"})
    if result.status != "succeeded":
        print(f"rollout {result.status} ({result.decision}): '{alias}' stays where it was")
        return False
    registry.promote(plan.candidate_version, alias)
    tracker.tags({Tag.ROLLOUT_PROMOTED: plan.release_id})
    print(f"rollout succeeded: v{plan.candidate_version} is now '{alias}'")
    return True
