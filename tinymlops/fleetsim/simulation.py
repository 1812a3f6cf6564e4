"""One library call for a whole simulated rollout: a real fleet server, a simulated fleet, the engine.

simulate_rollout starts the fleet server (SQLite under `workdir`, uvicorn on loopback) in
`config.server_workers` processes of its own, so that the server and the simulated devices do not
share one GIL; the server reads an accelerated clock from a file the simulation moves
(tinymlops.fleet.clock, FleetSettings.clock_file). It uploads the release (and rollback) bundles
through the admin API (the server verifies them), enrols the fleet, creates and starts the
rollout, then runs rounds: every device polls, installs what it is assigned and sends one
telemetry window; the clock jumps past the current group's soak; the engine judges. It stops when
the rollout is final, when the engine paused it (nobody is there to resume), or after `max_rounds`.

What devices report is measured from the bundles' own models on TFLite Micro over the field split
(tinymlops.fleetsim.behaviour), unless `config.behaviour` overrides a sequence. The fleet starts on
`config.initial_sequence`, which behaves like the rollback release's model (the previous model),
or — on a first release, with no previous model — like the release itself.

Installs: for small fleets every device runs the real firmware emulator (Device.install: verify,
fit checks, A/B flash writes, TFLM self-test); for large fleets a seeded `firmware_share` of them
does (flash under /dev/shm when it exists), the rest only verify the bundle. The firmware costs
tens of milliseconds and a flash directory per install, so a 10,000-device rollout on two cores
samples it; the sample still proves every install path on every class, and the gates see the
same measured behaviour either way.
"""

from __future__ import annotations

import asyncio
import io
import random
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from tinymlops.device.profiles import DeviceProfile
from tinymlops.fleet import FleetError
from tinymlops.fleet.clock import SharedClock
from tinymlops.fleet.engine import FINAL, RolloutReport
from tinymlops.fleet.policy import RolloutPolicy
from tinymlops.fleet.timeline import RolloutTimeline
from tinymlops.fleetsim.simulator import (
    ReleaseBehaviour,
    RoundStats,
    SimDevice,
    SimulationConfig,
    Simulator,
    bundle_installer,
    firmware_installer,
)

STATES = ("old", "new", "rolled_back", "reverted", "failed")
ROLLOUT_ID = "simulated"

if TYPE_CHECKING:
    from tinymlops.bundle import Signer, TrustAnchor


class SimulatedRollout(BaseModel):
    rollout_id: str
    status: str  # final RolloutState status (succeeded, rolled_back, paused, aborted, …)
    decision: str  # last report's decision
    reports: list[RolloutReport]
    rounds: list[RoundStats]
    devices: int
    seconds: float
    states: list[dict[str, int]]  # per round: devices per state (old, new, rolled_back, reverted, failed)
    firmware_devices: int = 0  # how many ran the real firmware emulator
    emulated_devices: int = 0  # attestation: how many ran the C agent on the emulated core (evidence, telemetry)
    behaviour: dict[int, ReleaseBehaviour] = {}  # by sequence: what the devices reported from
    timeline: RolloutTimeline | None = None  # per group, its devices' states over time (the report's plot)
    usage: dict = {}  # attestation on: the server's usage reconciliation at the end (admin /v1/admin/usage)

    @property
    def summary(self) -> str:
        return f"{self.status} on {self.devices} simulated devices ({self.decision})"


def default_profiles() -> list[DeviceProfile]:
    """configs/devices.yaml of the working directory, else of the checkout holding this package."""
    from tinymlops.device.profiles import load_profiles

    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / "configs" / "devices.yaml").is_file():
            return load_profiles(root)
    raise FleetError("configs/devices.yaml not found: pass SimulationConfig.profiles")


def open_bundle(path: Path, trust: TrustAnchor) -> tuple[int, bytes]:
    """(sequence, plaintext model) of a bundle, verified against the trust anchor."""
    from tinymlops.bundle import verify_bundle

    sink = io.BytesIO()
    result = verify_bundle(Path(path), trust, sink=sink)
    if not result.ok or result.manifest is None:
        raise FleetError(f"{path}: bundle refused: {getattr(result.reason, 'value', result.reason)}: {result.detail}")
    return result.manifest.sequence, sink.getvalue()


