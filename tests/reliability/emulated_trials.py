"""Randomized power cuts and corruption on the emulated core: one trial loop for the test (a fast
run) and bench/agent.py (1,000 trials). After every trial the device is reset and must run one of
the genuinely signed images or nothing (`unverified` counts the others), and must still take a
fresh, higher release (`bricked` counts the ones that cannot).

Identical flash states give identical outcomes (the emulator is deterministic), so a check is
computed once per distinct flash image (`Rig.checked`)."""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field

from tests.unit.device.agent import rig
from tests.unit.device.agent.rig import NOW
from tinymlops.bundle import generate_kek
from tinymlops.device.agent.emulated import EmuDevice

OLD, NEW, NEXT = 7, 8, 9
KINDS = ("cut_install", "cut_boot", "slot_bitflip", "state_torn", "state_garbage", "bundle_bitflip",
         "cut_install_then_cut_boot", "slot_bitflip_after_confirm")  # fmt: skip


@dataclass
class Rig:
    base: EmuDevice  # OLD installed and confirmed in slot 0
    bundles: dict
    images: dict[int, bytes]
    genuine: dict[str, int]  # sha256 of a signed image -> its sequence
    checked: dict[str, tuple[bool, bool, int | None]] = field(default_factory=dict)


def make_rig() -> Rig:
    """Call with rig.use(<emulated profile>) in force."""
    kek = generate_kek()
    images = {seq: rig.model(seq, 96, 24) for seq in (OLD, NEW, NEXT)}  # 2.6 KB TMR1 images
    bundles = {
        OLD: rig.bundle(OLD, payload=images[OLD], kek=kek),
        NEW: rig.bundle(NEW, payload=images[NEW], kek=kek),
        NEXT: rig.bundle(NEXT, payload=images[NEXT], kek=kek),
        "plain": rig.bundle(NEW, payload=images[NEW]),
    }
    base = rig.device(kek=kek, ff_bound=100)
    assert base.install(bundles[OLD], NOW).reason == "pending" and base.boot(NOW).event == "confirmed"
    genuine = {hashlib.sha256(img).hexdigest(): seq for seq, img in images.items()}
    return Rig(base, bundles, images, genuine)


def check(r: Rig, dev: EmuDevice) -> tuple[bool, bool, int | None]:
    """(bricked, unverified, running sequence) after a reset; then a higher release on a fork."""
    key = hashlib.sha256(dev.flash).hexdigest()
    if key in r.checked:
        return r.checked[key]
    booted = dev.boot(NOW)
    unverified = False
    if booted.running_slot is not None:
        image = dev.slot_image(booted.running_slot, len(r.images[OLD]))
        seq = r.genuine.get(hashlib.sha256(image).hexdigest())
        unverified = seq is None or seq != booted.running_sequence
    probe = dev.fork()
    ok = probe.install(r.bundles[NEXT], NOW).reason == "pending" and probe.boot(NOW).running_sequence == NEXT
    r.checked[key] = (not ok, unverified, booted.running_sequence)
    return r.checked[key]


def run_trials(r: Rig, trials: int, seed: int) -> tuple[dict[str, float], dict[str, int]]:
    """`trials` randomized trials: (tally with wall seconds, trials per kind)."""
    rnd = random.Random(seed)
    started = time.perf_counter()
    tally: dict[str, float] = dict.fromkeys(
        ("trials", "bricked", "unverified", "running_new", "running_old", "running_none", "bad_reason"), 0
    )
    kinds: dict[str, int] = {}
    installs: dict[tuple, tuple[bytes, str]] = {}
    for _ in range(trials):
        data = bytearray(r.bundles[rnd.choice([NEW, NEW, "plain"])])
        kind = rnd.choice(KINDS)
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "bundle_bitflip":
            i = rnd.randrange(len(data))
            data[i] ^= 1 << rnd.randrange(8)
        cut = rnd.randint(1, 40) if kind.startswith("cut_install") else 0
        chunk = rnd.choice([64, 509, 1000, 4096])  # every call is an emulator entry: no 1-byte chunks here
        key = (hashlib.sha256(data).digest(), cut, chunk if kind == "bundle_bitflip" else 0)
        if key not in installs:  # the same install from the same flash: the same flash after it
            dev = r.base.clone()
            out = dev.install(bytes(data), NOW, chunk=chunk, cut_at=cut)
            installs[key] = (bytes(dev.flash), out.reason)
        flash, reason = installs[key]
        dev = EmuDevice(r.base.profile, bytearray(flash), board=r.base.board)
        _corrupt(dev, kind, rnd, len(r.images[OLD]))
        assert dev.counters()["prov_touches"] == 0
        bricked, unverified, running = check(r, dev)
        tally["trials"] += 1
        tally["bricked"] += bricked
        tally["unverified"] += unverified
        tally[{OLD: "running_old", NEW: "running_new"}.get(running, "running_none")] += 1  # type: ignore[call-overload]
        tally["bad_reason"] += not (reason in ("pending", "cut") or kind == "bundle_bitflip")
    tally["seconds"] = round(time.perf_counter() - started, 1)
    tally["distinct_states_checked"] = len(r.checked)
    return tally, kinds


def _corrupt(dev: EmuDevice, kind: str, rnd: random.Random, image_bytes: int) -> None:
    inactive = 1  # OLD runs in slot 0; installs go to slot 1
    if kind in ("slot_bitflip", "slot_bitflip_after_confirm"):
        if kind == "slot_bitflip_after_confirm":
            dev.boot(NOW)
            inactive = 0 if dev.state().active == 1 else 1
        lo, _ = dev.image_range(inactive)
        for _ in range(rnd.randint(1, 4)):
            pos = rnd.randrange(lo, lo + image_bytes)
            dev.flash[pos] ^= 1 << rnd.randrange(8)
    elif kind == "state_torn":  # the next state record write is torn: a cut during the boot
        dev.boot(NOW, cut_at=1)
    elif kind == "state_garbage":  # a half-programmed record left in the log's erased area
        lo, hi = dev.state_range
        free = dev.flash[lo:hi].find(b"\xff" * 64)
        if free >= 0 and free % 64 == 0:
            dev.flash[lo + free : lo + free + 32] = rnd.randbytes(32)
    elif kind.startswith("cut_boot") or kind == "cut_install_then_cut_boot":
        dev.boot(NOW, cut_at=rnd.randint(1, 4))
