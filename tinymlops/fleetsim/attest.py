"""Who signs a simulated device's evidence and telemetry.

- PythonAttester: the bulk of a simulated fleet. A seeded Ed25519 key held in the simulator's
  memory (a stand-in for the device's provisioning page) and the evidence the C agent would write
  (tinymlops.bundle.evidence: the same claims, the same bytes).
- EmuAttester: a device on the emulated firmware (tinymlops.device.agent.emulated.EmuDevice,
  the C agent on the unicorn-emulated core). Its key was generated at provisioning into its
  flash; the evidence and the telemetry signatures are produced by the C agent on the emulated
  core; the simulator only ever sees the public key.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timezone
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tinymlops.bundle.evidence import CONTENT_TELEMETRY, Evidence, SlotClaim, sign_evidence, sign_payload


class Attester(Protocol):
    public_key: bytes
    ueid: bytes

    def sign_telemetry(self, window: bytes) -> bytes: ...

    def confirmed(self, bundle: bytes, assignment: dict, nonce: bytes) -> bytes: ...


def device_ueid(device_id: str) -> bytes:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"tinymlops-device:{device_id}").bytes


class PythonAttester:
    def __init__(self, device_id: str, device_class: str, vendor: str, rng: random.Random) -> None:
        from tinymlops.bundle import class_uuid

        self._key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        self.public_key = self._key.public_key().public_bytes_raw()
        self.ueid = device_ueid(device_id)
        self.class_id = class_uuid(vendor, device_class)
        self.slots = [SlotClaim(state="empty", sequence=0), SlotClaim(state="empty", sequence=0)]
        self.active: int | None = None
        self.records = 0
        self.count = 0
        self.boots = 0

    def sign_telemetry(self, window: bytes) -> bytes:
        return sign_payload(window, self._key, CONTENT_TELEMETRY)

    def confirmed(self, bundle: bytes, assignment: dict, nonce: bytes) -> bytes:
        """The new image confirmed in the other slot: what the agent then reports."""
        from tinymlops.bundle import read_manifest

        manifest = read_manifest(bundle)
        slot = 0 if self.active is None else 1 - self.active
        if self.active is not None:
            old = self.slots[self.active]
            self.slots[self.active] = SlotClaim(state="inactive", sequence=old.sequence, digest=old.digest)
        self.slots[slot] = SlotClaim(state="active", sequence=manifest.sequence, digest=manifest.payload_sha256)
        # pending at install; at the boot, the counted attempt, then confirmed (as the C agent)
        self.active, self.records, self.boots = slot, self.records + 3, self.boots + 1
        ev = Evidence(
            nonce=nonce,
            device_id=uuid.UUID(bytes=self.ueid),
            class_id=self.class_id,
            running_slot=slot,
            slots=(self.slots[0], self.slots[1]),
            floor=manifest.sequence,
            revocation_version=0,
            inference_count=self.count,
            running_sequence=manifest.sequence,
            state_record=self.records,
            quota_serial=0,
            quota_limit=0,
            boot_count=self.boots,
        )
        return sign_evidence(ev, self._key)


class EmuAttester:
    """The C agent on the emulated core signs; `device` is an EmuDevice provisioned with a key."""

    def __init__(self, device: object, public_key: bytes, ueid: bytes) -> None:
        self.device, self.public_key, self.ueid = device, public_key, ueid

    def sign_telemetry(self, window: bytes) -> bytes:
        return self.device.sign_telemetry(window)  # type: ignore[attr-defined]  # an EmuDevice, imported lazily

    def confirmed(self, bundle: bytes, assignment: dict, nonce: bytes) -> bytes:
        return self.device.evidence(nonce)  # type: ignore[attr-defined]  # an EmuDevice, imported lazily


def emulated_device(profile, root_public_key: bytes, device_id: str, vendor: str, initial_sequence: int = 0):
    """A fresh EmuDevice for `profile`, provisioned (root pinned, device key generated into its
    flash, stored sequence `initial_sequence`), and the EmuAttester over it."""
    from tinymlops.bundle import class_uuid
    from tinymlops.device.agent.emulated import EmuDevice

    dev = EmuDevice(profile)
    ueid = device_ueid(device_id)
    public = dev.provision(
        root_public_key, ueid, class_uuid(vendor, profile.device_class), initial_sequence=initial_sequence
    )
    assert public is not None
    return dev, EmuAttester(dev, public, ueid)


def emulated_install(device: object, bundle: bytes, now: datetime | None = None) -> tuple[str, str | None]:
    """Install and boot on the emulated firmware: ("confirmed", None) or (stage, reason)."""
    when = now or datetime.now(timezone.utc)
    out = device.install(bundle, when)  # type: ignore[attr-defined]  # an EmuDevice, imported lazily
    if out.reason != "pending":
        return "failed", f"agent: {out.reason}"
    booted = device.boot(when)  # type: ignore[attr-defined]  # an EmuDevice, imported lazily
    if booted.event == "confirmed":
        return "confirmed", None
    return "reverted", f"agent: {booted.reason}"


def attach_emulated(
    devices: list,
    profiles: dict,
    root_public_key: bytes,
    vendor: str,
    *,
    rollout_id: str,
    canary_percent: float | None,
    share: float,
    seed: int,
    initial_sequence: int = 0,
) -> int:
    """Put the emulated firmware under the devices the rollout's first group will take
    (tinymlops.fleet.engine.select_devices is deterministic) and under a seeded `share` of the rest.
    → how many. Call before enrolment: they enrol the C agent's public key. A class whose part
    cannot run the agent on its emulated core (no emulator: the Xtensa ESP32-S3; the agent over
    the RAM budget: the M0+ LoRa node, docs/agent.md) keeps the Python signer. `initial_sequence`:
    the stored sequence the parts were provisioned with (release sequences are Unix seconds: a part
    provisioned at 0 rightly refuses them as a fast-forward)."""
    from tinymlops.fleet.engine import select_devices

    chosen: set[str] = set()
    if canary_percent is not None:
        pairs = [(d.device_id, d.device_class) for d in devices]
        chosen |= {dev for dev, _ in select_devices(rollout_id, pairs, canary_percent, set())}
    rest = [d for d in devices if d.device_id not in chosen]
    chosen |= {d.device_id for d in random.Random(seed ^ 0xE3).sample(rest, round(share * len(rest)))}
    runs: dict[str, bool] = {}
    done = 0
    for d in devices:
        if d.device_id in chosen and _runs_agent(profiles[d.device_class], runs):
            d.agent, d.attester = emulated_device(
                profiles[d.device_class], root_public_key, d.device_id, vendor, initial_sequence
            )
            done += 1
    return done


def _runs_agent(profile, seen: dict[str, bool]) -> bool:
    """Can `profile`'s emulated core run the agent firmware within the part's RAM budget?"""
    from tinymlops.device.agent.emulated import EmuDevice
    from tinymlops.device.mcu import emulated
    from tinymlops.errors import TinyMLOpsError

    if profile.name not in seen:
        try:
            seen[profile.name] = emulated(profile) and EmuDevice.shared_board(profile) is not None
        except TinyMLOpsError:
            seen[profile.name] = False
    return seen[profile.name]
