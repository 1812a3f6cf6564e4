"""Fleet simulator: N emulated devices as asyncio tasks in one process, speaking the real device
protocol to a real fleet server over HTTP. Several processes can share one fleet server, each
with its own `device_prefix` (`tinymlops fleet devices --prefix`).

Each round a device polls; with an assignment it downloads (resuming with Range after a simulated
power cut), verifies the bundle with tinymlops.bundle.verify_bundle against its trust anchor,
class and anti-rollback sequence, reports every stage with an idempotency key (retrying until
acknowledged), then sends one telemetry window from the model it runs.

What devices report (latency, top-1 confidence, predicted classes, crashes) comes from a
per-sequence ReleaseBehaviour: measured on TFLite Micro from the release's model by
simulate_rollout, or synthetic. `installer=` accepts any callable (bundle bytes → Outcome); the
HIL firmware emulator (tinymlops.device.firmware.Device.install) plugs in there.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tinymlops.device.profiles import DeviceProfile
from tinymlops.fleet.client import AsyncDevice, FleetHTTPError
from tinymlops.fleet.telemetry import CONFIDENCE_BINS, LATENCY_BINS, LATENCY_EDGES_MS, ErrorCounters, TelemetryAggregate

_LOWER_EDGES_MS = np.array([0.0, *LATENCY_EDGES_MS])
from tinymlops.fleetsim.attest import Attester, PythonAttester
from tinymlops.fleetsim.lean_http import LeanClient

if TYPE_CHECKING:
    from tinymlops.bundle import TrustAnchor


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReleaseBehaviour(Model):
    """How a model behaves on devices: what the health gates get to see.

    Either synthetic (the defaults, or hand-set numbers: an override for a scenario) or measured on
    TFLite Micro from the real model by tinymlops.fleetsim.behaviour.measure_behaviour (source="tflm")."""

    latency_ms: float = Field(9.0, gt=0, description="mean inference latency")
    latency_ms_by_class: dict[str, float] = Field(default_factory=dict, description="device class → mean latency")
    confidence: float = Field(0.9, ge=0, le=1, description="mean top-1 confidence")
    class_weights: list[float] = Field(default_factory=lambda: [1.0] * 10)
    confidence_weights: list[float] | None = Field(None, description="measured share per top-1 confidence bin")
    drift_class_weights: list[float] | None = Field(None, description="measured on drifted field samples")
    drift_confidence_weights: list[float] | None = None
    crash_share: dict[str, float] = Field(default_factory=dict, description="device class → share that fail install")
    error_rate: float = Field(0.0, ge=0, le=1, description="inference errors per inference")
    source: str = Field("synthetic", description="synthetic | tflm")
    samples: int = Field(0, ge=0, description="field samples measured (tflm)")

    def latency_for(self, device_class: str) -> float:
        return self.latency_ms_by_class.get(device_class, self.latency_ms)


class Faults(Model):
    fail_install: float = Field(0.0, ge=0, le=1, description="share of devices whose install fails")
    power_loss: float = Field(0.0, ge=0, le=1, description="share that lose power mid-download (then resume)")
    slow: float = Field(0.0, ge=0, le=1, description="share running 1.5x slower (any model)")
    drift: float = Field(0.0, ge=0, le=1, description="share seeing drifted inputs (any model)")


class SimulationConfig(Model):
    """`behaviour` overrides what simulate_rollout measures (by sequence). `firmware_share` of the
    devices (all of them up to `firmware_all_up_to`) run the real firmware emulator."""

    devices: int = Field(100, ge=1)
    device_prefix: str = Field("sim", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,40}$", description="device ids' prefix")
    classes: list[str] = Field(default_factory=lambda: ["m4"])
    seed: int = 0
    faults: Faults = Faults()
    behaviour: dict[int, ReleaseBehaviour] = Field(default_factory=dict, description="by sequence; default baseline")
    inferences_per_window: int = Field(300, ge=1)
    window_seconds: float = Field(300, gt=0)
    # A fleet's devices talk independently; with few at once the server idles between answers.
    concurrency: int = Field(256, ge=1, description="devices talking to the server at once")
    server_workers: int = Field(2, ge=1, description="simulate_rollout: fleet server processes")
    initial_sequence: int = Field(1, ge=0, description="the model every device runs at the start")
    firmware_share: float = Field(0.02, ge=0, le=1, description="seeded share of devices on the real firmware")
    firmware_all_up_to: int = Field(100, ge=0, description="fleets this small run the firmware on every device")
    profiles: list[DeviceProfile] = Field(default_factory=list, description="for the firmware; default devices.yaml")
    field_data: Path | None = Field(None, description="prepared data dir: its test split is the devices' field data")
    attestation: bool = Field(False, description="devices enrol a key, confirm with evidence, sign telemetry")
    # The emulated firmware (the C agent on the unicorn-emulated core) over real HTTP: the canary
    # group and a seeded share of the rest. Their bundles must carry compiled model images (TMR1).
    emulated_canary: bool = Field(False, description="the first rollout group runs the emulated firmware")
    emulated_share: float = Field(0.0, ge=0, le=1, description="seeded share of the other devices on it")


class Outcome(Model):
    ok: bool
    # verified: the bundle checked out, the simulator plays the boot (and injected crashes);
    # confirmed | reverted | failed: the installer ran the whole install itself (real firmware)
    stage: str
    reason: str | None = None


Installer = Callable[["SimDevice", bytes, dict], Outcome]


class SimDevice(AsyncDevice):
    def __init__(
        self, http: httpx.AsyncClient | LeanClient, device_id: str, device_class: str, rng: random.Random
    ) -> None:
        super().__init__(http, device_id, device_class)  # type: ignore[arg-type]  # LeanClient: the subset used
        self.rng = rng
        self.draws: np.random.Generator | None = None  # telemetry draws, seeded from `rng` at the first window
        self.fails_install = False
        self.loses_power = False
        self.slow = False
        self.drifted = False
        self.crashes_next = False  # the image being installed will not come up (injected fault)
        self.firmware: object | None = None  # a tinymlops.device.firmware.Device when it runs the real one
        self.crash_switch = CrashSwitch()  # the fault hook of that Device's Flash
        self.last_outcome: str | None = None  # confirmed | failed | reverted, for the per-state counts
        self.installs: Counter = Counter()
        # attestation (tinymlops.fleetsim.attest): who signs this device's evidence and telemetry
        self.attester: Attester | None = None
        self.agent: object | None = None  # an EmuDevice: the C agent on the emulated core installs
        self.now: datetime | None = None  # the simulation's time in the current round (the device RTC)
        # an install log the server never acknowledged (it was away): sent again before the next poll,
        # as a device keeps its log until acknowledged (the idempotency keys make the repeat safe)
        self.unsent: tuple[str, list[tuple[str, str | None]], bytes | None] | None = None


class RoundStats(Model):
    at: datetime
    polls: dict[int, int]
    installed: int
    failed: int
    by_sequence: dict[int, int]  # devices per running model sequence after the round


class Simulator:
    def __init__(
        self,
        url: str,
        provisioning_token: str,
        config: SimulationConfig,
        installer: Installer,
        vendor: str = "tinymlops",
    ) -> None:
        self.url, self.token, self.config, self.installer = url, provisioning_token, config, installer
        self.vendor = vendor
        self.rng = random.Random(config.seed)
        self._http: LeanClient | httpx.AsyncClient | None = None
        self.devices: list[SimDevice] = []
        # called with the devices before they enrol (tinymlops.fleetsim.attest.attach_emulated)
        self.prepare: Callable[[list[SimDevice]], None] | None = None

    async def __aenter__(self) -> Simulator:
        # One keep-alive connection per concurrent device, shared in turn (see tinymlops.fleetsim.lean_http);
        # httpx where the lean client does not go (TLS: a fleet server by https URL).
        n = self.config.concurrency
        if self.url.startswith("http://"):
            self._http = LeanClient(self.url, connections=n, timeout=60)
        else:
            limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
            self._http = httpx.AsyncClient(base_url=self.url, timeout=60, limits=limits)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def enrol(self) -> None:
        assert self._http is not None, "use `async with Simulator(...)`"
        c, f = self.config, self.config.faults
        for i in range(c.devices):
            d = SimDevice(
                self._http,
                f"{c.device_prefix}-{i:06d}",
                c.classes[i % len(c.classes)],
                random.Random(c.seed * 7919 + i),
            )
            d.sequence, d.slot = c.initial_sequence, "confirmed"
            d.fails_install = self.rng.random() < f.fail_install
            d.loses_power = self.rng.random() < f.power_loss
            d.slow = self.rng.random() < f.slow
            d.drifted = self.rng.random() < f.drift
            self.devices.append(d)
            if c.attestation:
                d.attester = PythonAttester(d.device_id, d.device_class, self.vendor, d.rng)
        if self.prepare is not None:
            self.prepare(self.devices)
        await self._bounded(self._enrol_one)

    async def _enrol_one(self, d: SimDevice) -> None:
        if d.attester is None:
            await d.enrol(self.token)
        else:
            await d.enrol(self.token, d.attester.public_key, d.attester.ueid)

    async def round(self, now: datetime) -> RoundStats:
        polls: Counter = Counter()
        outcomes: Counter = Counter()

        async def one(d: SimDevice) -> None:
            d.now = now
            if d.unsent is not None:
                await _report_log(d, *d.unsent)
            r = await _retry(d.poll)
            polls[r.status_code] += 1
            if r.status_code == 200:
                outcomes[await self._install(d, r.json())] += 1
            sign = d.attester.sign_telemetry if d.attester is not None else None
            await _retry(lambda: d.telemetry(self._window(d, now), sign))

        await self._bounded(one)
        return RoundStats(
            at=now,
            polls=dict(polls),
            installed=outcomes["confirmed"],
            failed=outcomes["failed"] + outcomes["reverted"],
            by_sequence=dict(Counter(d.sequence for d in self.devices)),
        )

    async def _install(self, d: SimDevice, a: dict) -> str:
        """Download, verify, install; the install log (every stage, in order) goes to the server in
        one request at the end, as a device that reports after its reboot does."""
        log: list[tuple[str, str | None]] = []
        evidence: bytes | None = None
        try:
            body = await self._download(d, a)
            log.append(("downloaded", None))
            if hashlib.sha256(body).hexdigest() != a["sha256"]:
                log.append(("failed", "download digest mismatch"))
                return "failed"
            crash_share = self.behaviour(a["sequence"]).crash_share.get(d.device_class, 0.0)
            d.crashes_next = d.fails_install or d.rng.random() < crash_share
            d.last_outcome = self._run_installer(d, body, a, log)
            if d.attester is not None and d.last_outcome == "confirmed" and a.get("nonce"):
                evidence = d.attester.confirmed(body, a, bytes.fromhex(a["nonce"]))
            return d.last_outcome
        finally:
            if log:
                await _report_log(d, a["release_id"], log, evidence)

    def _run_installer(self, d: SimDevice, body: bytes, a: dict, log: list[tuple[str, str | None]]) -> str:
        outcome = self.installer(d, body, a)
        if outcome.stage in ("confirmed", "reverted"):  # the firmware booted (or refused) the image itself
            log += [("verified", None), ("installed", None)]
            if outcome.stage == "confirmed":
                d.sequence, d.slot, d.etag = a["sequence"], "confirmed", None
            else:
                d.slot = "reverted"
            log.append((outcome.stage, outcome.reason))
            return outcome.stage
        if outcome.ok:
            log.append(("verified", None))
            if d.crashes_next:
                # the new slot does not come up: the bootloader falls back to the old one
                log.append(("reverted", "new image failed to boot; reverted"))
                d.slot = "reverted"
                return "reverted"
            d.sequence, d.slot, d.etag = a["sequence"], "confirmed", None
            log.append(("confirmed", None))
            return "confirmed"
        log.append((outcome.stage, outcome.reason))
        return outcome.stage

    async def _download(self, d: SimDevice, a: dict) -> bytes:
        if d.loses_power and not d.installs["power_cut"]:
            d.installs["power_cut"] += 1
            async with d.http.stream("GET", a["url"], headers=d._auth) as r:
                part = b""
                async for chunk in r.aiter_bytes():
                    part += chunk
                    if len(part) >= a["size"] // 2:
                        part = part[: a["size"] // 2]  # power cut half-way: keep what reached flash
                        break
            rest = await d.download(a["url"], start=len(part))
            return part + rest.content if rest.status_code == 206 else rest.content
        return (await d.download(a["url"])).content

    def behaviour(self, sequence: int) -> ReleaseBehaviour:
        return self.config.behaviour.get(sequence, ReleaseBehaviour())

    def _window(self, d: SimDevice, now: datetime) -> TelemetryAggregate:
        b, n = self.behaviour(d.sequence), self.config.inferences_per_window
        if d.draws is None:  # one generator per device for all its windows: seeding one costs more than a window
            d.draws = np.random.default_rng(d.rng.getrandbits(64))
        rng = d.draws
        weights = np.asarray(b.class_weights, dtype=float)
        conf_weights = b.confidence_weights
        if d.drifted and b.drift_class_weights is not None:
            weights, conf_weights = np.asarray(b.drift_class_weights, dtype=float), b.drift_confidence_weights
        elif d.drifted:
            weights[0] *= 3  # synthetic behaviour: drift as one over-predicted class
        latency = rng.gamma(9.0, b.latency_for(d.device_class) * (1.5 if d.slow else 1.0) / 9.0, n)
        lat = np.bincount(np.searchsorted(LATENCY_EDGES_MS, latency, side="left"), minlength=LATENCY_BINS)
        if conf_weights is not None:  # measured on TFLM: draw the window from the measured histogram
            p = np.asarray(conf_weights, dtype=float)
            conf = rng.multinomial(n, p / p.sum())
        else:
            confidence = np.clip(rng.normal(b.confidence, 0.05, n), 0.0, 1.0)
            conf = np.bincount(
                np.minimum((confidence * CONFIDENCE_BINS).astype(int), CONFIDENCE_BINS - 1), minlength=CONFIDENCE_BINS
            )
        classes = rng.multinomial(n, weights / weights.sum())
        # A window is at least as long as its inferences took (the server drops windows that are not):
        # an accelerated simulation may ask for more inferences than fit in window_seconds.
        busy = float(lat @ _LOWER_EDGES_MS) / 1000.0
        seconds = max(self.config.window_seconds, busy * 1.25)
        # Built without validation: the bins are right by construction, and the server validates.
        return TelemetryAggregate.model_construct(
            sequence=d.sequence,
            window_start=now - timedelta(seconds=seconds),
            window_end=now,
            inference_count=n,
            latency_hist=lat.tolist(),
            confidence_hist=conf.tolist(),
            class_hist=classes.tolist(),
            errors=ErrorCounters.model_construct(invoke=int(rng.binomial(n, b.error_rate)), input=0, watchdog=0),
            boot_count=1,
        )

    async def _bounded(self, fn: Callable) -> None:
        gate = asyncio.Semaphore(self.config.concurrency)

        async def run(d: SimDevice) -> None:
            async with gate:
                await fn(d)

        await asyncio.gather(*(run(d) for d in self.devices))


def bundle_installer(trust: TrustAnchor, vendor: str = "tinymlops") -> Installer:
    """Verify with the real bundle library: signature chain, class, anti-rollback, digest."""
    from tinymlops.bundle import class_uuid, verify_bundle

    def install(d: SimDevice, body: bytes, _: dict) -> Outcome:
        result = verify_bundle(
            body,
            trust,
            device_class=class_uuid(vendor, d.device_class),
            min_sequence=d.sequence + 1,
            now=d.now,  # the device's clock: the simulation's (None: the wall clock)
        )
        if result.ok:
            return Outcome(ok=True, stage="verified")
        return Outcome(ok=False, stage="failed", reason=f"verify: {getattr(result.reason, 'value', result.reason)}")

    return install


async def _retry(call: Callable, attempts: int = 5):
    """Devices retry until acknowledged; idempotency keys make the retries safe."""
    for i in range(attempts):
        try:
            return await call()
        except httpx.TransportError:
            if i == attempts - 1:
                raise
            await asyncio.sleep(0.05 * 2**i)


def _key(d: SimDevice, release_id: str, stage: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{d.device_id}/{release_id}/{stage}").hex  # same key on every retry


async def _report_log(
    d: SimDevice, release_id: str, log: list[tuple[str, str | None]], evidence: bytes | None = None
) -> None:
    """An install's stages in one request (each with its own idempotency key: a retry is safe);
    with attestation, the "confirmed" one carries the device's signed evidence."""
    batch = [(release_id, stage, reason, _key(d, release_id, stage)) for stage, reason in log]
    d.unsent = (release_id, log, evidence)
    try:
        await _retry(lambda: d.report_many(batch, evidence))
    except FleetHTTPError as exc:
        if exc.status < 500:  # refused: sending it again cannot help
            d.unsent = None
        raise
    d.unsent = None