def _behaviour_model(bundle: Path, payload: bytes) -> bytes:
    """What to measure a release's behaviour on: the payload, or for a firmware model image the
    .tflite beside its bundle that it was compiled from (bit-exact with TFLM, which measures)."""
    from tinymlops.device.hil import reference_for

    if bytes(payload[:4]) == b"TMR1" and reference_for(bundle).is_file():
        return reference_for(bundle).read_bytes()
    return payload


def _measured(
    bundles: dict[str, Path],
    trust: TrustAnchor,
    profiles: dict[str, DeviceProfile],
    field: object,
    seed: int,
    seen: dict[tuple[bytes, tuple[str, ...]], ReleaseBehaviour],
) -> tuple[int, ReleaseBehaviour | None]:
    """One measurement per distinct model and set of classes, also across releases (`seen`): the
    rollback release is often the previous model re-signed, and TFLM would measure it again."""
    sequences: set[int] = set()
    models: dict[bytes, list[DeviceProfile]] = {}
    for device_class, path in bundles.items():
        sequence, model = open_bundle(path, trust)
        sequences.add(sequence)
        model = _behaviour_model(path, model)
        models.setdefault(model, []).append(profiles[device_class])
    if len(sequences) != 1:
        raise FleetError(f"release bundles carry different sequences {sorted(sequences)}: one release, one sequence")
    if field is None:
        return sequences.pop(), None
    from tinymlops.fleetsim.behaviour import measure_behaviour

    merged: ReleaseBehaviour | None = None
    for model, members in models.items():
        key = (model, tuple(p.device_class for p in members))
        if key not in seen:
            seen[key] = measure_behaviour(model, field, members, seed)  # type: ignore[arg-type]  # field: a Split
        b = seen[key]
        by_class = {**(merged.latency_ms_by_class if merged else {}), **b.latency_ms_by_class}
        merged = b.model_copy(update={"latency_ms_by_class": by_class})
    return sequences.pop(), merged


def _state_of(d: SimDevice, release_sequence: int, rollback_sequence: int | None) -> str:
    if d.sequence == release_sequence:
        return "new"
    if rollback_sequence is not None and d.sequence == rollback_sequence:
        return "rolled_back"
    if d.last_outcome in ("reverted", "failed"):
        return d.last_outcome
    return "old"


