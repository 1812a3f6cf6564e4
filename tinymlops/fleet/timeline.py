"""A rollout's story for people: per group, how many of its devices were confirmed, pending,
reverted or failed over time, and where the engine or an operator decided something (the gates'
verdicts: advance, pause, rollback…). Pure: built from the rollout's state and its members' rows
(the store's group_members), drawn by the dashboard (SVG) and the rollout report (PNG)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from tinymlops.fleet.engine import RolloutState

STATES = ("confirmed", "pending", "reverted", "failed")
FINAL_OUTCOMES = ("confirmed", "failed", "reverted")
MAX_STEPS = 120  # per group: events are bucketed in time beyond this


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Step(Frozen):
    at: datetime
    counts: dict[str, int]


class GroupTimeline(Frozen):
    index: int
    name: str
    percent: float
    members: int
    steps: list[Step]

    @property
    def last(self) -> dict[str, int]:
        return self.steps[-1].counts if self.steps else {}


class Mark(Frozen):
    at: datetime
    event: str  # start, advance, pause, resume, rollback, abort, succeed
    actor: str
    group_index: int
    reason: str


class RolloutTimeline(Frozen):
    rollout_id: str
    status: str
    start: datetime | None
    end: datetime | None
    groups: list[GroupTimeline]
    marks: list[Mark]


def timeline(state: RolloutState, members: Sequence[dict], now: datetime) -> RolloutTimeline:
    """`members`: rows with group_index, assigned_at, outcome, outcome_at (Store.group_members)."""
    by_group: dict[int, list[dict]] = defaultdict(list)
    for row in members:
        by_group[row["group_index"]].append(row)
    end = state.history[-1].at if state.final and state.history else now
    groups = []
    for index, group in enumerate(state.policy.groups):
        rows = by_group.get(index, [])
        events: list[tuple[datetime, str, int]] = []
        for r in rows:
            events.append((r["assigned_at"], "pending", 1))
            if r["outcome"] in FINAL_OUTCOMES and r["outcome_at"] is not None:
                events += [(r["outcome_at"], "pending", -1), (r["outcome_at"], r["outcome"], 1)]
        events.sort(key=lambda e: e[0])
        steps: list[Step] = []
        if events:
            current: dict[str, int] = dict.fromkeys(STATES, 0)
            t0 = events[0][0]
            bucket = max((events[-1][0] - t0).total_seconds() / MAX_STEPS, 1e-6)
            last_key = None
            for at, kind, delta in events:
                current[kind] += delta
                key = math.floor((at - t0).total_seconds() / bucket)
                if key == last_key and steps:
                    steps[-1] = Step(at=steps[-1].at, counts=dict(current))
                else:
                    steps.append(Step(at=at, counts=dict(current)))
                    last_key = key
            if end > steps[-1].at:
                steps.append(Step(at=end, counts=dict(current)))
        groups.append(
            GroupTimeline(index=index, name=group.name, percent=group.percent, members=len(rows), steps=steps)
        )
    marks = [
        Mark(at=t.at, event=t.event, actor=t.actor, group_index=t.group_index, reason=t.reason) for t in state.history
    ]
    start = next((t.at for t in state.history if t.event == "start"), None)
    return RolloutTimeline(
        rollout_id=state.rollout_id, status=state.status, start=start, end=end, groups=groups, marks=marks
    )