class _Crash(Exception):
    """The emulated board resets (watchdog) before the new image confirms itself."""


class CrashSwitch:
    """A Flash fault hook: while armed, the board dies right before the boot that would confirm."""

    def __init__(self) -> None:
        self.armed = False

    def __call__(self, point: str) -> None:
        if self.armed and point == "state.confirm:before":
            raise _Crash(point)


def firmware_installer(fallback: Installer) -> Installer:
    """Devices that carry a real firmware emulator (`d.firmware`, a tinymlops.device.firmware.Device
    whose Flash has a CrashSwitch) install through it: real verify against the device's own
    anti-rollback floor, flash/arena/ops fit checks on TFLM, A/B slot writes, reboot and the
    golden-vector self-test. An injected crash is played on the firmware too: the image is written,
    every boot dies before confirming, and the bootloader reverts after its attempt limit.
    Every other device goes through `fallback` (verify only)."""

    def install(d: SimDevice, body: bytes, a: dict) -> Outcome:
        if d.agent is not None:  # the emulated firmware: the C agent verifies, installs A/B, self-tests
            from tinymlops.fleetsim.attest import emulated_install

            stage, reason = emulated_install(d.agent, body, d.now)
            return Outcome(ok=stage == "confirmed", stage=stage, reason=reason)
        device = d.firmware
        if device is None:
            return fallback(d, body, a)
        if not d.crashes_next:
            result = device.install(body)  # type: ignore[attr-defined]  # a firmware Device, imported lazily
            if result.ok:
                return Outcome(ok=True, stage="confirmed")
            stage = "reverted" if result.stage == "selftest" else "failed"
            return Outcome(ok=False, stage=stage, reason=f"firmware {result.reason}: {result.detail}"[:255])
        result = device.install(body, reboot=False)  # type: ignore[attr-defined]  # a firmware Device, imported lazily
        if not result.ok:
            return Outcome(ok=False, stage="failed", reason=f"firmware {result.reason}: {result.detail}"[:255])
        switch, detail = d.crash_switch, "the new image never confirmed"
        switch.armed = True
        try:
            for _ in range(device.max_boot_attempts + 2):  # type: ignore[attr-defined]  # a firmware Device, imported lazily
                try:
                    detail = device.boot().detail  # type: ignore[attr-defined]  # a firmware Device, imported lazily
                    break
                except _Crash:
                    continue
        finally:
            switch.armed = False
        return Outcome(ok=False, stage="reverted", reason=f"firmware: {detail}"[:255])

    return install
