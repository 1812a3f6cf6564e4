"""Following a rollout (issue 14, finding 8): only state changes are reported, the policy says up
front how long it needs, the demo policy is fast, the flow may hand the rollout to the server; and
a re-run (finding 7) resumes without uploading anything again."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tinymlops.fleet.client import FleetHTTPError
from tinymlops.fleet.engine import Counts, RolloutReport, RolloutState
from tinymlops.fleet.policy import RolloutPolicy, demo_policy, describe, minimum_seconds
from tinymlops.fleet.remote import follow_rollout

T = datetime(2026, 6, 1, tzinfo=timezone.utc)


class FakeAdmin:
    """A fleet server that answers `steps` in turn (the last one forever)."""

    def __init__(self, steps: list[tuple[str, int, str, str]], exists: bool = False) -> None:
        self.steps, self.exists, self.uploads, self.calls = steps, exists, [], 0
        self.base_url = "http://fleet"

    def status(self, rollout_id: str):  # type: ignore[no-untyped-def]
        if not self.exists:
            raise FleetHTTPError(404, "not found")
        state = RolloutState(rollout_id=rollout_id, release="r2", release_sequence=2, status="running", group_index=0)
        return state, None

    def releases(self) -> list[dict]:
        return []

    def upload_bundle(self, release_id: str, device_class: str, path: Path) -> None:
        self.uploads.append(f"{release_id}/{device_class}")

    def create_rollout(self, release_id, rollback_id, policy, rollout_id):  # type: ignore[no-untyped-def]
        self.exists = True
        return RolloutState(rollout_id=rollout_id, release=release_id, release_sequence=2, status="created")

    def verb(self, rollout_id: str, verb: str, reason: str = "") -> None:
        pass

    def timeline(self, rollout_id: str) -> dict:
        raise FleetHTTPError(404, "no timeline here")  # an older server: the report plots the followed reports

    def step(self, rollout_id: str) -> RolloutReport:
        status, group, decision, reason = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        return RolloutReport(
            rollout_id=rollout_id,
            at=T,
            status=status,
            decision=decision,
            reason=reason,
            group_index=group,
            group_name=None,
            percent=1,
            counts=Counts(),
            success_rate=0,
            error_rate=0,
            soaked_seconds=self.calls,
        )  # type: ignore[arg-type]


def follow(admin: FakeAdmin, **kw):  # type: ignore[no-untyped-def]
    seen: list[RolloutReport] = []
    result = follow_rollout(
        admin,
        "r2",
        "r2",
        {"m4": Path("m4.bundle")},
        None,
        None,
        RolloutPolicy(),  # type: ignore[arg-type]
        timeout_seconds=60,
        interval_seconds=0,
        on_report=seen.append,
        sleep=lambda _: None,
        **kw,
    )
    return result, seen


def test_following_a_rollout_reports_only_state_changes() -> None:
    def soaking(group: int) -> list[tuple[str, int, str, str]]:
        return [("running", group, "wait", f"soaking {s}/600 s") for s in range(0, 600, 5)]

    steps = [*soaking(0), ("running", 1, "advance", "passed"), *soaking(1), ("succeeded", 1, "succeed", "passed")]
    result, seen = follow(FakeAdmin(steps))
    assert [(r.group_index, r.decision) for r in seen] == [(0, "wait"), (1, "advance"), (1, "wait"), (1, "succeed")]
    assert result.status == "succeeded" and len(result.reports) == 4
    assert all(r.rollout_id == "r2" for r in seen)  # the rollout's id, not a poll counter


def test_the_flow_can_hand_the_rollout_to_the_server_and_return() -> None:
    admin = FakeAdmin([("running", 0, "wait", "soaking")])
    result, _ = follow(admin, follow=False)
    assert result.status == "running" and admin.calls == 1 and admin.uploads == ["r2/m4"]


def test_a_rerun_resumes_without_uploading_anything_again() -> None:
    admin = FakeAdmin([("succeeded", 2, "succeed", "passed")], exists=True)
    result, _ = follow(admin)
    assert result.resumed and admin.uploads == [] and result.uploaded == []


def test_the_policy_says_up_front_how_long_it_needs() -> None:
    shipped = RolloutPolicy.load_from(REPO)
    line = describe(shipped)
    assert minimum_seconds(shipped) == sum(g.min_soak_seconds for g in shipped.groups)
    assert line.startswith("the rollout policy needs at least ") and "canary" in line


def test_the_demo_policy_is_fast_and_still_gated() -> None:
    demo = demo_policy()
    assert minimum_seconds(demo) <= 120 and [g.percent for g in demo.groups][-1] == 100
    assert demo.health == RolloutPolicy().health.model_copy(update={"min_inferences": 200})


def test_rollout_resume_without_a_fleet_server_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from tests.support.cli_helpers import run_cli

    monkeypatch.delenv("TINYMLOPS_FLEET_URL", raising=False)
    code, _, err = run_cli(monkeypatch, capsys, "rollout", "resume", "--root", REPO)
    assert code == 1 and err.strip() == "error: no fleet server: pass --fleet-url or set TINYMLOPS_FLEET_URL"
