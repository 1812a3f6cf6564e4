"""A staged rollout with attestation on, over real HTTP (uvicorn in a thread): the canary group
and a share of the rest run the emulated firmware (the C agent on the emulated nRF52840, which
installs, self-tests and signs evidence and telemetry with the key generated into its flash);
the rest are simulated devices with the Python signer. The rollout succeeds only on evidence."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest

from tests.integration.test_fleet_server import Clock
from tests.unit.device.agent import rig
from tinymlops.fleet.api import create_app
from tinymlops.fleet.api.serving import serve_in_thread
from tinymlops.fleet.client import FleetAdmin
from tinymlops.fleet.config import FleetSettings
from tinymlops.fleet.policy import GroupPolicy, HealthPolicy, RolloutPolicy
from tinymlops.fleetsim.attest import attach_emulated
from tinymlops.fleetsim.simulator import SimulationConfig, Simulator, bundle_installer, firmware_installer

ADMIN = "admin-attest-fleetsim"
POLICY = RolloutPolicy(
    groups=[
        GroupPolicy(name="canary", percent=25, error_action="abort_and_rollback", min_soak_seconds=60,
                    min_devices=1, success_threshold=0.9, error_threshold=0.1),
        GroupPolicy(name="all", percent=100, error_action="pause", min_soak_seconds=60, min_devices=1,
                    success_threshold=0.9, error_threshold=0.1),
    ],
    health=HealthPolicy(min_inferences=200),
)  # fmt: skip


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory):
    rig.use(rig.EMULATED)
    try:
        profile = rig.profile()
        out = tmp_path_factory.mktemp("release")
        image = rig.model(2, 96, 24)  # a compiled TMR1 image the emulated runtime runs
        path = out / "r2.bundle"
        path.write_bytes(rig.bundle(2, payload=image, device_class=profile.device_class))
        yield profile, path
    finally:
        rig.use("host")


def _rollout(profile, bundle: Path, attested_devices: bool) -> tuple[str, int, int]:  # type: ignore[no-untyped-def]
    clock = Clock()
    clock.now = rig.NOW
    with tempfile.TemporaryDirectory() as tmp:
        settings = FleetSettings(
            db_url=f"sqlite:///{tmp}/fleet.db",
            bundle_dir=Path(tmp) / "bundles",
            admin_tokens={"alice": ADMIN},
            trust_anchor=rig.keydir() / "root.pub",
            vendor=rig.VENDOR,
            tick_seconds=None,
            policy=POLICY,
            attestation=True,
        )
        config = SimulationConfig(
            devices=8, classes=[profile.device_class], attestation=True, concurrency=8,
            emulated_canary=True, emulated_share=0.25,
        )  # fmt: skip
        with serve_in_thread(create_app(settings, clock=clock)) as url, FleetAdmin(url, ADMIN) as admin:
            admin.upload_bundle("r2", profile.device_class, bundle)
            token = admin.create_token("lab", [profile.device_class], rig.NOW + timedelta(days=1), 8, "acme")

            async def drive() -> tuple[str, int, int]:
                installer = firmware_installer(bundle_installer(rig.trust(), rig.VENDOR))
                async with Simulator(url, token, config, installer, vendor=rig.VENDOR) as sim:
                    emulated = 0
                    if attested_devices:

                        def prepare(devices: list) -> None:
                            nonlocal emulated
                            emulated = attach_emulated(
                                devices, {profile.device_class: profile}, rig.trust().public_key, rig.VENDOR,
                                rollout_id="ro", canary_percent=25, share=0.25, seed=0,
                            )  # fmt: skip

                        sim.prepare = prepare
                    await sim.enrol()
                    if not attested_devices:  # enrolled with keys, then never attest
                        for d in sim.devices:
                            d.attester = None
                    await asyncio.to_thread(admin.create_rollout, "r2", None, POLICY, "ro")
                    report = await asyncio.to_thread(admin.verb, "ro", "start")
                    for _ in range(8):
                        await sim.round(clock.now)
                        clock.advance(301)
                        report = await asyncio.to_thread(admin.step, "ro")
                        if report.status in ("succeeded", "aborted", "rolled_back"):
                            break
                    return report.status, report.counts.confirmed, emulated

            return asyncio.run(drive())


def test_staged_rollout_succeeds_with_attestation_and_emulated_canaries(release) -> None:  # type: ignore[no-untyped-def]
    profile, bundle = release
    status, confirmed, emulated = _rollout(profile, bundle, attested_devices=True)
    assert status == "succeeded" and confirmed == 8
    assert emulated >= 3  # the canary group (2 of 8) and a quarter of the rest run the C agent


def test_confirmed_without_evidence_never_completes_a_rollout(release) -> None:  # type: ignore[no-untyped-def]
    profile, bundle = release
    status, confirmed, _ = _rollout(profile, bundle, attested_devices=False)
    assert confirmed == 0 and status != "succeeded"
