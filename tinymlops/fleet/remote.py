"""A rollout on a fleet server that lives on its own (by URL): publish the release, create or
resume the rollout, follow it to a verdict — or hand it to the server and return.

Everything is keyed by ids the caller chooses, so calling it again after a crash (of the caller,
or of the server) picks up from the server's state: a rollout that exists is resumed, with nothing
uploaded again (not even a re-signed rollback release), a started one is not started again, and
the engine never assigns a device twice. The server judges on its own ticker as well; following
only asks it to judge now, and reports only what changed (status, group, decision).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from tinymlops.fleet import FleetError
from tinymlops.fleet.client import FleetAdmin, FleetHTTPError
from tinymlops.fleet.engine import FINAL, RolloutReport, RolloutState
from tinymlops.fleet.policy import RolloutPolicy
from tinymlops.fleet.timeline import RolloutTimeline


class FollowedRollout(BaseModel):
    rollout_id: str
    status: str  # the rollout's status when following stopped: final, or still running / paused
    decision: str
    resumed: bool  # the rollout already existed on the server: this call picked it up
    uploaded: list[str]  # "<release>/<class>" sent by this call (the rest were already stored)
    reports: list[RolloutReport]
    seconds: float
    url: str = ""
    timeline: RolloutTimeline | None = None  # per group, states over time (the report's plot)

    @property
    def summary(self) -> str:
        return f"{self.status} on the fleet at {self.url}, rollout {self.rollout_id} ({self.decision})"


def publish(admin: FleetAdmin, release_id: str, bundles: dict[str, Path]) -> list[str]:
    """Upload the bundles the server does not hold yet (it verifies each); → what was sent."""
    stored = {r["id"]: set(r["classes"]) for r in admin.releases()}
    sent = []
    for device_class, path in sorted(bundles.items()):
        if device_class not in stored.get(release_id, set()):
            admin.upload_bundle(release_id, device_class, path)
            sent.append(f"{release_id}/{device_class}")
    for baseline in baselines_beside(bundles):  # production monitoring's reference (idempotent)
        admin.put_baseline({**baseline, "release_id": release_id})
    return sent


def baselines_beside(bundles: dict[str, Path]) -> list[dict]:
    """The release's monitoring baselines (tasks/release.record_baselines), found next to its bundles."""
    import json

    for path in bundles.values():
        for folder in (path.parent, path.parent.parent):
            if (folder / "baselines.json").is_file():
                return [b for b in json.loads((folder / "baselines.json").read_text()) if b["device_class"] in bundles]
    return []


def open_rollout(
    admin: FleetAdmin,
    rollout_id: str,
    release_id: str,
    rollback_id: str | None,
    policy: RolloutPolicy,
    links: dict[str, str] | None = None,
) -> tuple[RolloutState, bool]:
    """The rollout `rollout_id`, created and started unless the server already has it → (state, resumed)."""
    try:
        state, _ = admin.status(rollout_id)
        resumed = True
    except FleetHTTPError as exc:
        if exc.status != 404:
            raise
        if links:
            state = admin.create_rollout(release_id, rollback_id, policy, rollout_id, links=links)
        else:  # as before links existed (duck-typed admins in tests take no links)
            state = admin.create_rollout(release_id, rollback_id, policy, rollout_id)
        resumed = False
    if state.release != release_id:
        raise FleetError(
            f"rollout {rollout_id} exists for release {state.release}, not {release_id}: choose another id"
        )
    if state.status == "created":  # created, then the caller died before starting it
        admin.verb(rollout_id, "start", "rollout flow")
        state, _ = admin.status(rollout_id)
    return state, resumed


def follow_rollout(
    admin: FleetAdmin,
    rollout_id: str,
    release_id: str,
    release_bundles: dict[str, Path],
    rollback_id: str | None,
    rollback_bundles: dict[str, Path] | None,
    policy: RolloutPolicy,
    *,
    timeout_seconds: float,
    interval_seconds: float = 5.0,
    on_report: Callable[[RolloutReport], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    follow: bool = True,
    links: dict[str, str] | None = None,
) -> FollowedRollout:
    """Publish, open (or resume) and follow until the rollout is final or `timeout_seconds` pass;
    with `follow=False`, return once the rollout runs on the server (it judges on its own ticker).

    A paused rollout is followed too: an operator may resume it through the admin API. When time
    runs out the rollout carries on on the server; calling again resumes following it."""
    started = time.monotonic()
    if (rollback_id is None) != (rollback_bundles is None):
        raise FleetError("rollback_id and rollback_bundles: give both or neither")
    uploaded: list[str] = []
    try:
        admin.status(rollout_id)
    except FleetHTTPError as exc:
        if exc.status != 404:
            raise
        uploaded = publish(admin, release_id, release_bundles)  # a new rollout: publish what it needs
        if rollback_id is not None:
            uploaded += publish(admin, rollback_id, rollback_bundles or {})
    _, resumed = open_rollout(admin, rollout_id, release_id, rollback_id, policy, links)
    reports: list[RolloutReport] = []
    while True:
        report = admin.step(rollout_id)
        if not reports or _phase(report) != _phase(reports[-1]):
            reports.append(report)  # a state change: not every identical wait, nor a new soak count
            if on_report is not None:
                on_report(report)
        if not follow or report.status in FINAL or time.monotonic() - started >= timeout_seconds:
            break
        sleep(interval_seconds)
    try:
        story = RolloutTimeline.model_validate(admin.timeline(rollout_id))
    except FleetHTTPError:  # a server without the timeline endpoint: the report plots what was followed
        story = None
    return FollowedRollout(
        timeline=story,
        rollout_id=rollout_id,
        status=report.status,
        decision=report.decision,
        resumed=resumed,
        uploaded=uploaded,
        reports=reports,
        seconds=time.monotonic() - started,
        url=str(admin.base_url),
    )


def _phase(report: RolloutReport) -> tuple[str, int, str]:
    return report.status, report.group_index, report.decision


def plot_progress(result: FollowedRollout, path: Path) -> Path:
    """PNG: per group, its devices' states over time on its own scale, decisions marked (the server's
    timeline); from the followed reports alone when the server has no timeline to give."""
    from tinymlops.fleet.report_plot import plot_timeline

    if result.timeline is not None:
        return plot_timeline(result.timeline, path, f"rollout {result.rollout_id}: {result.status} · {result.url}")
    return _plot_reports(result, path)


def _plot_reports(result: FollowedRollout, path: Path) -> Path:
    """PNG: the rollout's devices by outcome over time (stacked), one point per change followed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinymlops.util.io import atomic_path

    reports = result.reports
    t0 = reports[0].at if reports else None
    x = [(r.at - t0).total_seconds() for r in reports] if t0 else []
    series = {
        "confirmed": ([r.counts.confirmed for r in reports], "tab:green"),
        "pending": ([r.counts.assigned - r.counts.finished for r in reports], "tab:gray"),
        "reverted": ([r.counts.reverted for r in reports], "tab:orange"),
        "failed": ([r.counts.failed for r in reports], "tab:red"),
    }
    fig, ax = plt.subplots(figsize=(8, 4))
    if x:
        ax.stackplot(x, [v for v, _ in series.values()], labels=list(series), colors=[c for _, c in series.values()])
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("seconds since the first report followed")
    ax.set_ylabel("devices in the rollout")
    ax.set_title(f"rollout {result.rollout_id}: {result.status} · {result.url}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
