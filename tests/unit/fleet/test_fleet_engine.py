"""The rollout engine as a pure state machine: verbs, group selection, thresholds, soak, gates and
rollback, driven by an explicit clock so every decision is reproducible."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tinymlops.fleet.engine import (
    Counts,
    Observations,
    RolloutError,
    RolloutState,
    apply,
    select_devices,
    step,
)
from tinymlops.fleet.policy import GroupPolicy, HealthPolicy, RolloutPolicy
from tinymlops.fleet.telemetry import CONFIDENCE_BINS, LATENCY_BINS, Aggregate

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def policy(**health: object) -> RolloutPolicy:
    groups = [
        GroupPolicy(name="canary", percent=1, min_soak_seconds=60, min_devices=3, error_action="abort_and_rollback"),
        GroupPolicy(name="half", percent=50, min_soak_seconds=60, min_devices=3, error_action="pause"),
        GroupPolicy(name="all", percent=100, min_soak_seconds=60, min_devices=3),
    ]
    return RolloutPolicy(groups=groups, health=HealthPolicy(min_inferences=100, **health))


def state(**kw: object) -> RolloutState:
    base = dict(rollout_id="r1", release="v2", release_sequence=2, rollback_release="v1-again", rollback_sequence=3)
    return RolloutState(**{**base, "policy": policy(), **kw})


def side(devices: int, latency_bin: int = 5, conf_bin: int = 18, classes: tuple[int, ...] = (50, 50)) -> Aggregate:
    n = sum(classes)
    lat, conf = [0] * LATENCY_BINS, [0] * CONFIDENCE_BINS
    lat[latency_bin], conf[conf_bin] = n, n
    return Aggregate(
        devices=devices, inference_count=n, latency_hist=lat, confidence_hist=conf, class_hist=list(classes)
    )


HEALTHY = dict(canary=side(3), control=side(50))


def started() -> RolloutState:
    return apply(state(), "start", T0, "alice").state


def test_start_assigns_the_canary_and_records_who() -> None:
    result = apply(state(), "start", T0, "alice")
    assert result.state.status == "running" and result.state.group_index == 0
    assert [(a.kind, a.group_index, a.percent) for a in result.actions] == [("assign_group", 0, 1.0)]
    assert result.state.history[-1].actor == "alice" and result.state.history[-1].target == "running"


@pytest.mark.parametrize(
    ("status", "verb"),
    [
        ("created", "pause"),
        ("created", "resume"),
        ("running", "resume"),
        ("succeeded", "abort"),
        ("rolled_back", "rollback"),
    ],
)
def test_illegal_verbs_are_refused_with_the_state(status: str, verb: str) -> None:
    with pytest.raises(RolloutError, match=f"cannot {verb} while {status}"):
        apply(state(status=status), verb, T0, "bob")  # type: ignore[arg-type]


def test_pause_resume_abort_cycle() -> None:
    s = apply(started(), "pause", T0, "bob").state
    assert s.status == "paused"
    # a paused rollout does nothing whatever it observes
    idle = step(s, Observations(counts=Counts(assigned=3, failed=3)), T0 + timedelta(hours=1))
    assert idle.actions == [] and idle.state == s and idle.report.decision == "idle"
    s = apply(s, "resume", T0, "bob").state
    assert s.status == "running" and s.acknowledged
    s = apply(s, "abort", T0, "bob").state
    assert s.status == "aborted" and s.final
    assert [t.event for t in s.history] == ["start", "pause", "resume", "abort"]


def test_waits_for_soak_then_advances_then_succeeds() -> None:
    s = started()
    good = Observations(counts=Counts(assigned=3, confirmed=3), **HEALTHY)
    early = step(s, good, T0 + timedelta(seconds=30))
    assert early.report.decision == "wait" and "soaking" in early.report.reason and early.actions == []
    nxt = step(s, good, T0 + timedelta(seconds=61))
    assert nxt.report.decision == "advance"
    assert [(a.kind, a.group_index, a.percent) for a in nxt.actions] == [("assign_group", 1, 50.0)]
    assert nxt.state.group_index == 1 and nxt.state.group_started_at == T0 + timedelta(seconds=61)
    s = step(nxt.state, good, T0 + timedelta(seconds=200)).state
    assert s.group_index == 2
    # last group: no control left, so the gates (judged on earlier groups) no longer block
    final = step(s, Observations(counts=Counts(assigned=100, confirmed=99), canary=side(99)), T0 + timedelta(hours=1))
    assert final.report.decision == "succeed" and final.state.status == "succeeded"
    assert [a.kind for a in final.actions] == ["promote"]


def test_min_devices_before_judging() -> None:
    s = started()
    one_failed = Observations(counts=Counts(assigned=10, failed=1, confirmed=1), **HEALTHY)
    result = step(s, one_failed, T0 + timedelta(seconds=120))
    assert result.report.decision == "wait" and "need 3" in result.report.reason


def test_error_threshold_in_canary_rolls_back_to_higher_sequence() -> None:
    s = started()
    bad = Observations(counts=Counts(assigned=10, confirmed=7, failed=2, reverted=1), **HEALTHY)
    result = step(s, bad, T0 + timedelta(seconds=5))  # errors trip before the soak ends
    assert result.report.decision == "rollback" and result.state.status == "rolled_back"
    assert "error rate 0.300" in result.report.reason and "2 failed, 1 reverted" in result.report.reason
    (action,) = result.actions
    assert action.kind == "rollback" and action.release == "v1-again"


def test_error_threshold_with_pause_action_pauses_and_resume_waives_it() -> None:
    s = step(started(), Observations(counts=Counts(assigned=3, confirmed=3), **HEALTHY), T0 + timedelta(seconds=61))
    s = s.state
    bad = Observations(counts=Counts(assigned=50, confirmed=45, failed=5), **HEALTHY)
    paused = step(s, bad, T0 + timedelta(seconds=70))
    assert paused.report.decision == "pause" and paused.state.status == "paused" and paused.actions == []
    resumed = apply(paused.state, "resume", T0 + timedelta(seconds=80), "carol").state
    again = step(resumed, bad, T0 + timedelta(seconds=90))
    assert again.report.decision == "wait"  # the operator accepted the errors; soak still applies


def test_failed_health_gate_names_the_gate_and_numbers() -> None:
    s = started()
    slow = Observations(counts=Counts(assigned=3, confirmed=3), canary=side(3, latency_bin=9), control=side(50))
    result = step(s, slow, T0 + timedelta(seconds=61))
    assert result.report.decision == "rollback"
    assert result.report.health is not None
    (failed,) = result.report.health.failed
    assert failed.gate == "p95_latency_ratio" and failed.value is not None and failed.value > 1.25
    assert "p95_latency_ratio failed" in result.report.reason


def test_install_success_alone_does_not_pass_a_drifted_model() -> None:
    """Every device confirmed, yet the predictions moved: the gates stop it."""
    s = started()
    drift = Observations(
        counts=Counts(assigned=3, confirmed=3), canary=side(3, classes=(90, 10)), control=side(50, classes=(50, 50))
    )
    result = step(s, drift, T0 + timedelta(seconds=61))
    assert result.report.decision == "rollback"
    assert [g.gate for g in result.report.health.failed] == ["class_psi"]


def test_waits_for_telemetry_before_advancing() -> None:
    s = started()
    thin = Observations(counts=Counts(assigned=3, confirmed=3), canary=side(3, classes=(5, 5)), control=side(50))
    result = step(s, thin, T0 + timedelta(seconds=61))
    assert result.report.decision == "wait" and "waiting for telemetry" in result.report.reason


def test_state_round_trips_through_json_and_resumes_identically() -> None:
    s = started()
    stored = s.model_dump_json()
    restored = RolloutState.model_validate_json(stored)
    obs = Observations(counts=Counts(assigned=3, confirmed=3), **HEALTHY)
    now = T0 + timedelta(seconds=61)
    assert step(restored, obs, now) == step(s, obs, now)


def test_rollback_sequence_must_exceed_release_sequence() -> None:
    with pytest.raises(RolloutError, match="anti-rollback"):
        state(rollback_sequence=2)


def test_rollback_without_a_rollback_release_is_refused() -> None:
    with pytest.raises(RolloutError, match="no rollback_release"):
        apply(apply(state(rollback_release=None, rollback_sequence=None), "start", T0, "a").state, "rollback", T0, "a")


# -- group selection ------------------------------------------------------------------------------
FLEET = [(f"dev-{i:05d}", "m4" if i % 3 else "m7") for i in range(3000)]


def test_groups_take_the_share_of_each_class_and_never_repeat_a_device() -> None:
    already: set[str] = set()
    sizes = []
    for percent in (1, 10, 50, 100):
        chosen = select_devices("r1", FLEET, percent, already)
        assert not {d for d, _ in chosen} & already
        already |= {d for d, _ in chosen}
        sizes.append(len(already))
        per_class = {c: sum(1 for d, k in FLEET if k == c and d in already) for c in ("m4", "m7")}
        assert per_class == {"m4": -(-2000 * percent // 100), "m7": -(-1000 * percent // 100)}
    assert sizes == [30, 300, 1500, 3000]


def test_group_membership_is_stable_and_deterministic() -> None:
    first = select_devices("r1", FLEET, 10, set())
    assert select_devices("r1", list(reversed(FLEET)), 10, set()) == first
    # late enrolments do not push out devices that were already chosen at a smaller share
    grown = FLEET + [(f"late-{i}", "m4") for i in range(100)]
    assert {d for d, _ in select_devices("r1", FLEET, 1, set())} <= {
        d for d, _ in select_devices("r1", grown, 10, set())
    }
    assert select_devices("r2", FLEET, 10, set()) != first  # another rollout reshuffles


def test_tiny_class_still_gets_a_canary() -> None:
    chosen = select_devices("r1", [("a", "rare"), ("b", "rare"), *FLEET[:200]], 1, set())
    assert sum(1 for _, c in chosen if c == "rare") == 1


def test_abort_withdraws_pending_assignments() -> None:
    result = apply(started(), "abort", T0, "bob", "pulling the release")
    assert result.state.status == "aborted" and result.report.decision == "abort"
    assert [(a.kind, a.release) for a in result.actions] == [("cancel_pending", "v2")]
    # a rollout that never started has nothing to withdraw
    assert apply(state(), "abort", T0, "bob").actions == []


def test_a_first_release_that_trips_abort_and_rollback_is_aborted() -> None:
    """Nothing to roll back to: the engine stops handing the release out instead of failing."""
    s = apply(state(rollback_release=None, rollback_sequence=None), "start", T0, "alice").state
    bad = step(s, Observations(counts=Counts(assigned=3, confirmed=1, failed=2)), T0 + timedelta(seconds=61))
    assert bad.state.status == "aborted" and bad.report.decision == "abort"
    assert "no previous release to roll back to" in bad.report.reason
    assert [a.kind for a in bad.actions] == ["cancel_pending"]
    with pytest.raises(RolloutError, match="no rollback_release"):
        apply(s, "rollback", T0, "bob")
