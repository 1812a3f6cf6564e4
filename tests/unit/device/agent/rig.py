"""Shared rig for the C agent tests (unit, security, reliability): one key hierarchy, the host
library, model images with golden vectors, bundles, and provisioned devices.

Two backends, chosen with `use()`: "host" (the agent built host-natively, a simulated flash and
the stand-in TMDL runtime: fast) or a profile name (the real firmware, agent + C runtime,
cross-compiled for that part's core and run on the instruction-level emulator; model images are
real TMR1 images of a FULLY_CONNECTED model, golden vectors from the tflite-micro interpreter)."""

from __future__ import annotations

import functools
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tinymlops.bundle import (
    ManifestDraft,
    SelfTest,
    Signer,
    TrustAnchor,
    build_bundle,
    class_uuid,
    init_keys,
    load_signer,
    load_trust,
)
from tinymlops.device.agent import AgentLibrary, Layout, SimDevice
from tinymlops.device.agent.images import fc_image, golden, toy_model

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
VENDOR, DEVICE_CLASS = "acme.example", "cortex-m4f-256k"
CLASS_ID = class_uuid(VENDOR, DEVICE_CLASS)
DEVICE_ID = uuid.UUID("00000000-0000-4000-8000-00000000d001")
SLOT_BYTES = 64 * 1024
HOST_SLOT_BYTES = SLOT_BYTES
BACKEND = "host"
EMULATED = "nrf52840"  # the Cortex-M4F part the emulated suites run on
_GOLDEN: dict[bytes, tuple] = {}


def use(backend: str) -> None:
    """Switch the rig between the host simulation and an emulated profile."""
    global BACKEND, SLOT_BYTES
    BACKEND = backend
    SLOT_BYTES = HOST_SLOT_BYTES if backend == "host" else board().lay.image_bytes


@functools.cache
def profile(name: str = EMULATED):
    from tests.support.paths import REPO
    from tinymlops.device.profiles import get_profile, load_profiles

    return get_profile(load_profiles(REPO), name)


def board():
    from tinymlops.device.agent.emulated import EmuDevice

    return EmuDevice.shared_board(profile(BACKEND if BACKEND != "host" else EMULATED))


@functools.cache
def lib() -> AgentLibrary:
    return AgentLibrary.load()


@functools.cache
def keydir() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="tinymlops-agent-keys-")) / "keys"
    init_keys(directory, now=NOW - timedelta(days=1))
    return directory


def signer() -> Signer:
    return _signer()


@functools.cache
def _signer() -> Signer:
    return load_signer(keydir(), now=NOW)


@functools.cache
def trust() -> TrustAnchor:
    return load_trust(keydir() / "root.pub")


def model(seed: int = 0, n_in: int = 16, n_out: int = 4) -> bytes:
    return _toy(seed, n_in, n_out) if BACKEND == "host" else _fc(seed, n_in, n_out)


@functools.cache
def _toy(seed: int, n_in: int, n_out: int) -> bytes:
    return toy_model(n_in, n_out, seed=seed)


@functools.cache
def _fc(seed: int, n_in: int, n_out: int) -> bytes:
    image, x, y = fc_image(n_in, n_out, seed)
    _GOLDEN[image] = (x, y)
    return image


def selftest_for(image: bytes, count: int = 4) -> SelfTest:
    if image.startswith(b"TMR1"):
        x, y = _GOLDEN[image]
        return SelfTest.from_arrays(x[:count], y[:count])
    x, y = golden(image, count)
    return SelfTest.from_arrays(x, y)


def is_model(image: bytes) -> bool:
    return image.startswith(b"TMDL") or image in _GOLDEN


def unfit_bundle(dev, sequence: int) -> bytes:
    """A genuine bundle whose model the device's runtime cannot fit (its arena)."""
    if BACKEND == "host":
        dev.arena_budget = 512  # the stand-in runtime's arena: the image asks for 2048
        return bundle(sequence)
    image = bytearray(model(3))
    image[20:24] = (0x7FFF0000).to_bytes(4, "little")  # tmr_header.arena_bytes: far beyond the part's RAM
    return bundle(sequence, payload=bytes(image), selftest=None)


def bundle(
    sequence: int = 7,
    *,
    payload: bytes | None = None,
    kek: bytes | None = None,
    device_class: str = DEVICE_CLASS,
    lifetime_days: float = 30,
    selftest: SelfTest | None | bool = True,
    sign: Signer | None = None,
    now: datetime = NOW,
) -> bytes:
    image = payload if payload is not None else model(sequence % 5)
    if selftest is True:
        selftest = selftest_for(image) if is_model(image) else None
    draft = ManifestDraft(
        model_name="kws",
        model_version=f"1.{sequence}",
        sequence=sequence,
        vendor=VENDOR,
        device_class=device_class,
        arena_bytes=1024,
        ops=["FULLY_CONNECTED"],
        selftest=selftest or None,
        lifetime=timedelta(days=lifetime_days),
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "b.bundle"
        build_bundle(image, draft, sign or signer(), out, kek, now=now)
        return out.read_bytes()


def device(
    *,
    kek: bytes | None = None,
    ff_bound: int = 1000,
    initial_sequence: int = 0,
    slot_bytes: int = SLOT_BYTES,
    root: bytes | None = None,
    page_size: int = 4096,
):
    if BACKEND != "host":
        from tinymlops.device.agent.emulated import EmuDevice

        dev = EmuDevice(profile(BACKEND), board=board())
    else:
        dev = SimDevice(lib(), Layout.for_slot(slot_bytes, page_size=page_size))
    dev.provision(
        root if root is not None else trust().public_key,
        DEVICE_ID,
        CLASS_ID,
        kek=kek,
        ff_bound=ff_bound,
        initial_sequence=initial_sequence,
    )
    return dev


def running(dev, sequence: int, now: datetime = NOW, **kw) -> SimDevice:
    """A device that has installed and confirmed `sequence`."""
    assert dev.install(bundle(sequence, **kw), now).reason == "pending"
    booted = dev.boot(now)
    assert booted.event == "confirmed" and booted.running_sequence == sequence, booted
    return dev
