"""Driving rollouts against the store: verbs and ticks, each one transaction.

This is the seam a Prefect flow can use directly (no HTTP), and what the server's admin API and
its background ticker call.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from tinymlops.fleet.engine import RolloutReport, RolloutState, StepResult, Verb, apply, report_for, step
from tinymlops.fleet.policy import RolloutPolicy
from tinymlops.fleet.store import NotFound, Store, StoreConflict

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class RolloutService:
    def __init__(self, store: Store, clock: Clock = utcnow) -> None:
        self.store = store
        self.clock = clock

    def create(
        self,
        rollout_id: str,
        release_id: str,
        rollback_release_id: str | None,
        policy: RolloutPolicy,
        actor: str,
    ) -> RolloutState:
        release, bundles = self.store.release(release_id)
        if not bundles:
            raise StoreConflict(f"release {release_id} has no bundles")
        rollback_sequence = None
        if rollback_release_id is not None:
            back, back_bundles = self.store.release(rollback_release_id)
            if back.sequence <= release.sequence:
                raise StoreConflict(
                    f"rollback release {rollback_release_id} has sequence {back.sequence}, it must exceed "
                    f"{release.sequence} (devices refuse lower sequences)"
                )
            missing = {b.device_class for b in bundles} - {b.device_class for b in back_bundles}
            if missing:
                raise StoreConflict(f"rollback release {rollback_release_id} lacks classes {sorted(missing)}")
            rollback_sequence = back.sequence
        state = RolloutState(
            rollout_id=rollout_id,
            release=release_id,
            release_sequence=release.sequence,
            rollback_release=rollback_release_id,
            rollback_sequence=rollback_sequence,
            policy=policy,
        )
        self.store.create_rollout(state, actor, self.clock())
        return state

    def verb(self, rollout_id: str, verb: Verb, actor: str, reason: str = "") -> StepResult:
        now = self.clock()
        with self.store.write() as c:
            state, version = self.store.load_rollout(c, rollout_id)
            result = apply(state, verb, now, actor, reason)
            self.store.apply_actions(c, result.state, result.actions, now)
            self.store.save_rollout(c, result.state, version, now)
            self.store._audit(c, actor, verb, rollout_id, reason or result.report.reason, now)
        return result

    def tick(self, rollout_id: str) -> RolloutReport:
        """Observe, judge, act, save — atomically. Safe to repeat and safe after a crash."""
        now = self.clock()
        with self.store.write() as c:
            state, version = self.store.load_rollout(c, rollout_id)
            observations = self.store.observations(c, state)
            result = step(state, observations, now)
            if result.state != state:
                self.store.apply_actions(c, result.state, result.actions, now)
                self.store.save_rollout(c, result.state, version, now)
                self.store._audit(c, "engine", result.report.decision, rollout_id, result.report.reason, now)
        return result.report

    def status(self, rollout_id: str) -> tuple[RolloutState, RolloutReport]:
        now = self.clock()
        with self.store.read() as c:
            state, _ = self.store.load_rollout(c, rollout_id)
            observations = self.store.observations(c, state)
        return state, report_for(state, now, "idle", f"status {state.status}", observations.counts)

    def tick_running(self) -> list[RolloutReport]:
        reports = []
        for rollout_id in self.store.rollout_ids(["running"]):
            try:
                reports.append(self.tick(rollout_id))
            except (StoreConflict, NotFound):
                continue  # another replica stepped it first
        return reports