def simulate_rollout(
    release_id: str,
    release_bundles: dict[str, Path],
    rollback_id: str | None,
    rollback_bundles: dict[str, Path] | None,
    trust_anchor: Path,
    config: SimulationConfig,
    policy: RolloutPolicy,
    workdir: Path,
    *,
    on_round: Callable[[int, RoundStats, RolloutReport], None] | None = None,
    max_rounds: int = 60,
) -> SimulatedRollout:
    """A staged rollout of `release_bundles` (device class → bundle file) to `config.devices`
    simulated devices over real HTTP; see the module docstring."""
    from tinymlops.bundle import load_trust
    from tinymlops.fleet.api.serving import serve_fleet
    from tinymlops.fleet.client import FleetAdmin
    from tinymlops.fleet.config import FleetSettings

    started = time.perf_counter()
    if (rollback_id is None) != (rollback_bundles is None):
        raise FleetError("rollback_id and rollback_bundles: give both or neither")
    missing = [c for c in config.classes if c not in release_bundles]
    if missing:
        raise FleetError(f"release_bundles: no bundle for class {missing[0]}")
    if rollback_bundles is not None and (gap := [c for c in config.classes if c not in rollback_bundles]):
        raise FleetError(f"rollback_bundles: no bundle for class {gap[0]}")
    profiles = {p.device_class: p for p in (config.profiles or default_profiles())}
    if unknown := [c for c in config.classes if c not in profiles]:
        raise FleetError(f"config.classes: {unknown[0]} is no device_class of the device profiles")
    trust = load_trust(trust_anchor)
    field = None
    if config.field_data is not None:
        from tinymlops.ml.data.split import load_split

        field = load_split(config.field_data, "test")

    release_bundles = {c: Path(release_bundles[c]) for c in config.classes}
    seen: dict[tuple[bytes, tuple[str, ...]], ReleaseBehaviour] = {}
    release_seq, release_b = _measured(release_bundles, trust, profiles, field, config.seed, seen)
    measured: dict[int, ReleaseBehaviour] = {}
    rollback_seq = None
    if rollback_bundles is not None:
        rollback_bundles = {c: Path(rollback_bundles[c]) for c in config.classes}
        rollback_seq, rollback_b = _measured(rollback_bundles, trust, profiles, field, config.seed, seen)
        if rollback_b is not None:
            measured[rollback_seq] = rollback_b
    if release_b is not None:
        measured[release_seq] = release_b
        measured[config.initial_sequence] = measured.get(rollback_seq, release_b)  # type: ignore[arg-type]  # None: no key
    if config.initial_sequence >= release_seq:
        raise FleetError(f"config.initial_sequence {config.initial_sequence} must be below the release's {release_seq}")
    behaviour = {**measured, **config.behaviour}
    config = config.model_copy(update={"behaviour": behaviour})

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    admin_token, provisioning = secrets.token_hex(16), secrets.token_hex(16)
    clock = SharedClock.create(workdir / "clock", datetime.now(timezone.utc).replace(microsecond=0))
    settings = FleetSettings(
        db_url=f"sqlite:///{workdir / 'fleet.db'}",
        bundle_dir=workdir / "bundles",
        admin_tokens={"simulator": admin_token},
        provisioning_token=provisioning,
        trust_anchor=Path(trust_anchor),
        vendor=profiles[config.classes[0]].vendor,
        tick_seconds=None,  # the simulation steps the engine itself, once per round
        policy=policy,
        clock_file=clock.path,  # the server processes read the accelerated clock the simulation moves
        attestation=config.attestation,
    )
    flash_base = Path("/dev/shm") if Path("/dev/shm").is_dir() else workdir
    flash_root = Path(tempfile.mkdtemp(prefix="tinymlops-flash-", dir=flash_base))
    installer = firmware_installer(bundle_installer(trust, settings.vendor))
    reports: list[RolloutReport] = []
    rounds: list[RoundStats] = []
    states: list[dict[str, int]] = []
    firmware_count = emulated_count = 0

    async def drive(url: str, admin: FleetAdmin) -> None:
        nonlocal firmware_count, emulated_count
        token = provisioning
        if config.attestation:  # a batch token for this fleet: its classes, as many uses as devices
            expires = clock.now + timedelta(days=1)
            token = await asyncio.to_thread(
                admin.create_token, "simulation", sorted(set(config.classes)), expires, config.devices
            )
        async with Simulator(url, token, config, installer, vendor=settings.vendor) as sim:
            if config.attestation and (config.emulated_canary or config.emulated_share):
                from tinymlops.fleetsim.attest import attach_emulated

                def prepare(devices: list) -> None:
                    nonlocal emulated_count
                    emulated_count = attach_emulated(
                        devices, profiles, trust.public_key, settings.vendor, rollout_id=ROLLOUT_ID,
                        canary_percent=policy.groups[0].percent if config.emulated_canary else None,
                        share=config.emulated_share, seed=config.seed,
                        initial_sequence=max(0, release_seq - 1),  # parts that ran the release before
                    )  # fmt: skip

                sim.prepare = prepare
            await sim.enrol()
            firmware_count = _attach_firmware(sim.devices, config, profiles, trust, flash_root, clock)
            await asyncio.to_thread(admin.create_rollout, release_id, rollback_id, policy, ROLLOUT_ID)
            report = await asyncio.to_thread(admin.verb, ROLLOUT_ID, "start", "simulated rollout")
            for index in range(max_rounds):
                stats = await sim.round(clock.now)
                group = policy.groups[max(report.group_index, 0)]
                clock.now += timedelta(seconds=max(group.min_soak_seconds, config.window_seconds) + 1)
                report = await asyncio.to_thread(admin.step, ROLLOUT_ID)
                rounds.append(stats)
                reports.append(report)
                states.append(dict(Counter(_state_of(d, release_seq, rollback_seq) for d in sim.devices)))
                if on_round is not None:
                    on_round(index, stats, report)
                if report.status in FINAL or (report.status == "paused" and report.decision == "pause"):
                    break
            if report.decision == "rollback":  # let the fleet take the reassigned previous model
                stats = await sim.round(clock.now)
                rounds.append(stats)
                states.append(dict(Counter(_state_of(d, release_seq, rollback_seq) for d in sim.devices)))

    try:
        with serve_fleet(settings, workers=config.server_workers) as url, FleetAdmin(url, admin_token) as admin:
            for device_class, path in release_bundles.items():
                admin.upload_bundle(release_id, device_class, path)
            for device_class, path in (rollback_bundles or {}).items():
                assert rollback_id is not None  # given with rollback_bundles, checked above
                admin.upload_bundle(rollback_id, device_class, path)
            asyncio.run(drive(url, admin))
            final, _ = admin.status(ROLLOUT_ID)
            story = RolloutTimeline.model_validate(admin.timeline(ROLLOUT_ID))
            usage = admin.usage() if config.attestation else {}
    finally:
        clock.close()
        shutil.rmtree(flash_root, ignore_errors=True)
    return SimulatedRollout(
        rollout_id=ROLLOUT_ID,
        status=final.status,
        decision=reports[-1].decision if reports else "idle",
        reports=reports,
        rounds=rounds,
        devices=config.devices,
        seconds=time.perf_counter() - started,
        states=states,
        firmware_devices=firmware_count,
        emulated_devices=emulated_count,
        behaviour=behaviour,
        timeline=story,
        usage=usage,
    )


