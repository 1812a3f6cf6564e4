"""Differential: the Python device model (tinymlops.device.firmware.Device) against the C update
agent (host build, SimDevice) on every transition. The C agent is the authority.

Hypothesis generates sequences of operations, applied to both devices (same root key, class,
device id, class KEK, fast-forward bound, clock, stand-in runtime): installs of valid, encrypted
and invalid bundles (untrusted signer, wrong class, expired, wrong KEK, tampered or truncated
payload, not a model, unfit, larger than the slot) at equal, lower, higher and fast-forward
sequences; revocation lists (newer, stale, tampered, revoking the signing key); recovery
statements (this device, another device, replayed); boots with the self-test passing or failing;
power cut at the first, a middle or the last flash write of an install, or at the first or last
write of a boot. After every step both must give the same answer (accepted or the reason, by the
agent's names) and the same state: active and pending slot, boot attempts, anti-rollback floor,
running sequence, revocation version, recovery counter; a boot also the event, running slot and
sequence.

A power cut is placed by what it tears, on each side: an install's first write (nothing
committed), a write in the middle (the slot; a pending image it replaces is already given up) or
its last (the pending record); a boot's first write (the attempt record) or its last (the confirm
or revert record). The C cut index comes from the same call run uncut on a copy of the flash.
"""

from __future__ import annotations

import functools
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.device.agent import rig
from tests.unit.device.agent.rig import CLASS_ID, DEVICE_ID, NOW
from tinymlops.bundle import generate_kek, init_keys, load_signer
from tinymlops.bundle.keys import _issue_revocations, _read_private
from tinymlops.bundle.recovery import issue_recovery
from tinymlops.device.agent import Layout, SimDevice
from tinymlops.device.agent.images import tmdl_runtime, toy_model
from tinymlops.device.firmware import Device, bundle_verifier
from tinymlops.device.flash import Flash, PowerCut

SLOT = 8192
FF_BOUND = 10
ARENA_BUDGET = 4096
EXAMPLES = 400
TALLY: dict = {"sequences": 0, "steps": 0, "by_op": {}, "answers": {}, "started": None}
VARIANTS = ("valid", "valid", "valid", "valid", "valid", "enc", "enc", "wrong_kek", "untrusted", "class", "expired",
            "payload", "truncated", "not_model", "unfit", "too_large")  # fmt: skip


@functools.cache
def world() -> dict:
    kek, other_kek = generate_kek(), generate_kek()
    stranger = Path(tempfile.mkdtemp(prefix="tinymlops-stranger-")) / "keys"
    init_keys(stranger, now=NOW - timedelta(days=1))
    profile = rig.profile().model_copy(
        update={"vendor": rig.VENDOR, "device_class": rig.DEVICE_CLASS, "flash_model_bytes": SLOT}
    )
    assert profile.class_id == CLASS_ID
    return {"kek": kek, "other_kek": other_kek, "stranger": load_signer(stranger, now=NOW), "profile": profile}


@functools.cache
def bundle(variant: str, seq: int) -> bytes:
    w = world()
    if variant == "enc":
        return rig.bundle(seq, kek=w["kek"])
    if variant == "wrong_kek":
        return rig.bundle(seq, kek=w["other_kek"])
    if variant == "untrusted":
        return rig.bundle(seq, sign=w["stranger"])
    if variant == "class":
        return rig.bundle(seq, device_class="other-class")
    if variant == "expired":
        return rig.bundle(seq, lifetime_days=0.1, now=NOW - timedelta(hours=3))
    if variant == "payload":  # the last payload byte flipped
        data = bytearray(rig.bundle(seq))
        data[-1] ^= 0x40
        return bytes(data)
    if variant == "truncated":
        return rig.bundle(seq)[:-7]
    if variant == "not_model":
        return rig.bundle(seq, payload=b"signed, but no model " * 4, selftest=None)
    if variant == "unfit":  # asks for more arena than the runtime has
        return rig.bundle(seq, payload=toy_model(16, 4, arena=2 * ARENA_BUDGET, seed=seq))
    if variant == "too_large":
        return rig.bundle(seq, payload=toy_model(96, 96, seed=seq), selftest=None)
    return rig.bundle(seq)


