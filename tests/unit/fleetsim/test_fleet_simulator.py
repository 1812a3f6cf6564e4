"""Rollout scenarios on a simulated fleet: devices as asyncio tasks speaking real HTTP to a real
fleet server on loopback, with an accelerated clock; bundles are really signed and verified."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.support.bundle_keys import sign_releases
from tinymlops.fleet.api import create_app
from tinymlops.fleet.api.serving import serve_in_thread
from tinymlops.fleet.client import FleetAdmin
from tinymlops.fleet.config import FleetSettings
from tinymlops.fleet.policy import GroupPolicy, HealthPolicy, RolloutPolicy
from tinymlops.fleetsim.simulator import ReleaseBehaviour, SimulationConfig, Simulator, bundle_installer

bundle_lib = pytest.importorskip("tinymlops.bundle", reason="bundle library not present")
ADMIN, PROVISION = secrets.token_hex(12), secrets.token_hex(12)
T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)
CLASSES = ["m4", "m7"]
# With 100 devices the canary holds 3 m7 devices; this seed makes one of them crash (P = 1 - 0.8**3).
SEED_WITH_A_CANARY_CRASH = 1


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("simkeys")
    paths = bundle_lib.init_keys(directory, None, now=T0 - timedelta(days=1))
    signer = bundle_lib.load_signer(directory, None, now=T0)
    made = sign_releases(signer, directory, {"r2": 2, "r1b": 3}, CLASSES, payload=5000, now=T0 - timedelta(hours=1))
    return paths, made


POLICY = RolloutPolicy(
    groups=[
        GroupPolicy(name="canary", percent=5, min_soak_seconds=60, min_devices=4, error_threshold=0.05),
        GroupPolicy(name="half", percent=50, min_soak_seconds=60, min_devices=10, error_threshold=0.05),
        GroupPolicy(name="all", percent=100, min_soak_seconds=60, min_devices=10, error_threshold=0.05),
    ],
    health=HealthPolicy(min_inferences=400),
)


@pytest.fixture
def server(tmp_path: Path, signed) -> Iterator[tuple[str, Clock, FleetAdmin]]:  # type: ignore[no-untyped-def]
    paths, made = signed
    settings = FleetSettings(
        db_url=f"sqlite:///{tmp_path / 'fleet.db'}",
        bundle_dir=tmp_path / "bundles",
        admin_tokens={"ops": ADMIN},
        provisioning_token=PROVISION,
        trust_anchor=paths.root_public,
        tick_seconds=None,
        policy=POLICY,
    )
    clock = Clock()
    with serve_in_thread(create_app(settings, clock=clock)) as url, FleetAdmin(url, ADMIN) as admin:
        for (release, device_class), path in made.items():
            admin.upload_bundle(release, device_class, path)
        yield url, clock, admin


def rollout(server, signed, config: SimulationConfig, rounds: int = 6):  # type: ignore[no-untyped-def]
    """Enrol, start, then per round: devices act, the clock moves a minute, the engine judges."""
    url, clock, admin = server
    trust = bundle_lib.load_trust(signed[0].root_public)

    async def go():  # type: ignore[no-untyped-def]
        async with Simulator(url, PROVISION, config, bundle_installer(trust)) as sim:
            await sim.enrol()
            admin.create_rollout("r2", rollback_release_id="r1b", rollout_id="sim")
            admin.verb("sim", "start")
            reports, stats = [], []
            for _ in range(rounds):
                clock.now += timedelta(seconds=61)
                stats.append(await sim.round(clock.now))
                reports.append(await asyncio.to_thread(admin.step, "sim"))
            return reports, stats

    return asyncio.run(go())


def test_good_release_reaches_everyone(server, signed) -> None:  # type: ignore[no-untyped-def]
    config = SimulationConfig(devices=40, classes=CLASSES, faults={"power_loss": 0.2})
    reports, stats = rollout(server, signed, config, rounds=3)
    assert [r.decision for r in reports][:3] == ["advance", "advance", "succeed"], reports[0].reason
    assert stats[-1].by_sequence == {2: 40}  # power cuts mid-download resumed with Range


def test_release_crashing_on_a_fifth_of_one_class_stops_at_the_canary(server, signed) -> None:  # type: ignore[no-untyped-def]
    config = SimulationConfig(
        devices=100,
        classes=CLASSES,
        seed=SEED_WITH_A_CANARY_CRASH,
        behaviour={2: ReleaseBehaviour(crash_share={"m7": 0.2})},
    )
    reports, stats = rollout(server, signed, config, rounds=2)
    assert reports[0].decision == "rollback" and reports[0].group_name == "canary"
    assert "error rate" in reports[0].reason
    # everyone who took the bad release runs the old model again, at a higher sequence (3)
    assert set(stats[-1].by_sequence) <= {1, 3} and stats[-1].by_sequence.get(3, 0) > 0
    assert stats[-1].by_sequence[1] + stats[-1].by_sequence.get(3, 0) == 100


def test_latency_regression_is_caught_where_install_success_passes(server, signed) -> None:  # type: ignore[no-untyped-def]
    config = SimulationConfig(devices=60, classes=CLASSES, behaviour={2: ReleaseBehaviour(latency_ms=16.0)})
    reports, _ = rollout(server, signed, config, rounds=1)
    first = reports[0]
    assert first.counts.success_rate == 1.0 and first.decision == "rollback"
    assert [g.gate for g in first.health.failed] == ["p95_latency_ratio"]


def test_prediction_drift_is_caught(server, signed) -> None:  # type: ignore[no-untyped-def]
    skewed = [4.0] + [1.0] * 9
    config = SimulationConfig(devices=60, classes=CLASSES, behaviour={2: ReleaseBehaviour(class_weights=skewed)})
    reports, _ = rollout(server, signed, config, rounds=1)
    assert reports[0].decision == "rollback"
    assert "class_psi" in [g.gate for g in reports[0].health.failed]


def test_pause_resume_and_abort_through_the_admin_api_mid_rollout(server, signed) -> None:  # type: ignore[no-untyped-def]
    url, clock, admin = server
    trust = bundle_lib.load_trust(signed[0].root_public)
    config = SimulationConfig(devices=40, classes=CLASSES)

    async def go():  # type: ignore[no-untyped-def]
        async with Simulator(url, PROVISION, config, bundle_installer(trust)) as sim:
            await sim.enrol()
            admin.create_rollout("r2", rollback_release_id="r1b", rollout_id="ops")
            admin.verb("ops", "start")

            async def round_then_step(seconds: float):  # type: ignore[no-untyped-def]
                clock.now += timedelta(seconds=seconds)
                stats = await sim.round(clock.now)
                return stats, await asyncio.to_thread(admin.step, "ops")

            _, canary = await round_then_step(61)  # canary passes → "half" is assigned
            paused = admin.verb("ops", "pause", "investigating a support ticket")
            held, while_paused = await round_then_step(0)  # "half" installs what it got; nothing is judged
            resumed = admin.verb("ops", "resume")
            judged = await asyncio.to_thread(admin.step, "ops")  # running again: judged, still soaking
            aborted = admin.verb("ops", "abort", "pulling the release")
            late, after_abort = await round_then_step(3600)
            return canary, paused, held, while_paused, resumed, judged, aborted, late, after_abort

    canary, paused, held, while_paused, resumed, judged, aborted, late, after_abort = asyncio.run(go())
    assert canary.decision == "advance" and canary.group_name == "half"  # the group it moved to
    assert paused.status == "paused" and while_paused.decision == "idle" and while_paused.status == "paused"
    assert held.by_sequence[2] == 20  # half of each class installed while paused: pause holds, it does not revoke
    assert resumed.status == "running" and judged.decision == "wait" and "soaking" in judged.reason
    assert aborted.status == "aborted" and after_abort.decision == "idle" and after_abort.status == "aborted"
    assert late.installed == 0 and late.by_sequence == {1: 20, 2: 20}  # abort: nobody beyond "half" is assigned
    audit = {(e["actor"], e["action"]) for e in admin.audit(50) if e["target"] == "ops"}
    assert {("ops", "pause"), ("ops", "resume"), ("ops", "abort")} <= audit


def test_an_install_log_the_server_never_acknowledged_is_kept_for_the_next_round() -> None:
    """A device keeps its install log until the server acknowledges it: with the server away (a
    real refused connection), the log stays unsent, to go first in the next round."""
    import asyncio
    import random

    import httpx

    from tinymlops.fleetsim.lean_http import LeanClient
    from tinymlops.fleetsim.simulator import SimDevice, _report_log

    async def away() -> SimDevice:
        async with LeanClient("http://127.0.0.1:1") as http:
            d = SimDevice(http, "dev-1", "m4", random.Random(0))
            d.credential = "token"
            with pytest.raises(httpx.TransportError):
                await _report_log(d, "r2", [("downloaded", None), ("confirmed", None)])
            return d

    d = asyncio.run(away())
    assert d.unsent == ("r2", [("downloaded", None), ("confirmed", None)], None)
