"""The rollout report's plot: per group, states over time on the group's own scale, decisions
marked, so 4 canary devices among 10,000 read as clearly as the 5,000 of the last group."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from tinymlops.fleet.engine import RolloutState, Transition
from tinymlops.fleet.policy import GroupPolicy, RolloutPolicy
from tinymlops.fleet.report_plot import plot_timeline
from tinymlops.fleet.timeline import MAX_STEPS, timeline

T0 = datetime(2026, 11, 2, 8, tzinfo=timezone.utc)


def test_four_canaries_among_ten_thousand_get_their_own_full_scale_panel(tmp_path: Path) -> None:
    groups = [GroupPolicy(name="canary", percent=0.04), GroupPolicy(name="early", percent=10)]
    groups += [GroupPolicy(name="half", percent=50), GroupPolicy(name="all", percent=100)]
    sizes = [4, 996, 4000, 5000]
    members, start = [], T0
    history = [Transition(at=T0, event="start", actor="alice", source="created", target="running", group_index=0)]
    for index, size in enumerate(sizes):
        for i in range(size):
            done = start + timedelta(seconds=5 + (i % 60))
            outcome = "reverted" if index == 0 and i == 3 else "confirmed"
            members.append(
                dict(group_index=index, assigned_at=start, outcome=outcome, outcome_at=done, device_class="m4")
            )
        start += timedelta(minutes=10)
        event = "advance" if index < 3 else "succeed"
        target = "running" if index < 3 else "succeeded"
        reason = f"group {groups[index].name} passed: all gates passed"
        history.append(
            Transition(
                at=start,
                event=event,
                actor="engine",
                source="running",
                target=target,
                group_index=min(index + 1, 3),
                reason=reason,
            )
        )
    state = RolloutState(
        rollout_id="r2",
        release="r2",
        release_sequence=2,
        policy=RolloutPolicy(groups=groups),
        status="succeeded",
        group_index=3,
        history=history,
    )
    t = timeline(state, members, start)
    assert [g.members for g in t.groups] == sizes
    canary = t.groups[0]
    assert canary.last == {"confirmed": 3, "pending": 0, "reverted": 1, "failed": 0}
    assert all(len(g.steps) <= MAX_STEPS + 1 for g in t.groups)  # bucketed: 5,000 devices, few steps
    assert [m.event for m in t.marks] == ["start", "advance", "advance", "advance", "succeed"]
    png = plot_timeline(t, tmp_path / "rollout.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