def _attach_firmware(
    devices: list[SimDevice],
    config: SimulationConfig,
    profiles: dict[str, DeviceProfile],
    trust: object,
    flash_root: Path,
    clock: Callable[[], datetime],
) -> int:
    """Give the seeded sample of devices a real firmware emulator with its own flash directory."""
    from tinymlops.device.firmware import Device, bundle_verifier
    from tinymlops.device.flash import Flash

    if len(devices) <= config.firmware_all_up_to:
        chosen = devices
    else:
        k = round(config.firmware_share * len(devices))
        chosen = random.Random(config.seed ^ 0x5EED).sample(devices, k)
    verify = bundle_verifier(trust)
    for d in chosen:
        d.firmware = Device(
            profiles[d.device_class], Flash(flash_root / d.device_id, fault=d.crash_switch), verify, clock=clock
        )
    return len(chosen)


def plot_states(result: SimulatedRollout, path: Path) -> Path:
    """PNG: per group, its devices' states over time on its own scale, with the decisions (and the
    gate verdicts behind them) marked; atomically written."""
    if result.timeline is not None:
        from tinymlops.fleet.report_plot import plot_timeline

        title = f"rollout {result.rollout_id}: {result.status} · {result.devices:,} simulated devices"
        return plot_timeline(result.timeline, path, title)
    return _plot_fleet_states(result, path)


def _plot_fleet_states(result: SimulatedRollout, path: Path) -> Path:
    """PNG: devices per state after every round (stacked): the whole fleet, one panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinymlops.util.io import atomic_path

    x = list(range(1, len(result.states) + 1))
    colors = {"old": "tab:gray", "new": "tab:green", "rolled_back": "tab:blue", "reverted": "tab:orange"}
    colors["failed"] = "tab:red"
    fig, ax = plt.subplots(figsize=(8, 4))
    present = [s for s in STATES if any(row.get(s, 0) for row in result.states)]
    ax.stackplot(
        x,
        [[row.get(s, 0) for row in result.states] for s in present],
        labels=present,
        colors=[colors[s] for s in present],
    )
    ax.set_xlabel("round (clock jumps past each group's soak)")
    ax.set_ylabel("devices")
    ax.set_title(f"rollout {result.rollout_id}: {result.status} · {result.devices:,} devices", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def build_release(
    model: bytes,
    profiles: list[DeviceProfile],
    signer: Signer,
    out_dir: Path,
    *,
    sequence: int,
    model_version: str,
    field_x: object,
    model_name: str = "tinymlops-model",
) -> dict[str, Path]:
    """One signed bundle per profile's device class (<out_dir>/<class>.bundle), with golden vectors
    from `field_x` (float inputs) — what the pipeline builds, for the simulator and its tests."""
    from tinymlops.device import hil
    from tinymlops.ml.inference import quantize_input
    from tinymlops.ml.quantize import inspect
    from tinymlops.pipeline.release import sign_release

    xq = quantize_input(field_x, inspect(model).inputs[0])  # type: ignore[arg-type]  # float inputs array
    selftest = hil.golden_vectors(model, xq, n=8, tolerance=1)
    return sign_release(
        model,
        profiles,
        signer,
        out_dir,
        model_name=model_name,
        model_version=model_version,
        sequence=sequence,
        selftest=selftest,
    )
