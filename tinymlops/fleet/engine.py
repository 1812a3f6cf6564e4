"""The rollout engine: a pure state machine over a staged rollout.

No I/O and no wall clock: every call takes the time it should believe (`now`) and returns a new
state plus the actions the caller (fleet server or Prefect flow) must carry out. State is a JSON-able
pydantic model, so a rollout resumes from whatever was stored last, after any crash.

States: created → running ⇄ paused → succeeded | aborted | rolled_back.
Groups are cumulative shares of each device class; a device joins the group in which its hash rank
first falls inside the share, and is never assigned twice (callers pass who is already in).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tinymlops.errors import RolloutError
from tinymlops.fleet.gates import HealthReport, evaluate_gates
from tinymlops.fleet.policy import RolloutPolicy
from tinymlops.fleet.telemetry import Aggregate

Status = Literal["created", "running", "paused", "aborted", "rolled_back", "succeeded"]
Verb = Literal["start", "pause", "resume", "abort", "rollback"]
Decision = Literal["idle", "wait", "advance", "succeed", "pause", "rollback", "abort"]
FINAL: frozenset[str] = frozenset({"aborted", "rolled_back", "succeeded"})

# Which verb is legal from which state, and where it leads.
_VERBS: dict[str, dict[str, str]] = {
    "start": {"created": "running"},
    "pause": {"running": "paused"},
    "resume": {"paused": "running"},
    "abort": {"created": "aborted", "running": "aborted", "paused": "aborted"},
    "rollback": {"running": "rolled_back", "paused": "rolled_back", "aborted": "rolled_back"},
}


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Transition(Frozen):
    at: datetime
    event: str  # a verb, or "advance"/"succeed"/"pause"/"rollback" decided by step()
    actor: str
    source: Status
    target: Status
    group_index: int
    reason: str = ""


class RolloutState(Frozen):
    rollout_id: str = Field(min_length=1, max_length=64)
    release: str
    release_sequence: int = Field(ge=0)
    rollback_release: str | None = None  # the previous model re-signed with a higher sequence
    rollback_sequence: int | None = None
    policy: RolloutPolicy = RolloutPolicy()
    status: Status = "created"
    group_index: int = -1  # -1: no group assigned yet
    group_started_at: datetime | None = None
    acknowledged: bool = False  # an operator resumed past a pause: this group's error verdicts are waived
    supersedes: str | None = None  # the rollout of the same classes this one replaced (aborted on create)
    history: list[Transition] = Field(default_factory=list)

    def model_post_init(self, _: object) -> None:
        if self.rollback_sequence is not None and self.rollback_sequence <= self.release_sequence:
            raise RolloutError(
                f"rollback_sequence {self.rollback_sequence} must exceed release_sequence {self.release_sequence} "
                "(devices refuse a lower sequence: anti-rollback)"
            )

    @property
    def final(self) -> bool:
        return self.status in FINAL


class Counts(Frozen):
    """Outcomes over every device assigned by this rollout so far (groups are cumulative)."""

    assigned: int = Field(0, ge=0)
    confirmed: int = Field(0, ge=0)
    failed: int = Field(0, ge=0)
    reverted: int = Field(0, ge=0)

    @property
    def finished(self) -> int:
        return self.confirmed + self.failed + self.reverted

    @property
    def success_rate(self) -> float:
        return self.confirmed / self.assigned if self.assigned else 0.0

    @property
    def error_rate(self) -> float:
        return (self.failed + self.reverted) / self.assigned if self.assigned else 0.0

    @property
    def revert_rate(self) -> float:
        return self.reverted / self.assigned if self.assigned else 0.0


class Observations(Frozen):
    counts: Counts
    canary: Aggregate = Aggregate()  # telemetry of rollout devices running the new release
    control: Aggregate = Aggregate()  # same classes, same window, still on the old release
    control_population: int | None = None  # devices of the classes outside the rollout (None: control.devices)


class Action(Frozen):
    # cancel_pending: withdraw this rollout's assignments that no device has acted on yet
    kind: Literal["assign_group", "rollback", "promote", "cancel_pending"]
    group_index: int
    percent: float
    release: str
    reason: str = ""


class RolloutReport(Frozen):
    rollout_id: str
    at: datetime
    status: Status
    decision: Decision
    reason: str
    group_index: int
    group_name: str | None
    percent: float
    counts: Counts
    success_rate: float
    error_rate: float
    soaked_seconds: float | None
    health: HealthReport | None = None


class StepResult(Frozen):
    state: RolloutState
    actions: list[Action]
    report: RolloutReport


# -- group selection ------------------------------------------------------------------------------
def device_rank(rollout_id: str, device_id: str) -> int:
    """Stable pseudo-random order of devices within one rollout (a new rollout reshuffles)."""
    return int.from_bytes(hashlib.sha256(f"{rollout_id}\x00{device_id}".encode()).digest()[:8], "big")


def select_devices(
    rollout_id: str, devices: Iterable[tuple[str, str]], percent: float, already: set[str] | frozenset[str]
) -> list[tuple[str, str]]:
    """(device_id, class) pairs newly inside `percent` of their class, excluding `already` assigned.

    Per class the first ceil(percent·n) devices in hash order are in, so every class gets at least
    one canary, the same device always lands in the same group, and nobody is picked twice.
    """
    by_class: dict[str, list[str]] = defaultdict(list)
    for device_id, device_class in devices:
        by_class[device_class].append(device_id)
    chosen: list[tuple[str, str]] = []
    for device_class, ids in sorted(by_class.items()):
        ids.sort(key=lambda d: device_rank(rollout_id, d))
        target = math.ceil(len(ids) * percent / 100 - 1e-9)
        chosen.extend((d, device_class) for d in ids[:target] if d not in already)
    return chosen


# -- verbs ----------------------------------------------------------------------------------------
def apply(state: RolloutState, verb: Verb, now: datetime, actor: str, reason: str = "") -> StepResult:
    """An operator's verb. Illegal verbs raise RolloutError naming the state; legal ones return the
    actions they imply (start assigns the first group, rollback reassigns the previous model)."""
    target = _VERBS.get(verb, {}).get(state.status)
    if target is None:
        raise RolloutError(f"rollout {state.rollout_id}: cannot {verb} while {state.status}")
    actions: list[Action] = []
    changes: dict[str, object] = {"status": target}
    if verb == "start":
        changes.update(group_index=0, group_started_at=now, acknowledged=False)
        actions.append(_assign(state, 0, "started"))
    elif verb == "resume":
        changes["acknowledged"] = True
    elif verb == "rollback":
        actions.append(_rollback(state, reason or f"rollback by {actor}"))
    elif verb == "abort" and state.status != "created":
        actions.append(_cancel(state, reason or f"abort by {actor}"))
    new = _transition(state, now, verb, actor, target, reason, **changes)
    return StepResult(state=new, actions=actions, report=report_for(new, now, _verb_decision(verb), reason or verb))


def _verb_decision(verb: str) -> Decision:
    decisions = {"start": "advance", "pause": "pause", "rollback": "rollback", "abort": "abort"}
    return decisions.get(verb, "idle")  # type: ignore[return-value]  # every value is a Decision


# -- the tick -------------------------------------------------------------------------------------
def step(state: RolloutState, observations: Observations, now: datetime) -> StepResult:
    """Judge the current group against its policy and decide: wait, advance, succeed, pause or
    roll back. Call it as often as you like; it only acts once a verdict is due."""
    counts = observations.counts
    if state.status != "running":
        return StepResult(state=state, actions=[], report=report_for(state, now, "idle", state.status, counts))
    group = state.policy.groups[state.group_index]
    soaked = (now - state.group_started_at).total_seconds() if state.group_started_at else 0.0
    revert_rate = counts.revert_rate
    population = (
        observations.control.devices if observations.control_population is None else observations.control_population
    )
    need = (max(1, min(group.min_devices, counts.assigned)), max(1, min(group.min_devices, population)))
    health = evaluate_gates(
        observations.canary, observations.control, revert_rate, state.policy.health, need, counts.assigned
    )

    def verdict(decision: Decision, reason: str, **changes: object) -> StepResult:
        actions: list[Action] = []
        new = state
        if decision == "advance":
            nxt = state.group_index + 1
            actions.append(_assign(state, nxt, reason))
            new = _transition(state, now, "advance", "engine", "running", reason, group_index=nxt, **changes)
        elif decision == "succeed":
            actions.append(
                Action(kind="promote", group_index=state.group_index, percent=100, release=state.release, reason=reason)
            )
            new = _transition(state, now, "succeed", "engine", "succeeded", reason)
        elif decision == "pause":
            new = _transition(state, now, "pause", "engine", "paused", reason)
        elif decision == "rollback":
            actions.append(_rollback(state, reason))
            new = _transition(state, now, "rollback", "engine", "rolled_back", reason)
        elif decision == "abort":
            actions.append(_cancel(state, reason))
            new = _transition(state, now, "abort", "engine", "aborted", reason)
        return StepResult(state=new, actions=actions, report=report_for(new, now, decision, reason, counts, health))

    enough = counts.assigned > 0 and counts.finished >= min(group.min_devices, counts.assigned)
    if not state.acknowledged:
        if enough and counts.error_rate > group.error_threshold:
            reason = (
                f"group {group.name}: error rate {counts.error_rate:.3f} > {group.error_threshold} "
                f"({counts.failed} failed, {counts.reverted} reverted of {counts.assigned})"
            )
            return verdict(*_decision_for(state, group.error_action, reason))
        if health.judged and not health.passed:
            return verdict(*_decision_for(state, state.policy.health.action, f"group {group.name}: {health.reason}"))
    if soaked < group.min_soak_seconds:
        return verdict("wait", f"group {group.name}: soaking {soaked:.0f}/{group.min_soak_seconds:.0f} s")
    if not enough:
        return verdict("wait", f"group {group.name}: {counts.finished} finished, need {group.min_devices}")
    if counts.success_rate < group.success_threshold:
        return verdict(
            "wait", f"group {group.name}: success rate {counts.success_rate:.3f} < {group.success_threshold}"
        )
    if not health.judged and population > 0:
        return verdict("wait", f"group {group.name}: {health.reason}")
    # With no control left (the last group covers everyone), the gates judged the earlier groups.
    passed = f"group {group.name} passed: success {counts.success_rate:.3f}, {health.reason}"
    if state.group_index + 1 == len(state.policy.groups):
        return verdict("succeed", passed)
    return verdict("advance", passed, group_started_at=now, acknowledged=False)


def _decision_for(state: RolloutState, action: str, reason: str) -> tuple[Decision, str]:
    """abort_and_rollback with no previous release to go back to (a first release) aborts: no more
    devices get it, those that have it keep it."""
    if action != "abort_and_rollback":
        return "pause", reason
    if state.rollback_release is None:
        return "abort", f"{reason}; no previous release to roll back to"
    return "rollback", reason


def _assign(state: RolloutState, index: int, reason: str) -> Action:
    group = state.policy.groups[index]
    return Action(kind="assign_group", group_index=index, percent=group.percent, release=state.release, reason=reason)


def _cancel(state: RolloutState, reason: str) -> Action:
    group = state.policy.groups[max(state.group_index, 0)]
    return Action(
        kind="cancel_pending",
        group_index=state.group_index,
        percent=group.percent,
        release=state.release,
        reason=reason,
    )


def _rollback(state: RolloutState, reason: str) -> Action:
    if state.rollback_release is None:
        raise RolloutError(f"rollout {state.rollout_id}: no rollback_release to roll back to")
    return Action(
        kind="rollback",
        group_index=state.group_index,
        percent=state.policy.groups[max(state.group_index, 0)].percent,
        release=state.rollback_release,
        reason=reason,
    )


def _transition(
    state: RolloutState, now: datetime, event: str, actor: str, target: str, reason: str, **changes: object
) -> RolloutState:
    entry = Transition(
        at=now,
        event=event,
        actor=actor,
        source=state.status,
        target=target,
        group_index=int(changes.get("group_index", state.group_index)),  # type: ignore[call-overload]  # an int or absent
        reason=reason,
    )
    return state.model_copy(update={**changes, "status": target, "history": [*state.history, entry]})


def report_for(
    state: RolloutState,
    now: datetime,
    decision: Decision,
    reason: str,
    counts: Counts | None = None,
    health: HealthReport | None = None,
) -> RolloutReport:
    counts = counts or Counts()
    group = state.policy.groups[state.group_index] if state.group_index >= 0 else None
    soaked = (now - state.group_started_at).total_seconds() if state.group_started_at else None
    return RolloutReport(
        rollout_id=state.rollout_id,
        at=now,
        status=state.status,
        decision=decision,
        reason=reason,
        group_index=state.group_index,
        group_name=group.name if group else None,
        percent=group.percent if group else 0.0,
        counts=counts,
        success_rate=counts.success_rate,
        error_rate=counts.error_rate,
        soaked_seconds=soaked,
        health=health,
    )
