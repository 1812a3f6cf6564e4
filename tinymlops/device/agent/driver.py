"""ctypes driver for the host-native C agent over a simulated flash (firmware/agent/host/sim.c).

    lib = AgentLibrary.load()
    dev = SimDevice(lib, Layout.for_slot(64 * 1024))           # flash: a bytearray, all 0xFF
    dev.provision(root_public_key, device_id, class_id, kek=..., ff_bound=DEFAULT_FF_BOUND)
    dev.install(bundle_bytes, now=...)         → Outcome(reason="pending")
    dev.boot(now=...)                          → BootOutcome(event="confirmed", running_slot=0, ...)

Every call takes `cut_at`: the N-th flash write or erase of that call is torn and power is cut
(longjmp in C back to the entry point); the flash bytearray keeps what landed, as real flash would.
The outcome then says cut=True and the next call starts from flash, like a reset.
"""

from __future__ import annotations

import ctypes
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import UUID

from tinymlops.device.agent.build import host_library
from tinymlops.device.flash import GoldenVectors

CUT = -2
EVENTS = ("none", "pending", "confirmed", "reverted", "revocations", "recovery", "attempt", "cleared")
NO_SLOT = 0xFF


PROV_BYTES = 204  # TMLA_PROV_BYTES


def new_device_key(prov: Prov) -> bytes:
    """Fill `prov` with a fresh Ed25519 key pair; return the public key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = secrets.token_bytes(32)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    prov.has_device_key = 1
    prov.device_sk[:] = seed
    prov.device_pk[:] = public
    return public


# Release sequences are Unix seconds (the pipeline signs at its clock), so the fast-forward bound
# is a span of time: 5 years above the installed sequence. A bundle "from the far future" (the
# 2^63−1 attack) is still refused; an ordinary next release, weeks later, is not.
DEFAULT_FF_BOUND = 5 * 365 * 24 * 3600


class Layout(ctypes.Structure):
    _fields_ = [
        ("page_size", ctypes.c_uint32),
        ("prov_addr", ctypes.c_uint32),
        ("state_addr", ctypes.c_uint32),
        ("revo_addr", ctypes.c_uint32),
        ("revo_pages", ctypes.c_uint32),
        ("slot_addr", ctypes.c_uint32 * 2),
        ("slot_meta_bytes", ctypes.c_uint32),
        ("slot_image_bytes", ctypes.c_uint32),
        ("meter_addr", ctypes.c_uint32),
    ]

    @property
    def flash_bytes(self) -> int:
        end = self.slot_addr[1] + self.slot_meta_bytes + self.slot_image_bytes
        return max(end, self.meter_addr + 2 * self.page_size if self.meter_addr else 0)

    @classmethod
    def for_slot(
        cls, image_bytes: int, page_size: int = 4096, meta_bytes: int | None = None, revo_bytes: int = 1024
    ) -> Layout:
        """Provisioning page, two state pages, two revocation copies, then slots A and B, each a
        manifest area (`meta_bytes`, also the agent's RAM work buffer) followed by the image."""

        def pages(n: int) -> int:
            return -(-n // page_size) * page_size

        meta = pages(meta_bytes if meta_bytes is not None else min(16 * 1024, max(4096, image_bytes // 4)))
        revo_pages = pages(revo_bytes) // page_size
        image = pages(image_bytes)
        prov = pages(PROV_BYTES)
        revo_addr = prov + 2 * page_size
        slot_a = revo_addr + 2 * revo_pages * page_size
        return cls(
            page_size=page_size,
            prov_addr=0,
            state_addr=prov,
            revo_addr=revo_addr,
            revo_pages=revo_pages,
            slot_addr=(ctypes.c_uint32 * 2)(slot_a, slot_a + meta + image),
            slot_meta_bytes=meta,
            slot_image_bytes=image,
            meter_addr=slot_a + 2 * (meta + image),
        )

    @classmethod
    def for_profile(cls, profile) -> Layout:  # DeviceProfile: the model slot and the part's flash page
        page = {"cortex-m0plus": 128, "cortex-m7": 8192}.get(profile.core, 4096)
        return cls.for_slot(profile.flash_model_bytes, page_size=page)


class Prov(ctypes.Structure):
    _fields_ = [
        ("root_pk", ctypes.c_uint8 * 32),
        ("device_id", ctypes.c_uint8 * 16),
        ("class_id", ctypes.c_uint8 * 16),
        ("has_kek", ctypes.c_uint8),
        ("kek", ctypes.c_uint8 * 32),
        ("ff_bound", ctypes.c_uint64),
        ("initial_sequence", ctypes.c_uint64),
        ("max_boot_attempts", ctypes.c_uint32),
        ("metered", ctypes.c_uint8),
        ("has_device_key", ctypes.c_uint8),
        ("device_sk", ctypes.c_uint8 * 32),
        ("device_pk", ctypes.c_uint8 * 32),
    ]


class Meter(ctypes.Structure):
    _fields_ = [
        ("seq", ctypes.c_uint32),
        ("count", ctypes.c_uint64),
        ("limit", ctypes.c_uint64),
        ("expires", ctypes.c_uint64),
        ("serial", ctypes.c_uint64),
    ]


@dataclass(frozen=True)
class MeterState:
    count: int
    limit: int
    expires: int
    serial: int


class State(ctypes.Structure):
    _fields_ = [
        ("seq", ctypes.c_uint32),
        ("active", ctypes.c_uint8),
        ("pending", ctypes.c_uint8),
        ("boot_attempts", ctypes.c_uint8),
        ("last_event", ctypes.c_uint8),
        ("last_reason", ctypes.c_uint16),
        ("revo_copy", ctypes.c_uint8),
        ("floor", ctypes.c_uint64),
        ("revo_version", ctypes.c_uint64),
        ("revo_count", ctypes.c_uint32),
        ("revo_crc", ctypes.c_uint32),
        ("recovery_counter", ctypes.c_uint64),
        ("active_sequence", ctypes.c_uint64),
        ("boot_count", ctypes.c_uint32),
    ]


class _BootOut(ctypes.Structure):
    _fields_ = [
        ("event", ctypes.c_int32),
        ("reason", ctypes.c_int32),
        ("running_slot", ctypes.c_int32),
        ("pad", ctypes.c_int32),
        ("running_sequence", ctypes.c_uint64),
    ]


@dataclass(frozen=True)
class Outcome:
    reason: str  # "pending" on success, else why (a tinymlops.bundle Reason value or a device reason)
    cut: bool = False

    @property
    def ok(self) -> bool:
        return self.reason in ("pending", "ok") and not self.cut


@dataclass(frozen=True)
class BootOutcome:
    event: str  # none | confirmed | reverted
    reason: str  # why reverted / no_model / slot_corrupt, else ok
    running_slot: int | None
    running_sequence: int | None
    cut: bool = False


@dataclass(frozen=True)
class DeviceState:
    active: int | None
    pending: int | None
    boot_attempts: int
    last_event: str
    last_reason: str
    floor: int
    revocation_version: int
    revoked_count: int
    recovery_counter: int
    active_sequence: int


class Image(ctypes.Structure):  # tmla_image: what the runtime callbacks see
    _fields_ = [
        ("addr", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("slot", ctypes.c_uint32),
        ("sequence", ctypes.c_uint64),
        ("arena_bytes", ctypes.c_uint64),
        ("ops", ctypes.c_void_p),
        ("ops_len", ctypes.c_uint32),
        ("ops_count", ctypes.c_uint32),
        ("has_selftest", ctypes.c_int),
        ("in_rank", ctypes.c_uint32),
        ("out_rank", ctypes.c_uint32),
        ("input_shape", ctypes.c_uint64 * 8),
        ("output_shape", ctypes.c_uint64 * 8),
        ("inputs", ctypes.c_void_p),
        ("expected", ctypes.c_void_p),
        ("inputs_len", ctypes.c_uint32),
        ("expected_len", ctypes.c_uint32),
        ("count", ctypes.c_uint64),
        ("tolerance", ctypes.c_uint32),
    ]


RuntimeCheck = Callable[[bytes, int], str]  # (image bytes, manifest arena bytes) -> ok | not_a_model | image_unfit
RuntimeSelfTest = Callable[[bytes, GoldenVectors | None], str]  # -> ok | selftest_failed
_RUNTIME_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(Image))


class AgentLibrary:
    """The loaded host library, with argument types declared once."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        p, sz, u8p = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
        sigs = {
            "tmla_sim_sizeof": ([], sz),
            "tmla_agent_sizeof": ([], sz),
            "tmla_sim_setup": ([p, p, ctypes.c_uint32, p, p], None),
            "tmla_sim_configure": ([p, ctypes.c_uint64, ctypes.c_int64, ctypes.c_uint32, ctypes.c_int32], None),
            "tmla_sim_counters": ([p, p], None),
            "tmla_sim_init": ([p], ctypes.c_int),
            "tmla_sim_begin": ([p], ctypes.c_int),
            "tmla_sim_feed": ([p, u8p, sz], ctypes.c_int),
            "tmla_sim_end": ([p], ctypes.c_int),
            "tmla_sim_install": ([p, u8p, sz, sz], ctypes.c_int),
            "tmla_sim_boot": ([p, p], ctypes.c_int),
            "tmla_sim_revocations": ([p, u8p, sz], ctypes.c_int),
            "tmla_sim_recovery": ([p, u8p, sz], ctypes.c_int),
            "tmla_sim_state": ([p, p], ctypes.c_int),
            "tmla_reason_name": ([ctypes.c_int], ctypes.c_char_p),
            "tmla_prov_encode": ([p, p], ctypes.c_int),
            "tmla_x_sha256": ([u8p, sz, p], ctypes.c_int),
            "tmla_x_sha512": ([u8p, sz, p], ctypes.c_int),
            "tmla_x_ed25519_verify": ([u8p, u8p, u8p, sz], ctypes.c_int),
            "tmla_x_gcm": ([ctypes.c_int, u8p, sz, u8p, u8p, sz, u8p, p, sz, p], ctypes.c_int),
            "tmla_x_aes_encrypt": ([u8p, sz, u8p, p], ctypes.c_int),
            "tmla_x_unwrap": ([u8p, sz, u8p, sz, p], ctypes.c_int),
            "tmla_x_cbor_check": ([u8p, ctypes.c_uint32], ctypes.c_int),
            "tmla_sim_evidence": ([p, u8p, ctypes.c_uint32, p, ctypes.c_uint32, p], ctypes.c_int),
            "tmla_sim_consume": ([p], ctypes.c_int),
            "tmla_sim_sign": ([p, u8p, ctypes.c_uint32, p, ctypes.c_uint32, p], ctypes.c_int),
            "tmla_sim_quota": ([p, u8p, sz], ctypes.c_int),
            "tmla_sim_meter": ([p, p], ctypes.c_int),
            "tmla_x_sign": ([u8p, u8p, u8p, sz, p], ctypes.c_int),
            "tmla_sim_runtime": ([p, _RUNTIME_FN, _RUNTIME_FN], None),
        }
        for name, (args, res) in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
        self.lib = lib
        self.path = path

    @classmethod
    def load(cls, cache: Path | None = None) -> AgentLibrary:
        return cls(host_library(cache))

    def reason(self, code: int) -> str:
        return "cut" if code == CUT else self.lib.tmla_reason_name(code).decode()

    def code(self, name: str) -> int:
        """The tmla_reason number of a reason name (the runtime callbacks answer with names)."""
        if not hasattr(self, "_codes"):
            self._codes = {self.lib.tmla_reason_name(i).decode(): i for i in range(64)}
        return self._codes[name]

    # primitives, for the vector tests and the benchmark
    def sha256(self, data: bytes) -> bytes:
        out = ctypes.create_string_buffer(32)
        self.lib.tmla_x_sha256(data, len(data), out)
        return out.raw

    def sha512(self, data: bytes) -> bytes:
        out = ctypes.create_string_buffer(64)
        self.lib.tmla_x_sha512(data, len(data), out)
        return out.raw

    def ed25519_verify(self, signature: bytes, public_key: bytes, message: bytes) -> bool:
        return self.lib.tmla_x_ed25519_verify(signature, public_key, message, len(message)) == 0

    def aes_encrypt_block(self, key: bytes, block: bytes) -> bytes:
        out = ctypes.create_string_buffer(16)
        if self.lib.tmla_x_aes_encrypt(key, len(key), block, out):
            raise ValueError("bad AES key length")
        return out.raw

    def gcm_encrypt(self, key: bytes, iv: bytes, aad: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
        out, tag = ctypes.create_string_buffer(max(len(plaintext), 1)), ctypes.create_string_buffer(16)
        self.lib.tmla_x_gcm(1, key, len(key), iv, aad, len(aad), plaintext, out, len(plaintext), tag)
        return out.raw[: len(plaintext)], tag.raw

    def gcm_decrypt(self, key: bytes, iv: bytes, aad: bytes, ciphertext: bytes, tag: bytes) -> bytes | None:
        out = ctypes.create_string_buffer(max(len(ciphertext), 1))
        tagbuf = ctypes.create_string_buffer(tag, 16)
        rc = self.lib.tmla_x_gcm(0, key, len(key), iv, aad, len(aad), ciphertext, out, len(ciphertext), tagbuf)
        return out.raw[: len(ciphertext)] if rc == 0 else None

    def key_unwrap(self, kek: bytes, wrapped: bytes) -> bytes | None:
        out = ctypes.create_string_buffer(len(wrapped))
        rc = self.lib.tmla_x_unwrap(kek, len(kek), wrapped, len(wrapped), out)
        return out.raw[: len(wrapped) - 8] if rc == 0 else None

    def ed25519_sign(self, seed: bytes, public_key: bytes, message: bytes) -> bytes:
        out = ctypes.create_string_buffer(64)
        self.lib.tmla_x_sign(seed, public_key, message, len(message), out)
        return out.raw

    def cbor_deterministic(self, data: bytes) -> bool:
        return self.lib.tmla_x_cbor_check(data, len(data)) == 0


def _seconds(now: datetime | int) -> int:
    return int(now.timestamp()) if isinstance(now, datetime) else int(now)


class SimDevice:
    """One simulated device: its flash (a bytearray that persists across cuts) and the C agent."""

    def __init__(self, lib: AgentLibrary, layout: Layout, flash: bytearray | None = None) -> None:
        self.lib, self.layout = lib, layout
        self.flash = flash if flash is not None else bytearray(b"\xff" * layout.flash_bytes)
        if len(self.flash) < layout.flash_bytes:
            raise ValueError(f"flash is {len(self.flash)} bytes, the layout needs {layout.flash_bytes}")
        self._flash_c = (ctypes.c_uint8 * len(self.flash)).from_buffer(self.flash)
        self._work = ctypes.create_string_buffer(layout.slot_meta_bytes)
        self._sim = ctypes.create_string_buffer(lib.lib.tmla_sim_sizeof())
        self._layout_c = Layout.from_buffer_copy(layout)
        lib.lib.tmla_sim_setup(self._sim, self._flash_c, len(self.flash), ctypes.byref(self._layout_c), self._work)
        self.arena_budget, self.force_selftest_fail = 0xFFFFFFFF, False

    # -- factory -------------------------------------------------------------------------------
    def provision(
        self,
        root_public_key: bytes,
        device_id: bytes | UUID,
        class_id: bytes | UUID,
        *,
        kek: bytes | None = None,
        ff_bound: int = DEFAULT_FF_BOUND,
        initial_sequence: int = 0,
        max_boot_attempts: int = 3,
        metered: bool = False,
        device_key: bool = True,
    ) -> bytes | None:
        """Write the provisioning page (the factory does this once; the agent never can). With
        `device_key`, a fresh Ed25519 key pair goes into the page; only its public key is
        returned (the seed exists nowhere but in this device's flash)."""
        prov = Prov()
        public = None
        if device_key:
            public = new_device_key(prov)
        prov.metered = 1 if metered else 0
        prov.root_pk[:] = root_public_key
        prov.device_id[:] = device_id.bytes if isinstance(device_id, UUID) else device_id
        prov.class_id[:] = class_id.bytes if isinstance(class_id, UUID) else class_id
        prov.has_kek = 1 if kek else 0
        if kek:
            prov.kek[:] = kek
        prov.ff_bound, prov.initial_sequence, prov.max_boot_attempts = ff_bound, initial_sequence, max_boot_attempts
        page = ctypes.create_string_buffer(PROV_BYTES)
        self.lib.lib.tmla_prov_encode(ctypes.byref(prov), page)
        ctypes.memset(ctypes.addressof(prov), 0, ctypes.sizeof(prov))
        start = self.layout.prov_addr
        span = -(-PROV_BYTES // self.layout.page_size) * self.layout.page_size
        self.flash[start : start + span] = b"\xff" * span
        self.flash[start : start + PROV_BYTES] = page.raw
        return public

    def use_runtime(self, check: RuntimeCheck, self_test: RuntimeSelfTest) -> None:
        """Run the class's own runtime (e.g. TFLM on the host for a part without an emulator) as the
        agent's check_image / self_test callbacks instead of the stand-in TMDL runtime (then
        `force_selftest_fail` no longer applies; `clone()` returns a device on the stand-in)."""

        def image_of(img: Image) -> bytes:
            return bytes(self.flash[img.addr : img.addr + img.size])

        def on_check(_user: int, ptr: ctypes._Pointer) -> int:
            img = ptr.contents
            try:
                return self.lib.code(check(image_of(img), img.arena_bytes))
            except Exception:  # noqa: BLE001  (ctypes would turn an escaping error into 0 = ok: fail closed)
                return self.lib.code("not_a_model")

        def on_selftest(_user: int, ptr: ctypes._Pointer) -> int:
            img = ptr.contents
            try:
                vectors = None
                if img.has_selftest:
                    vectors = GoldenVectors(
                        input_shape=list(img.input_shape[: img.in_rank]),
                        output_shape=list(img.output_shape[: img.out_rank]),
                        inputs=ctypes.string_at(img.inputs, img.inputs_len),
                        expected=ctypes.string_at(img.expected, img.expected_len),
                        count=img.count,
                        tolerance=img.tolerance,
                    )
                return self.lib.code(self_test(image_of(img), vectors))
            except Exception:  # noqa: BLE001  (fail closed, as above)
                return self.lib.code("selftest_failed")

        self._runtime_fns = (_RUNTIME_FN(on_check), _RUNTIME_FN(on_selftest))  # kept alive with the device
        self.lib.lib.tmla_sim_runtime(self._sim, *self._runtime_fns)

    # -- agent calls ----------------------------------------------------------------------------
    def _configure(self, now: datetime | int, cut_at: int) -> None:
        self.lib.lib.tmla_sim_configure(
            self._sim, _seconds(now), cut_at, self.arena_budget, 1 if self.force_selftest_fail else 0
        )

    def install(self, bundle: bytes, now: datetime | int, *, chunk: int = 4096, cut_at: int = 0) -> Outcome:
        self._configure(now, cut_at)
        rc = self.lib.lib.tmla_sim_install(self._sim, bundle, len(bundle), chunk)
        return Outcome(self.lib.reason(rc), cut=rc == CUT)

    def begin(self, now: datetime | int, cut_at: int = 0) -> str:
        self._configure(now, cut_at)
        return self.lib.reason(self.lib.lib.tmla_sim_begin(self._sim))

    def feed(self, data: bytes) -> str:
        return self.lib.reason(self.lib.lib.tmla_sim_feed(self._sim, data, len(data)))

    def end(self) -> str:
        return self.lib.reason(self.lib.lib.tmla_sim_end(self._sim))

    def boot(self, now: datetime | int = 0, *, cut_at: int = 0) -> BootOutcome:
        self._configure(now, cut_at)
        out = _BootOut()
        rc = self.lib.lib.tmla_sim_boot(self._sim, ctypes.byref(out))
        if rc == CUT:
            return BootOutcome("none", "cut", None, None, cut=True)
        running = out.running_slot if out.running_slot >= 0 else None
        return BootOutcome(
            EVENTS[out.event] if 0 <= out.event < len(EVENTS) else str(out.event),
            self.lib.reason(out.reason),
            running,
            out.running_sequence if running is not None else None,
        )

    def install_revocations(self, signed: bytes, *, cut_at: int = 0) -> Outcome:
        self._configure(0, cut_at)
        rc = self.lib.lib.tmla_sim_revocations(self._sim, signed, len(signed))
        return Outcome(self.lib.reason(rc), cut=rc == CUT)

    def apply_recovery(self, signed: bytes, *, cut_at: int = 0) -> Outcome:
        self._configure(0, cut_at)
        rc = self.lib.lib.tmla_sim_recovery(self._sim, signed, len(signed))
        return Outcome(self.lib.reason(rc), cut=rc == CUT)

    # -- attestation and metering ----------------------------------------------------------------
    def evidence(self, nonce: bytes, now: datetime | int = 0) -> bytes:
        """A COSE_Sign1 evidence report signed by the device key (tmla_evidence)."""
        self._configure(now, 0)
        out, n = ctypes.create_string_buffer(1024), ctypes.c_uint32(0)
        rc = self.lib.lib.tmla_sim_evidence(self._sim, nonce, len(nonce), out, len(out), ctypes.byref(n))
        if rc != 0:
            raise RuntimeError(f"evidence: {self.lib.reason(rc)}")
        return out.raw[: n.value]

    def sign_telemetry(self, payload: bytes) -> bytes:
        """A telemetry window as a COSE_Sign1 by the device key (tmla_sign_telemetry)."""
        self._configure(0, 0)
        out, n = ctypes.create_string_buffer(len(payload) + 256), ctypes.c_uint32(0)
        rc = self.lib.lib.tmla_sim_sign(self._sim, payload, len(payload), out, len(out), ctypes.byref(n))
        if rc != 0:
            raise RuntimeError(f"sign: {self.lib.reason(rc)}")
        return out.raw[: n.value]

    def consume(self, now: datetime | int = 0, *, cut_at: int = 0) -> Outcome:
        """One inference's worth of the meter: ok, quota_exhausted or quota_expired."""
        self._configure(now, cut_at)
        rc = self.lib.lib.tmla_sim_consume(self._sim)
        return Outcome(self.lib.reason(rc), cut=rc == CUT)

    def install_quota(self, signed: bytes, now: datetime | int = 0, *, cut_at: int = 0) -> Outcome:
        self._configure(now, cut_at)
        rc = self.lib.lib.tmla_sim_quota(self._sim, signed, len(signed))
        return Outcome(self.lib.reason(rc), cut=rc == CUT)

    def meter(self) -> MeterState:
        self._configure(0, 0)
        m = Meter()
        self.lib.lib.tmla_sim_meter(self._sim, ctypes.byref(m))
        return MeterState(m.count, m.limit, m.expires, m.serial)

    def state(self) -> DeviceState:
        self._configure(0, 0)
        st = State()
        self.lib.lib.tmla_sim_state(self._sim, ctypes.byref(st))

        def slot(v: int) -> int | None:
            return None if v == NO_SLOT else v

        return DeviceState(
            active=slot(st.active),
            pending=slot(st.pending),
            boot_attempts=st.boot_attempts,
            last_event=EVENTS[st.last_event] if st.last_event < len(EVENTS) else str(st.last_event),
            last_reason=self.lib.reason(st.last_reason),
            floor=st.floor,
            revocation_version=st.revo_version,
            revoked_count=st.revo_count,
            recovery_counter=st.recovery_counter,
            active_sequence=st.active_sequence,
        )

    def boot_count(self) -> int:
        """Boots counted in the state log (the evidence's bootcount claim)."""
        self._configure(0, 0)
        st = State()
        self.lib.lib.tmla_sim_state(self._sim, ctypes.byref(st))
        return int(st.boot_count)

    def counters(self) -> dict[str, int]:
        out = (ctypes.c_int64 * 6)()
        self.lib.lib.tmla_sim_counters(self._sim, out)
        return dict(zip(("ops", "writes", "erases", "violations", "prov_touches", "bytes_written"), out, strict=True))

    def slot_image(self, slot: int, size: int) -> bytes:
        start = self.layout.slot_addr[slot] + self.layout.slot_meta_bytes
        return bytes(self.flash[start : start + size])

    def image_range(self, slot: int) -> tuple[int, int]:
        start = self.layout.slot_addr[slot] + self.layout.slot_meta_bytes
        return start, start + self.layout.slot_image_bytes

    def clone(self) -> SimDevice:
        twin = SimDevice(self.lib, self.layout, bytearray(self.flash))
        twin.arena_budget, twin.force_selftest_fail = self.arena_budget, self.force_selftest_fail
        return twin
