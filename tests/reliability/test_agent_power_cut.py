"""Power cuts against the C agent (MCUboot-style): a reset injected at every flash write and erase
of an install and of the boot that follows, exhaustively; then 1,000 randomized trials mixing
cuts with corruption (bit flips in the inactive slot, torn or garbage state-log records, damaged
bundles in transit).

A cut tears the operation in progress (half the bytes programmed, or half the page erased) and
abandons the agent's RAM; the flash persists. After every trial the device is booted again and
must (1) run a model whose bytes are one of the genuinely signed images (never an unverified
one) or, at worst, run nothing yet stay updatable, and (2) not be bricked: a fresh, higher release
must install and confirm. Figures are printed (pytest -s) and counted: 0 bricked, 0 unverified.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from tests.unit.device.agent import rig
from tests.unit.device.agent.rig import NOW
from tinymlops.bundle import generate_kek
from tinymlops.device.agent import Layout, SimDevice

RANDOM_TRIALS = 1000
OLD, NEW, NEXT = 7, 8, 9
FIGURES: dict[str, int] = {}


@pytest.fixture(scope="module")
def rig_():
    kek = generate_kek()
    images = {seq: rig.model(seq, 96, 24) for seq in (OLD, NEW, NEXT)}  # 2.3 KB images: many writes
    bundles = {
        OLD: rig.bundle(OLD, payload=images[OLD], kek=kek),
        NEW: rig.bundle(NEW, payload=images[NEW], kek=kek),
        NEXT: rig.bundle(NEXT, payload=images[NEXT], kek=kek),
        "plain": rig.bundle(NEW, payload=images[NEW]),
    }
    layout = Layout.for_slot(8 * 1024, page_size=512, meta_bytes=4096)
    base = SimDevice(rig.lib(), layout)
    base.provision(rig.trust().public_key, rig.DEVICE_ID, rig.CLASS_ID, kek=kek, ff_bound=100)
    assert base.install(bundles[OLD], NOW).reason == "pending" and base.boot(NOW).event == "confirmed"
    genuine = {hashlib.sha256(img).hexdigest(): seq for seq, img in images.items()}
    return layout, bytes(base.flash), bundles, images, genuine


def check(dev: SimDevice, bundles, images, genuine) -> tuple[bool, bool, int | None]:
    """(bricked, unverified, running sequence) after a reset."""
    booted = dev.boot(NOW)
    unverified = False
    if booted.running_slot is not None:
        image = dev.slot_image(booted.running_slot, len(images[OLD]))
        seq = genuine.get(hashlib.sha256(image).hexdigest())
        unverified = seq is None or seq != booted.running_sequence
    probe = SimDevice(dev.lib, dev.layout, bytearray(dev.flash))  # updatable? (on a copy)
    ok = probe.install(bundles[NEXT], NOW).reason == "pending" and probe.boot(NOW).running_sequence == NEXT
    return not ok, unverified, booted.running_sequence


def ops_of(layout, flash, fn) -> int:
    dev = SimDevice(rig.lib(), layout, bytearray(flash))
    fn(dev, 0)
    return dev.counters()["ops"]


def test_cut_at_every_write_and_erase_of_an_install(rig_) -> None:
    layout, flash, bundles, images, genuine = rig_
    n = ops_of(layout, flash, lambda d, k: d.install(bundles[NEW], NOW, cut_at=k))
    assert n >= 20
    outcomes = {}
    for k in range(1, n + 1):
        dev = SimDevice(rig.lib(), layout, bytearray(flash))
        assert dev.install(bundles[NEW], NOW, cut_at=k).cut
        bricked, unverified, running = check(dev, bundles, images, genuine)
        assert not bricked and not unverified, (k, running)
        assert running in (OLD, NEW)
        outcomes[running] = outcomes.get(running, 0) + 1
    assert outcomes.get(OLD, 0) >= n - 1  # only a cut after the pending record leaves NEW to be confirmed
    assert dev.counters()["violations"] == 0
    FIGURES["install_cut_points"] = n


def test_cut_at_every_write_and_erase_of_the_boot_that_confirms(rig_) -> None:
    layout, flash, bundles, images, genuine = rig_
    pending = SimDevice(rig.lib(), layout, bytearray(flash))
    assert pending.install(bundles[NEW], NOW).reason == "pending"
    n = ops_of(layout, pending.flash, lambda d, k: d.boot(NOW, cut_at=k))
    assert n >= 2
    for k in range(1, n + 1):
        dev = SimDevice(rig.lib(), layout, bytearray(pending.flash))
        assert dev.boot(NOW, cut_at=k).cut
        bricked, unverified, running = check(dev, bundles, images, genuine)
        assert not bricked and not unverified and running in (OLD, NEW), (k, running)
    FIGURES["boot_cut_points"] = n


def test_cut_at_every_write_of_a_revocation_list_and_a_recovery(rig_) -> None:
    from tinymlops.bundle import issue_recovery
    from tinymlops.bundle.keys import _issue_revocations, _read_private

    layout, flash, bundles, images, genuine = rig_
    root = _read_private(rig.keydir() / "root.key", None)
    revocations = _issue_revocations(root, 1, ["0123456789abcdef"], NOW)
    recovery = issue_recovery(
        rig.keydir(), class_id=rig.CLASS_ID, device_id=rig.DEVICE_ID, recovery_counter=0, sequence=OLD, now=NOW
    )
    for name, call in (("revocations", SimDevice.install_revocations), ("recovery", SimDevice.apply_recovery)):
        data = revocations if name == "revocations" else recovery
        n = ops_of(layout, flash, lambda d, k, call=call, data=data: call(d, data, cut_at=k))
        for k in range(1, n + 1):
            dev = SimDevice(rig.lib(), layout, bytearray(flash))
            assert call(dev, data, cut_at=k).cut
            bricked, unverified, running = check(dev, bundles, images, genuine)
            assert not bricked and not unverified and running == OLD
            again = call(dev, data).reason  # the interrupted operation can be redone
            assert again in ("ok", "stale_revocations", "stale_recovery"), again
        FIGURES[f"{name}_cut_points"] = n


def test_randomized_cuts_and_corruption(rig_) -> None:
    layout, flash, bundles, images, genuine = rig_
    rnd = random.Random(20260601)
    tally = {"trials": 0, "bricked": 0, "unverified": 0, "running_new": 0, "running_old": 0, "running_none": 0}
    kinds: dict[str, int] = {}
    for _ in range(RANDOM_TRIALS):
        dev = SimDevice(rig.lib(), layout, bytearray(flash))
        data = bytearray(bundles[rnd.choice([NEW, NEW, "plain"])])
        kind = rnd.choice(["cut_install", "cut_boot", "slot_bitflip", "state_torn", "state_garbage", "bundle_bitflip",
                           "cut_install_then_cut_boot", "slot_bitflip_after_confirm"])  # fmt: skip
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "bundle_bitflip":
            i = rnd.randrange(len(data))
            data[i] ^= 1 << rnd.randrange(8)
        cut = rnd.randint(1, 40) if kind.startswith("cut_install") else 0
        out = dev.install(bytes(data), NOW, chunk=rnd.choice([1, 7, 64, 509, 4096]), cut_at=cut)
        inactive = 1  # OLD runs in slot 0; installs go to slot 1
        if kind in ("slot_bitflip", "slot_bitflip_after_confirm"):
            if kind == "slot_bitflip_after_confirm":
                dev.boot(NOW)
                inactive = 0 if dev.state().active == 1 else 1
            lo, hi = dev.image_range(inactive)
            for _ in range(rnd.randint(1, 4)):
                pos = rnd.randrange(lo, lo + len(images[OLD]))
                dev.flash[pos] ^= 1 << rnd.randrange(8)
        elif kind == "state_torn":  # the next state record write is torn: a cut during the boot
            dev.boot(NOW, cut_at=1)
        elif kind == "state_garbage":  # a half-programmed record left in the log's erased area
            base = layout.state_addr
            page = dev.flash[base : base + 2 * layout.page_size]
            free = page.find(b"\xff" * 64)
            if free >= 0 and free % 64 == 0:
                dev.flash[base + free : base + free + 32] = rnd.randbytes(32)
        elif kind.startswith("cut_boot") or kind == "cut_install_then_cut_boot":
            dev.boot(NOW, cut_at=rnd.randint(1, 4))
        assert dev.counters()["violations"] == 0
        bricked, unverified, running = check(dev, bundles, images, genuine)
        tally["trials"] += 1
        tally["bricked"] += bricked
        tally["unverified"] += unverified
        key = {OLD: "running_old", NEW: "running_new"}.get(running, "running_none")
        tally[key] += 1
        assert out.reason in ("pending", "cut") or kind == "bundle_bitflip", (kind, out)
    FIGURES.update({f"random_{k}": v for k, v in tally.items()})
    print(f"\npower cuts: {FIGURES}\ntrial kinds: {kinds}")
    assert tally["bricked"] == 0 and tally["unverified"] == 0, tally
