"""simulate_rollout end to end: real bundles of the session's default model, the real fleet server
over loopback HTTP, the real firmware emulator on every device, behaviour measured on TFLM."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tinymlops.fleet.policy import GroupPolicy, HealthPolicy, RolloutPolicy
from tinymlops.fleetsim.simulator import SimulationConfig
from tinymlops.ml.data.split import load_split
from tinymlops.pipeline import stages

bundle_lib = pytest.importorskip("tinymlops.bundle", reason="bundle library not present")
from tests.support.paths import REPO  # noqa: E402

POLICY = RolloutPolicy(
    groups=[
        GroupPolicy(name="canary", percent=10, min_soak_seconds=600, min_devices=2),
        GroupPolicy(name="half", percent=50, min_soak_seconds=600, min_devices=5),
        GroupPolicy(name="all", percent=100, min_soak_seconds=600, min_devices=5, error_threshold=0.05),
    ],
    health=HealthPolicy(min_inferences=300),
)


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory, tflite_dir: Path, prepared_dir: Path):  # type: ignore[no-untyped-def]
    """Good (seq 2), bad (seq 2: degraded last layer) and the old model re-signed (seq 3)."""
    from tinymlops.device.profiles import load_profiles
    from tinymlops.fleetsim.simulation import build_release
    from tinymlops.ml.degrade import degrade_model

    work = tmp_path_factory.mktemp("simrelease")
    keys = bundle_lib.init_keys(work / "keys", None, now=datetime.now(timezone.utc) - timedelta(days=1))
    signer = bundle_lib.load_signer(work / "keys", None)
    profiles = [p for p in load_profiles(REPO) if p.name in ("nrf52840", "stm32h7a3")]
    model = (tflite_dir / stages.INT8_TFLITE).read_bytes()
    field = load_split(prepared_dir, "test").x
    made = {
        name: build_release(m, profiles, signer, work / name, sequence=seq, model_version=name, field_x=field)
        for name, m, seq in (("good", model, 2), ("bad", degrade_model(model, seed=1), 2), ("back", model, 3))
    }
    return keys.root_public, profiles, made


def config(profiles, prepared_dir: Path, devices: int = 40) -> SimulationConfig:  # type: ignore[no-untyped-def]
    return SimulationConfig(
        devices=devices,
        classes=[p.device_class for p in profiles],
        profiles=profiles,
        field_data=prepared_dir,
        firmware_all_up_to=devices,
    )


def test_good_release_succeeds_on_the_real_firmware(releases, prepared_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tinymlops.fleetsim.simulation import plot_states, simulate_rollout

    trust, profiles, made = releases
    seen = []
    result = simulate_rollout(
        "good",
        made["good"],
        "back",
        made["back"],
        trust,
        config(profiles, prepared_dir),
        POLICY,
        tmp_path / "sim",
        on_round=lambda i, stats, report: seen.append((i, report.decision)),
    )
    assert result.status == "succeeded" and result.decision == "succeed", result.reports[-1].reason
    assert [d for _, d in seen] == ["advance", "advance", "succeed"]
    assert result.firmware_devices == 40 and result.states[-1] == {"new": 40}
    assert result.states[0]["new"] == 4  # 10 % of each class: 2 + 2 canaries
    # what the gates saw was measured on TFLM from the bundle's model, per class latency from the estimator
    measured = result.behaviour[2]
    assert measured.source == "tflm" and measured.samples == len(load_split(prepared_dir, "test").y)
    assert set(measured.latency_ms_by_class) == {p.device_class for p in profiles}
    assert all(r.health is None or r.health.passed for r in result.reports)
    png = plot_states(result, tmp_path / "states.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_model_is_caught_by_the_gates_though_every_install_succeeded(  # type: ignore[no-untyped-def]
    releases, prepared_dir: Path, tmp_path: Path
) -> None:
    from tinymlops.fleetsim.simulation import simulate_rollout

    trust, profiles, made = releases
    result = simulate_rollout(
        "bad", made["bad"], "back", made["back"], trust, config(profiles, prepared_dir), POLICY, tmp_path / "sim"
    )
    first = result.reports[0]
    assert first.counts.success_rate == 1.0 and first.counts.failed == first.counts.reverted == 0  # installs: fine
    assert result.status == "rolled_back" and first.group_name == "canary"
    failed = {g.gate for g in first.health.failed}
    assert {"confidence_drop", "class_psi"} <= failed, first.reason
    assert result.states[-1] == {"old": 36, "rolled_back": 4}  # the canaries run the old model again, at seq 3


def test_first_release_with_a_failed_gate_is_aborted_without_reassigning(  # type: ignore[no-untyped-def]
    releases, prepared_dir: Path, tmp_path: Path
) -> None:
    from tinymlops.fleetsim.simulation import simulate_rollout
    from tinymlops.fleetsim.simulator import ReleaseBehaviour

    trust, profiles, made = releases
    # no previous model: the fleet's old behaviour comes from an override (the factory model was 3× faster)
    base = config(profiles, prepared_dir, devices=20)
    fast = {p.device_class: 0.01 for p in profiles}
    cfg = base.model_copy(update={"behaviour": {1: ReleaseBehaviour(latency_ms=0.01, latency_ms_by_class=fast)}})
    result = simulate_rollout("good", made["good"], None, None, trust, cfg, POLICY, tmp_path / "sim")
    assert result.status == "aborted", result.reports[-1].reason
    assert "p95_latency_ratio" in {g.gate for g in result.reports[-1].health.failed}
    assert "rolled_back" not in result.states[-1] and result.states[-1]["new"] == 2  # nobody reassigned
