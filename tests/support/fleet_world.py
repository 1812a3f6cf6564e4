"""A small live fleet for the dashboard and drift-loop tests: a real fleet server (uvicorn on
127.0.0.1, a clock the test moves), real signed bundles, simulated devices (tinymlops.fleetsim)
running on an event loop of their own thread, a baseline per class for the model they all run
(sequence 1), and a staged rollout of release r2 (sequence 2) with r1b (sequence 3) to roll back to.

Devices behave like `BEHAVIOUR`; `drift()` makes them see drifted inputs (one class dominates their
predictions), as devices in a changed environment would."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.bundle_keys import sign_releases
from tinymlops.fleet.api import create_app
from tinymlops.fleet.api.serving import serve_in_thread
from tinymlops.fleet.client import FleetAdmin
from tinymlops.fleet.config import FleetSettings
from tinymlops.fleet.monitoring import Baseline
from tinymlops.fleet.policy import GroupPolicy, HealthPolicy, RolloutPolicy
from tinymlops.fleet.store import Store
from tinymlops.fleet.telemetry import CONFIDENCE_BINS, LATENCY_BINS, LATENCY_EDGES_MS
from tinymlops.fleetsim.simulator import ReleaseBehaviour, SimulationConfig, Simulator, bundle_installer
from tinymlops.settings.monitoring import MonitoringConfig

T0 = datetime(2026, 11, 2, 8, tzinfo=timezone.utc)
CLASSES = ("m4", "m7")
ROLLOUT = "r2-digits"
BEHAVIOUR = ReleaseBehaviour(
    latency_ms=9.0,
    confidence=0.9,
    class_weights=[1.0] * 10,
    drift_class_weights=[12.0, *[1.0] * 9],  # drifted inputs: most samples land on class 0
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def policy() -> RolloutPolicy:
    """2 % canary (4 of 200 devices), 10 %, 50 %, 100 %; a minute of soak each."""
    group = dict(min_soak_seconds=60, min_devices=2, success_threshold=0.9, error_threshold=0.2)
    return RolloutPolicy(
        groups=[
            GroupPolicy(name="canary", percent=2, **group),
            GroupPolicy(name="early", percent=10, **group),
            GroupPolicy(name="half", percent=50, **group),
            GroupPolicy(name="all", percent=100, **group),
        ],
        health=HealthPolicy(min_inferences=200),
    )


def baseline_of(behaviour: ReleaseBehaviour, device_class: str, sequence: int, samples: int = 2000) -> Baseline:
    """What a release would have measured: the behaviour's own distributions over `samples` draws."""
    rng = np.random.default_rng(sequence)
    w = np.asarray(behaviour.class_weights, dtype=float)
    conf = np.clip(rng.normal(behaviour.confidence, 0.05, samples), 0, 1)
    lat = rng.gamma(9.0, behaviour.latency_for(device_class) / 9.0, samples)
    return Baseline(
        device_class=device_class,
        sequence=sequence,
        release_id="r1",
        model_name="digits",
        model_version="1",
        samples=samples,
        class_hist=rng.multinomial(samples, w / w.sum()).tolist(),
        confidence_hist=np.bincount(
            np.minimum((conf * CONFIDENCE_BINS).astype(int), CONFIDENCE_BINS - 1), minlength=CONFIDENCE_BINS
        ).tolist(),
        latency_hist=np.bincount(np.searchsorted(LATENCY_EDGES_MS, lat, side="left"), minlength=LATENCY_BINS).tolist(),
    )


class World:
    def __init__(self, url: str, admin_token: str, provisioning: str, clock: Clock, settings: FleetSettings) -> None:
        self.url, self.clock, self.settings = url, clock, settings
        self.admin = FleetAdmin(url, admin_token)
        self._provisioning = provisioning
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fleet-sim", daemon=True)
        self._thread.start()
        self.sim: Simulator | None = None

    def run(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start_fleet(self, trust: Any, devices: int) -> None:
        config = SimulationConfig(
            devices=devices,
            classes=list(CLASSES),
            behaviour={1: BEHAVIOUR, 2: BEHAVIOUR, 3: BEHAVIOUR},
            initial_sequence=1,
            inferences_per_window=300,
            window_seconds=60,
            concurrency=32,
        )
        self.sim = Simulator(self.url, self._provisioning, config, bundle_installer(trust))
        self.run(self.sim.__aenter__())
        self.run(self.sim.enrol())

    def round(self, seconds: float = 61) -> None:
        """The clock moves on; every device polls, installs what it is assigned, sends a window."""
        assert self.sim is not None
        self.clock.now += timedelta(seconds=seconds)
        self.run(self.sim.round(self.clock.now))

    def tick(self) -> str:
        return self.admin.step(ROLLOUT).decision

    def drift(self, share: float = 1.0) -> None:
        assert self.sim is not None
        for i, d in enumerate(self.sim.devices):
            d.drifted = i < share * len(self.sim.devices)

    def close(self) -> None:
        if self.sim is not None:
            self.run(self.sim.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self.admin.close()


@contextlib.contextmanager
def fleet_world(
    tmp: Path, *, devices: int = 200, monitoring: MonitoringConfig | None = None, events_url: str | None = None
) -> Iterator[World]:
    """The server, the fleet on sequence 1 with its baselines, and rollout r2-digits created (not started)."""
    from tinymlops.bundle import init_keys, load_signer, load_trust

    keys = init_keys(tmp / "keys", None, now=T0 - timedelta(days=1))
    signer = load_signer(tmp / "keys", None, now=T0)
    bundles = sign_releases(signer, tmp / "signed", {"r2": 2, "r1b": 3}, CLASSES, now=T0 - timedelta(hours=1))
    admin, provisioning = "admin-" + secrets.token_hex(8), "prov-" + secrets.token_hex(8)
    settings = FleetSettings(
        db_url=f"sqlite:///{tmp / 'fleet.db'}",
        bundle_dir=tmp / "bundles",
        admin_tokens={"alice": admin},
        provisioning_token=provisioning,
        trust_anchor=keys.root_public,
        tick_seconds=None,  # the test steps the rollout
        policy=policy(),
        monitoring=monitoring or MonitoringConfig(check_seconds=1, window_hours=0.04, min_inferences=500),
        events_url=events_url,
        public_url="http://fleet.invalid",
    )
    clock = Clock()
    store = Store.open(settings.db_url)
    with serve_in_thread(create_app(settings, clock=clock, store=store)) as url:
        world = World(url, admin, provisioning, clock, settings)
        world.token = admin  # type: ignore[attr-defined]
        try:
            for (release, device_class), path in bundles.items():
                world.admin.upload_bundle(release, device_class, path)
            for device_class in CLASSES:  # each release's baseline (all behave alike until inputs drift)
                for sequence, release in ((1, "r1"), (2, "r2"), (3, "r1b")):
                    b = baseline_of(BEHAVIOUR, device_class, sequence).model_copy(update={"release_id": release})
                    world.admin.put_baseline(b.model_dump(mode="json"))
            world.start_fleet(load_trust(keys.root_public), devices)
            world.round()  # every device reports in on sequence 1
            links = {
                "MLflow run": "http://mlflow.invalid/#/runs/abc",
                "Prefect flow run": "http://prefect.invalid/runs/1",
            }
            world.admin.create_rollout("r2", "r1b", policy=settings.policy, rollout_id=ROLLOUT, links=links)
            yield world
        finally:
            world.close()
