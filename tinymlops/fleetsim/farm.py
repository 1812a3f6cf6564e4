"""A simulated fleet that lives on: devices against a fleet server running on its own, on the real
clock, until stopped — the stand-in for real devices when a rollout is driven by URL (the rollout
flow with `fleet_url`, `tinymlops fleet devices`).

Every `interval_seconds` each device polls, installs what it is assigned (downloads it, verifies the
signed bundle for its class and anti-rollback floor, reports every stage with an idempotency key)
and sends one telemetry window. simulate_rollout is the accelerated, self-contained variant.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timezone
from pathlib import Path

import httpx

from tinymlops.fleet import FleetError
from tinymlops.fleet.client import FleetHTTPError
from tinymlops.fleetsim.simulator import RoundStats, SimDevice, SimulationConfig, Simulator, bundle_installer


class DeviceFarm:
    """`with DeviceFarm(url, token, config, trust) as farm:` runs the devices in a background thread."""

    def __init__(
        self,
        url: str,
        provisioning_token: str,
        config: SimulationConfig,
        trust_anchor: Path,
        *,
        vendor: str = "tinymlops",
        interval_seconds: float = 1.0,
    ) -> None:
        from tinymlops.bundle import load_trust

        self.url, self.token, self.config = url, provisioning_token, config
        self.installer = bundle_installer(load_trust(trust_anchor), vendor)
        self.interval = interval_seconds
        self.rounds: list[RoundStats] = []
        self.devices: list[SimDevice] = []
        self.interrupted = 0  # rounds cut short because the server was unreachable
        self.last_interruption = ""
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._enrolled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="device-farm", daemon=True)

    def __enter__(self) -> DeviceFarm:
        self._thread.start()
        if not self._enrolled.wait(timeout=120) or self.error is not None:
            self.stop()
            raise FleetError(f"device farm could not enrol {self.config.devices} devices at {self.url}: {self.error}")
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        try:
            asyncio.run(self._live())
        except BaseException as exc:  # surfaced to the caller by __enter__ / self.error
            self.error = exc
            self._enrolled.set()

    async def _live(self) -> None:
        async with Simulator(self.url, self.token, self.config, self.installer) as sim:
            await sim.enrol()
            self.devices = sim.devices
            self._enrolled.set()
            while not self._stop.is_set():
                try:
                    self.rounds.append(await sim.round(datetime.now(timezone.utc)))
                except (httpx.TransportError, FleetHTTPError) as exc:
                    # the server is away (restarting) or overloaded: devices try again next round,
                    # their idempotency keys make the repeats safe
                    self.interrupted += 1
                    self.last_interruption = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(self.interval)