@functools.cache
def revocations(version: int, revoke_signer: bool, tampered: bool) -> bytes:
    root = _read_private(rig.keydir() / "root.key", None)
    kids = [rig.signer().kid] if revoke_signer else ["0123456789abcdef"]
    signed = bytearray(_issue_revocations(root, version, kids, NOW))
    if tampered:
        signed[-1] ^= 1  # inside the signature
    return bytes(signed)


@functools.cache
def recovery(sequence: int, counter: int, other_device: bool) -> bytes:
    device = uuid.UUID(int=DEVICE_ID.int ^ 1) if other_device else DEVICE_ID
    return issue_recovery(
        rig.keydir(), class_id=CLASS_ID, device_id=device, recovery_counter=counter, sequence=sequence, now=NOW
    )


sequences = st.one_of(st.integers(0, FF_BOUND + 2), st.integers(0, 3 * FF_BOUND))
installs = st.tuples(st.just("install"), st.sampled_from(VARIANTS), sequences)
updates = st.tuples(st.just("update"), st.sampled_from(VARIANTS), sequences, st.sampled_from([False, False, True]))
boots = st.tuples(st.just("boot"), st.sampled_from([False, False, False, True]))  # self-test fails?
operation = st.one_of(
    installs,
    updates,
    updates,
    boots,
    boots,
    boots,
    st.tuples(st.just("revocations"), st.integers(0, 4), st.booleans(), st.booleans()),
    st.tuples(st.just("recovery"), sequences, st.integers(-1, 1), st.booleans()),
    st.tuples(st.just("cut_install"), sequences, st.sampled_from(["first", "middle", "last"])),
    st.tuples(st.just("cut_boot"), st.sampled_from(["first", "last"])),
)


class Pair:
    """The same device twice: the C agent over a simulated flash and the Python model over files."""

    def __init__(self, directory: Path) -> None:
        w = world()
        self.c = SimDevice(rig.lib(), Layout.for_slot(SLOT))
        self.c.provision(rig.trust().public_key, DEVICE_ID, CLASS_ID, kek=w["kek"], ff_bound=FF_BOUND)
        self.c.arena_budget = ARENA_BUDGET
        self.fail = [False]
        self.cut_point: str | None = None
        self.directory = directory
        self.py = Device(
            w["profile"],
            Flash(directory, fault=self._fault),
            bundle_verifier(rig.trust(), w["kek"]),
            clock=lambda: NOW,
            ff_bound=FF_BOUND,
            device_id=DEVICE_ID,
            runtime=tmdl_runtime(ARENA_BUDGET, self.fail),
        )

    def _fault(self, point: str) -> None:
        if self.cut_point is not None and point == self.cut_point:
            self.cut_point = None
            raise PowerCut(point)

    def state(self) -> tuple:
        c, p = self.c.state(), self.py.flash.read_state()
        slot = {None: None, "a": 0, "b": 1}
        ours = (c.active, c.pending, c.boot_attempts, c.floor, c.active_sequence, c.revocation_version,
                c.recovery_counter)  # fmt: skip
        model = (slot[p.active], slot[p.pending], p.boot_attempts, p.min_sequence, p.active_sequence,
                 p.revocation_version, p.recovery_counter)  # fmt: skip
        return ours, model

    def boot(self) -> tuple:
        c = self.c.boot(NOW)
        p = self.py.boot()
        event = {"booted": "none", "no_model": "none"}.get(p.event, p.event)
        slot = {None: None, "a": 0, "b": 1}[p.running_slot]
        return (c.event, c.reason, c.running_slot, c.running_sequence), (event, p.reason, slot, p.sequence)

    def install(self, data: bytes) -> tuple[str, str]:
        c = self.c.install(data, NOW).reason
        p = self.py.install(data, reboot=False)
        return c, "pending" if p.ok else p.reason

    # -- power cuts, placed by what they tear ----------------------------------------------------
    def cut_install(self, data: bytes, where: str) -> tuple[str, str] | None:
        probe = self.c.clone()
        before = probe.counters()["ops"]
        if probe.install(data, NOW).reason != "pending":
            return None  # refused installs write nothing worth cutting
        n = probe.counters()["ops"] - before
        state = self.c.state()
        replaces = state.pending == (1 if state.active == 0 else 0)  # a pending image in the target slot
        k = {"first": 1, "middle": max(3, n // 2), "last": n}[where]
        slot = "b" if self.py.flash.read_state().active == "a" else "a"
        self.cut_point = {
            "first": "state.clear:before" if replaces else f"slot_{slot}.image:before",
            "middle": f"slot_{slot}.image:unrenamed",
            "last": "state.mark_pending:unrenamed",
        }[where]
        c = self.c.install(data, NOW, cut_at=k)
        try:
            self.py.install(data, reboot=False)
            p = "completed"
        except PowerCut:
            p = "cut"
        return ("cut" if c.cut else c.reason), p

    def cut_boot(self, where: str) -> tuple[str, str] | None:
        if self.c.state().pending is None:
            return None  # a plain boot writes nothing
        probe = self.c.clone()
        before = probe.counters()["ops"]
        probe.boot(NOW)
        n = probe.counters()["ops"] - before
        settled = "confirm" if probe.state().active == self.c.state().pending else "revert"
        self.cut_point = "state.attempt:unrenamed" if where == "first" else f"state.{settled}:unrenamed"
        c = self.c.boot(NOW, cut_at=1 if where == "first" else n)
        try:
            self.py.boot()
            p = "completed"
        except PowerCut:
            p = "cut"
        return ("cut" if c.cut else c.reason), p


def step(pair: Pair, op: tuple) -> tuple | None:
    kind = op[0]
    if kind == "install":
        return pair.install(bundle(op[1], op[2]))
    if kind == "update":  # install, then the reboot that settles it
        installed = pair.install(bundle(op[1], op[2]))
        pair.c.force_selftest_fail = pair.fail[0] = op[3]
        return installed, pair.boot()
    if kind == "boot":
        pair.c.force_selftest_fail = pair.fail[0] = op[1]
        return pair.boot()
    if kind == "revocations":
        data = revocations(op[1], op[2], op[3])
        return pair.c.install_revocations(data).reason, pair.py.install_revocations(data)
    if kind == "recovery":
        counter = max(0, pair.c.state().recovery_counter + op[2])
        data = recovery(op[1], counter, op[3])
        return pair.c.apply_recovery(data).reason, pair.py.apply_recovery(data)
    if kind == "cut_install":
        return pair.cut_install(bundle("valid", op[1]), op[2])
    return pair.cut_boot(op[1])


SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


@SETTINGS
@given(ops=st.lists(operation, min_size=4, max_size=16))
def test_the_python_device_model_agrees_with_the_c_agent_on_every_transition(ops) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pair = Pair(Path(tmp))
        TALLY["started"] = TALLY["started"] or time.perf_counter()
        TALLY["sequences"] += 1
        for i, op in enumerate(ops):
            answers = step(pair, op)
            for c, p in _pairs(answers):
                assert c == p, f"step {i} {op}: C agent {c} vs model {p}; ops {ops}"
                key = c if isinstance(c, str) else f"boot {c[0]} {c[1]}"
                TALLY["answers"][key] = TALLY["answers"].get(key, 0) + 1
            c_state, p_state = pair.state()
            assert c_state == p_state, f"step {i} {op}: C agent state {c_state} vs model {p_state}; ops {ops}"
            TALLY["steps"] += 1
            TALLY["by_op"][op[0]] = TALLY["by_op"].get(op[0], 0) + 1


def _pairs(answers: tuple | None) -> list[tuple]:
    if answers is None:
        return []
    if isinstance(answers[0], tuple) and isinstance(answers[0][0], str) and len(answers[0]) == 2:
        return list(answers)  # an update: the install's pair, then the boot's
    return [answers]


def test_zz_the_differential_covered_every_kind_of_transition() -> None:
    """Runs after the property (file order): the corpus reached every operation and answer class."""
    if not TALLY["sequences"]:  # run alone: drive the property first
        test_the_python_device_model_agrees_with_the_c_agent_on_every_transition()
    seconds = time.perf_counter() - TALLY.pop("started")
    print(f"\ndevice model vs C agent ({seconds:.1f} s): {TALLY}")
    assert set(TALLY["by_op"]) == {"install", "update", "boot", "revocations", "recovery", "cut_install", "cut_boot"}
    seen = set(TALLY["answers"])
    for reason in ("pending", "already_installed", "fast_forward", "rollback", "wrong_kek", "wrong_class",
                   "expired_manifest", "payload_digest_mismatch", "not_a_model", "image_unfit", "too_large",
                   "stale_revocations", "ok", "stale_recovery", "wrong_device", "revoked_key", "cut",
                   "boot confirmed ok", "boot reverted selftest_failed", "boot none no_model"):  # fmt: skip
        assert reason in seen, (reason, sorted(seen))


def test_a_scripted_update_story_agrees_on_the_emulated_core(tmp_path) -> None:
    """A short cross-check with the real firmware (agent + C runtime on the emulated nRF52840)
    and real TMR1 images; the Python model runs its default runtime (the image's self-test on the
    emulated part): first install, equal, lower and fast-forward sequences, a failing self-test,
    revocation lists, a recovery statement and its replay, a revoked signing key."""
    from tinymlops.bundle import SelfTest

    rig.use(rig.EMULATED)
    try:
        emu = rig.device(ff_bound=FF_BOUND)
        profile = rig.profile().model_copy(update={"vendor": rig.VENDOR, "device_class": rig.DEVICE_CLASS})
        model = Device(
            profile, Flash(tmp_path), bundle_verifier(rig.trust()), clock=lambda: NOW, ff_bound=FF_BOUND,
            device_id=DEVICE_ID,
        )  # fmt: skip
        image = rig.model(8)
        good = rig.selftest_for(image)
        wrong = SelfTest(**{**good.model_dump(), "expected": bytes((b + 9) % 256 for b in good.expected)})
        story = [
            ("boot",),
            ("install", rig.bundle(7)),
            ("boot",),
            ("install", rig.bundle(7)),
            ("install", rig.bundle(5)),
            ("install", rig.bundle(7 + FF_BOUND + 1)),
            ("install", rig.bundle(8, payload=image, selftest=wrong)),
            ("boot",),
            ("revocations", revocations(2, False, False)),
            ("revocations", revocations(2, False, False)),
            ("recovery", recovery(3, 0, False)),
            ("recovery", recovery(3, 0, False)),
            ("install", rig.bundle(4)),
            ("boot",),
            ("revocations", revocations(3, True, False)),
            ("install", rig.bundle(6)),
        ]
        for i, (kind, *arg) in enumerate(story):
            if kind == "boot":
                c, p = emu.boot(NOW), model.boot()
                event = {"booted": "none", "no_model": "none"}.get(p.event, p.event)
                slot = {None: None, "a": 0, "b": 1}[p.running_slot]
                got = (c.event, c.reason, c.running_slot, c.running_sequence), (event, p.reason, slot, p.sequence)
            elif kind == "install":
                answer = model.install(arg[0], reboot=False)
                got = emu.install(arg[0], NOW).reason, "pending" if answer.ok else answer.reason
            elif kind == "revocations":
                got = emu.install_revocations(arg[0], now=NOW).reason, model.install_revocations(arg[0])
            else:
                got = emu.apply_recovery(arg[0], now=NOW).reason, model.apply_recovery(arg[0])
            assert got[0] == got[1], f"step {i} {kind}: C agent {got[0]} vs model {got[1]}"
            c_state, p_state = emu.state(), model.flash.read_state()
            slot = {None: None, "a": 0, "b": 1}
            assert (c_state.active, c_state.pending, c_state.floor, c_state.active_sequence) == (
                slot[p_state.active], slot[p_state.pending], p_state.min_sequence, p_state.active_sequence
            ), f"step {i} {kind}"  # fmt: skip
        assert got[0] == "revoked_key" and c_state.floor == 4 and c_state.recovery_counter == 1
    finally:
        rig.use("host")
