"""An emulated device running the real firmware: the C update agent linked with the C runtime,
cross-compiled for the profile's core and executed by the instruction-level emulator in the part's
flash and RAM (tinymlops.device.mcu). The same API as the host simulation (driver.SimDevice), so
the attack and power-cut suites run on either.

    dev = EmuDevice(profile)                       # flash: all 0xFF, firmware from the ELF
    dev.provision(root_public_key, device_id, class_id, kek=...)   # the factory, then locked
    dev.install(bundle, now)     → Outcome("pending")   streamed through agent_io in chunks
    dev.boot(now)                → BootOutcome            a reset: startup → app_init → agent_boot
    dev.state(), dev.status()

Power cuts: `cut_at=N` cuts power at the N-th erase or program of that call (the flash controller
tears it and stops the core, devices.py); RAM is then lost and the next call starts with a reset.
Several devices may share one board (`Board`, one emulator per profile): a device's flash is
written into the board before each call and read back after, so each device is its flash.
"""

from __future__ import annotations

import secrets
import struct
import threading
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tinymlops.device.agent.driver import DEFAULT_FF_BOUND, EVENTS, NO_SLOT, BootOutcome, DeviceState, Outcome
from tinymlops.device.agent.emubuild import AgentLayout, RamMode, agent_layout, build_agent_firmware
from tinymlops.device.mcu.devices import FC_OK, FlashOp
from tinymlops.device.mcu.emulator import Mcu
from tinymlops.device.profiles import DeviceProfile
from tinymlops.errors import DeviceError, FirmwareRunError, FlashPowerCut

REASONS = (
    "ok",
    "bad_magic",
    "unsupported_version",
    "malformed",
    "untrusted_key",
    "key_mismatch",
    "revoked_key",
    "expired_key",
    "key_not_yet_valid",
    "bad_signature",
    "rollback",
    "wrong_class",
    "expired_manifest",
    "payload_truncated",
    "payload_too_long",
    "payload_digest_mismatch",
    "ciphertext_digest_mismatch",
    "missing_key",
    "wrong_kek",
    "decryption_failed",
    "io_error",
    "too_large",
    "not_a_model",
    "image_unfit",
    "fast_forward",
    "already_installed",
    "stale_revocations",
    "selftest_failed",
    "boot_attempts",
    "slot_corrupt",
    "wrong_device",
    "stale_recovery",
    "not_provisioned",
    "flash_error",
    "bad_call",
    "no_model",
    "quota_exhausted",
    "quota_expired",
    "stale_quota",
    "no_device_key",
)  # fmt: skip  (firmware/agent/src/agent.c NAMES, same order)
MORE, PENDING = 100, 101
PROV_MAGIC = 0x504C4D54  # "TMLP"
PROV_BYTES = 204
METER = struct.Struct("<QQQQII")  # agent_box after the state record: meter and evidence length
BOX = struct.Struct("<I4IiiiiIIIQQIIII")  # agent_box up to the state record (firmware/app/agent_glue.c)
STATE = struct.Struct("<IBBBBHB5xQQIIQQI4x")  # tmla_state
BOX_FIELDS = ("magic", "io_addr", "io_bytes", "work_addr", "work_bytes", "result", "boot_event", "boot_reason",
              "running_slot", "running_image_addr", "running_image_bytes", "flash_errors", "running_sequence", "now",
              "selftest_vectors", "selftest_worst", "check_status", "pad")  # fmt: skip


def reason_name(code: int) -> str:
    if 0 <= code < len(REASONS):
        return REASONS[code]
    return {MORE: "more", PENDING: "pending"}.get(code, f"unknown({code})")


def prov_page(
    root_public_key: bytes,
    device_id: bytes,
    class_id: bytes,
    *,
    kek: bytes | None,
    ff_bound: int,
    initial_sequence: int,
    max_boot_attempts: int,
    metered: bool = False,
    device_key: tuple[bytes, bytes] | None = None,
) -> bytes:
    """The 204-byte provisioning record, version 2 (tmla_prov_encode in agent.c): version 1's
    fields, the metered flag and the device's Ed25519 key pair (seed, public key)."""
    o = bytearray(PROV_BYTES)
    struct.pack_into("<II32s16s16s", o, 0, PROV_MAGIC, 2, root_public_key, device_id, class_id)
    o[72] = 1 if kek else 0
    o[73] = 1 if metered else 0
    o[76:108] = kek or bytes(32)
    struct.pack_into("<QQI", o, 112, ff_bound, initial_sequence, max_boot_attempts)
    if device_key is not None:
        o[132] = 1
        o[136:168], o[168:200] = device_key
    struct.pack_into("<I", o, 200, zlib.crc32(bytes(o[:200])))
    return bytes(o)


def new_key_pair() -> tuple[bytes, bytes]:
    """(seed, public key): the factory's fresh device key; the seed goes into flash only."""
    seed = secrets.token_bytes(32)
    return seed, Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def _seconds(now: datetime | int) -> int:
    return int(now.timestamp()) if isinstance(now, datetime) else int(now)


class _Cutter:
    """A flash hook: count this call's operations; raise FlashPowerCut at the chosen one."""

    def __init__(self) -> None:
        self.cut_at = 0
        self.seen = 0
        self.bytes = 0
        self.log: list[FlashOp] | None = None

    def __call__(self, op: FlashOp) -> None:
        self.seen += 1
        self.bytes += len(op.data)
        if self.log is not None:
            self.log.append(op)
        if self.cut_at and self.seen == self.cut_at:
            raise FlashPowerCut(f"power cut at flash operation {self.seen} ({op.kind} 0x{op.addr:08X})")


@dataclass
class Board:
    """One emulated part running the agent firmware; devices take turns on it (a lock)."""

    profile: DeviceProfile
    ram: RamMode = "budget"
    count_flash_reads: bool = False  # wait-state pricing (bench: True) costs a read hook on flash
    mcu: Mcu = field(init=False)
    lay: AgentLayout = field(init=False)
    lock: threading.RLock = field(init=False, default_factory=threading.RLock)

    def __post_init__(self) -> None:
        mm, self.lay = agent_layout(self.profile, self.ram)
        fw = build_agent_firmware(mm, self.lay)
        self.mcu = Mcu(self.profile, memory=mm, firmware=fw, count_flash_reads=self.count_flash_reads)
        self.mm = mm
        self.cutter = _Cutter()
        self.mcu.flash.hooks.append(self.cutter)
        self.mcu.flash.on_cut = self.mcu.uc.emu_stop
        self.mcu.flash.lock(self.lay.prov_addr, self.lay.prov_addr + self.lay.prov_pages * self.lay.page_bytes)
        sym = fw.symbols
        self.box, self.io, self.work = sym["agent_mailbox"], sym["agent_io"], sym["agent_work"]
        self.owner: object | None = None  # whose RAM the part holds (None after a cut or a swap)
        self.data_lo = self.lay.prov_addr  # the flash a device owns: provisioning page to the end
        self.data_hi = self.mm.flash_end

    # -- flash in and out -----------------------------------------------------------------------
    def load(self, flash: bytes | bytearray) -> None:
        self.mcu.uc.mem_write(self.data_lo, bytes(flash))

    def save(self) -> bytes:
        return bytes(self.mcu.uc.mem_read(self.data_lo, self.data_hi - self.data_lo))

    def mailbox(self) -> dict[str, int]:
        raw = bytes(self.mcu.uc.mem_read(self.box, BOX.size + STATE.size + METER.size))
        box = dict(zip(BOX_FIELDS, BOX.unpack_from(raw), strict=True))
        meter = ("inference_count", "quota_limit", "quota_expires", "quota_serial", "evidence_bytes", "infer_status")
        box.update(zip(meter, METER.unpack_from(raw, BOX.size + STATE.size), strict=True))
        st = STATE.unpack_from(raw, BOX.size)
        keys = ("seq", "active", "pending", "boot_attempts", "last_event", "last_reason", "revo_copy", "floor",
                "revo_version", "revo_count", "revo_crc", "recovery_counter", "active_sequence",
                "boot_count")  # fmt: skip
        box.update({f"st_{k}": v for k, v in zip(keys, st, strict=True)})
        return box

    def set_now(self, now: int) -> None:
        self.mcu.uc.mem_write(self.box + 56, struct.pack("<Q", now))  # agent_box.now (the boot never reads it)

    def run(self, symbol: str, *args: int) -> tuple[int | None, float]:
        """Call a firmware function; (its result, cycles) or (None, cycles) when power was cut."""
        flash = self.mcu.flash
        flash.power_on()
        try:
            rc, stats = self.mcu.call(symbol, *args)
        except FirmwareRunError:
            if flash.powered:
                raise
            self.owner = None
            return None, 0.0
        if not flash.powered:  # cut in the last instructions before returning
            self.owner = None
            return None, stats.cycles
        return rc - (1 << 32) if rc & 0x80000000 else rc, stats.cycles

    def reset(self) -> tuple[bool, float]:
        """Power-on: startup code, app_init → agent_boot → app_load. False when power was cut."""
        flash = self.mcu.flash
        flash.power_on()
        try:
            stats = self.mcu._run(self.mcu.entry_reset)
        except FirmwareRunError:
            if flash.powered:
                raise
            self.owner = None
            return False, 0.0
        if not flash.powered:
            self.owner = None
            return False, stats.cycles
        return True, stats.cycles


class EmuDevice:
    """One device: its flash (bytes from the provisioning page to the end of flash) on a Board."""

    _boards: dict[tuple[str, str, bool], Board] = {}
    _boards_lock = threading.Lock()

    def __init__(
        self,
        profile: DeviceProfile,
        flash: bytearray | None = None,
        *,
        board: Board | None = None,
        ram: RamMode = "budget",
        chunk: int | None = None,
    ) -> None:
        self.profile = profile
        self.board = board or self.shared_board(profile, ram)
        b = self.board
        self.layout = b.lay
        size = b.data_hi - b.data_lo
        self.flash = flash if flash is not None else bytearray(b"\xff" * size)
        if len(self.flash) != size:
            raise DeviceError(f"{profile.name}: flash file is {len(self.flash)} bytes, the part's data area {size}")
        self.chunk = chunk or b.lay.io_bytes
        self.cycles: dict[str, float] = {}
        self.ops = self.bytes_written = self.prov_touches = 0
        self.last_selftest: tuple[int, int] = (0, 0)
        self.last_cycles = 0.0  # of the last evidence report

    @classmethod
    def shared_board(cls, profile: DeviceProfile, ram: RamMode = "budget", count_flash_reads: bool = False) -> Board:
        key = (profile.model_dump_json(), ram, count_flash_reads)
        with cls._boards_lock:
            board = cls._boards.get(key)
            if board is None:
                board = cls._boards[key] = Board(profile, ram, count_flash_reads)
        return board

    # -- addresses (relative to self.flash) -----------------------------------------------------
    def offset(self, addr: int) -> int:
        return addr - self.board.data_lo

    def image_range(self, slot: int) -> tuple[int, int]:
        lo = self.offset(self.layout.image_addr(slot))
        return lo, lo + self.layout.image_bytes

    def slot_image(self, slot: int, size: int) -> bytes:
        lo, _ = self.image_range(slot)
        return bytes(self.flash[lo : lo + size])

    @property
    def state_range(self) -> tuple[int, int]:
        lo = self.offset(self.layout.state_addr)
        return lo, lo + 2 * self.layout.page_bytes

    # -- factory --------------------------------------------------------------------------------
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
        """The factory writes the provisioning page (a probe, before the page is locked). With
        `device_key`, a fresh Ed25519 key pair goes into it; only the public key is returned."""
        pair = new_key_pair() if device_key else None
        rec = prov_page(
            root_public_key,
            device_id.bytes if isinstance(device_id, UUID) else device_id,
            class_id.bytes if isinstance(class_id, UUID) else class_id,
            kek=kek, ff_bound=ff_bound, initial_sequence=initial_sequence, max_boot_attempts=max_boot_attempts,
            metered=metered, device_key=pair,
        )  # fmt: skip
        span = self.layout.prov_pages * self.layout.page_bytes
        self.flash[0:span] = rec + b"\xff" * (span - len(rec))
        return pair[1] if pair else None

    # -- a session on the board ------------------------------------------------------------------
    def _session(self, cut_at: int, log: list[FlashOp] | None = None):
        board = self

        class _S:
            def __enter__(self_inner):
                b = board.board
                b.lock.acquire()
                if b.owner is not board:
                    b.load(board.flash)
                    b.owner = None  # RAM is not ours: reset before any command
                b.cutter.cut_at, b.cutter.seen, b.cutter.bytes, b.cutter.log = cut_at, 0, 0, log
                b.mcu.flash.protected_attempts = 0
                return b

            def __exit__(self_inner, *exc):
                b = board.board
                try:
                    board.flash[:] = b.save()
                    board.ops += b.cutter.seen
                    board.bytes_written += b.cutter.bytes
                    board.prov_touches += b.mcu.flash.protected_attempts
                    b.cutter.cut_at, b.cutter.log = 0, None
                finally:
                    b.lock.release()
                return False

        return _S()

    def _powered_on(self, b: Board, now: int) -> BootOutcome | None:
        """Reset when the board's RAM is not this device's (first use, after a cut or a swap)."""
        if b.owner is self:
            return None
        return self._reset(b, now)

    def _reset(self, b: Board, now: int) -> BootOutcome:
        b.set_now(now)
        ok, cycles = b.reset()
        self.cycles["boot"] = cycles
        if not ok:
            return BootOutcome("none", "cut", None, None, cut=True)
        b.owner = self
        box = b.mailbox()
        self.last_selftest = (box["selftest_vectors"], box["selftest_worst"])
        running = box["running_slot"] if box["running_slot"] >= 0 else None
        event = EVENTS[box["boot_event"]] if 0 <= box["boot_event"] < len(EVENTS) else str(box["boot_event"])
        return BootOutcome(
            event, reason_name(box["boot_reason"]), running, box["running_sequence"] if running is not None else None
        )

    # -- the agent's operations ------------------------------------------------------------------
    def boot(self, now: datetime | int = 0, *, cut_at: int = 0) -> BootOutcome:
        with self._session(cut_at) as b:
            return self._reset(b, _seconds(now))

    def install(
        self, bundle: bytes, now: datetime | int, *, chunk: int | None = None, cut_at: int = 0,
        log: list[FlashOp] | None = None,
    ) -> Outcome:  # fmt: skip
        """Stream the bundle into the agent (agent_io, `chunk` bytes per call). A device that is
        off (first use, after a cut) is powered on first, and that boot's operations count too."""
        t = _seconds(now)
        step = min(chunk or self.chunk, self.board.lay.io_bytes)
        with self._session(cut_at, log) as b:
            boot = self._powered_on(b, t)
            if boot is not None and boot.cut:
                return Outcome("cut", cut=True)
            b.set_now(t)
            total = 0.0
            rc, cyc = b.run("agent_install_begin")
            total += cyc
            off = 0
            while rc == MORE and off < len(bundle):
                piece = bundle[off : off + step]
                b.mcu.uc.mem_write(b.io, piece)
                rc, cyc = b.run("agent_install_feed", len(piece))
                total += cyc
                off += len(piece)
            if rc == MORE:
                rc, cyc = b.run("agent_install_end")
                total += cyc
            self.cycles["install"] = total
            if rc is None:
                return Outcome("cut", cut=True)
            return Outcome(reason_name(rc))

    # the streaming API piece by piece (an endless sender, a transport that stops half way)
    def begin(self, now: datetime | int, cut_at: int = 0) -> str:
        t = _seconds(now)
        with self._session(cut_at) as b:
            boot = self._powered_on(b, t)
            if boot is not None and boot.cut:
                return "cut"
            b.set_now(t)
            rc, _ = b.run("agent_install_begin")
            return "cut" if rc is None else reason_name(rc)

    def feed(self, data: bytes) -> str:
        with self._session(0) as b:
            if b.owner is not self:
                return reason_name(34)  # bad_call: the agent's RAM is gone (a reset since begin)
            rc: int | None = MORE
            for off in range(0, len(data), b.lay.io_bytes):
                piece = data[off : off + b.lay.io_bytes]
                b.mcu.uc.mem_write(b.io, piece)
                rc, _ = b.run("agent_install_feed", len(piece))
                if rc != MORE:
                    break
            return "cut" if rc is None else reason_name(rc)

    def end(self) -> str:
        with self._session(0) as b:
            if b.owner is not self:
                return reason_name(34)
            rc, _ = b.run("agent_install_end")
            return "cut" if rc is None else reason_name(rc)

    def _statement(self, symbol: str, data: bytes, now: int, cut_at: int) -> Outcome:
        with self._session(cut_at) as b:
            boot = self._powered_on(b, now)
            if boot is not None and boot.cut:
                return Outcome("cut", cut=True)
            if len(data) > self.layout.meta_bytes:
                return Outcome("too_large")
            b.set_now(now)
            b.mcu.uc.mem_write(b.work, bytes(data))
            rc, _ = b.run(symbol, len(data))
            return Outcome("cut", cut=True) if rc is None else Outcome(reason_name(rc))

    def install_revocations(self, signed: bytes, *, now: datetime | int = 0, cut_at: int = 0) -> Outcome:
        return self._statement("agent_revocations", signed, _seconds(now), cut_at)

    def apply_recovery(self, signed: bytes, *, now: datetime | int = 0, cut_at: int = 0) -> Outcome:
        return self._statement("agent_recovery", signed, _seconds(now), cut_at)

    # -- attestation and metering ------------------------------------------------------------------
    def evidence(self, nonce: bytes, *, now: datetime | int = 0) -> bytes:
        """The C agent's signed evidence report for `nonce` (agent_evidence on the emulated core)."""
        with self._session(0) as b:
            boot = self._powered_on(b, _seconds(now))
            if boot is not None and boot.cut:
                raise DeviceError(f"{self.profile.name}: power cut during boot")
            b.set_now(_seconds(now))
            b.mcu.uc.mem_write(b.io, bytes(nonce))
            rc, self.last_cycles = b.run("agent_evidence", len(nonce))
            if rc != 0:
                raise DeviceError(f"{self.profile.name}: evidence refused: {reason_name(rc or 0)}")
            n = b.mailbox()["evidence_bytes"]
            return bytes(b.mcu.uc.mem_read(b.io, n))

    def sign_telemetry(self, payload: bytes) -> bytes:
        """A telemetry window signed by the C agent with the device key (agent_sign)."""
        with self._session(0) as b:
            boot = self._powered_on(b, 0)
            if boot is not None and boot.cut:
                raise DeviceError(f"{self.profile.name}: power cut during boot")
            if len(payload) > self.layout.meta_bytes or len(payload) + 256 > self.layout.io_bytes:
                raise DeviceError(f"{self.profile.name}: telemetry window of {len(payload)} bytes too large to sign")
            b.mcu.uc.mem_write(b.work, bytes(payload))
            rc, _ = b.run("agent_sign", len(payload))
            if rc != 0:
                raise DeviceError(f"{self.profile.name}: signing refused: {reason_name(rc or 0)}")
            return bytes(b.mcu.uc.mem_read(b.io, b.mailbox()["evidence_bytes"]))

    def install_quota(self, signed: bytes, *, now: datetime | int = 0, cut_at: int = 0) -> Outcome:
        return self._statement("agent_quota", signed, _seconds(now), cut_at)

    def metered_infer(self, x: bytes, *, now: datetime | int = 0, cut_at: int = 0) -> tuple[str, bytes | None]:
        """One metered inference (agent_infer: counter first, then the model): (reason, output)."""
        with self._session(cut_at) as b:
            if self._powered_on(b, _seconds(now)) is not None and b.owner is not self:
                return "cut", None
            box = b.mcu.read_mailbox()
            runnable = box["status"] == FC_OK and box["input_bytes"] == len(x)
            b.set_now(_seconds(now))
            if runnable:
                b.mcu.uc.mem_write(box["input_addr"], bytes(x))
            rc, _ = b.run("agent_infer")
            if rc is None:
                return "cut", None
            if rc != 0:
                return reason_name(rc), None
            after = b.mcu.read_mailbox()
            if not runnable or b.mailbox()["infer_status"] != 0:
                return "no_model", None
            return "ok", bytes(b.mcu.uc.mem_read(after["output_addr"], after["output_bytes"]))

    def meter(self) -> dict[str, int]:
        box = self.raw_state()
        return {k: box[k] for k in ("inference_count", "quota_limit", "quota_expires", "quota_serial")}

    def raw_state(self) -> dict[str, int]:
        """The state log as the agent reads it (agent_status: the agent's init only, which zeroes
        its own context and reads flash, so no reset, which would settle a pending slot)."""
        with self._session(0) as b:
            rc, _ = b.run("agent_status")
            box = b.mailbox()
            box["status_rc"] = -1 if rc is None else rc
            return box

    def boot_count(self) -> int:
        """Boots counted in the state log (the evidence's bootcount claim)."""
        return int(self.raw_state()["st_boot_count"])

    def state(self) -> DeviceState:
        box = self.raw_state()

        def slot(v: int) -> int | None:
            return None if v == NO_SLOT else v

        ev = box["st_last_event"]
        return DeviceState(
            active=slot(box["st_active"]),
            pending=slot(box["st_pending"]),
            boot_attempts=box["st_boot_attempts"],
            last_event=EVENTS[ev] if ev < len(EVENTS) else str(ev),
            last_reason=reason_name(box["st_last_reason"]),
            floor=box["st_floor"],
            revocation_version=box["st_revo_version"],
            revoked_count=box["st_revo_count"],
            recovery_counter=box["st_recovery_counter"],
            active_sequence=box["st_active_sequence"],
        )

    def counters(self) -> dict[str, int]:
        """Flash operations and programmed bytes so far; `prov_touches`: erases or programs the
        controller refused because they aimed at the locked provisioning page (or the firmware);
        `violations` (programs over unerased bytes) are refused by the controller as well."""
        return {
            "ops": self.ops,
            "bytes_written": self.bytes_written,
            "violations": 0,
            "prov_touches": self.prov_touches,
        }

    def clone(self) -> EmuDevice:
        """A device with a copy of this flash, powered off."""
        return EmuDevice(self.profile, bytearray(self.flash), board=self.board, chunk=self.chunk)

    def fork(self) -> EmuDevice:
        """A copy that also takes over the part's RAM when this device is the one powered on (the
        same flash and the same RAM: exactly where this device stands, without another reset)."""
        twin = self.clone()
        with self.board.lock:
            if self.board.owner is self:
                self.board.owner = twin
        return twin

    def infer(self, x: bytes) -> bytes:
        """One inference on the model the last boot loaded (app_infer on the emulated core)."""
        with self._session(0) as b:
            if self._powered_on(b, 0) is not None and b.owner is not self:
                raise DeviceError(f"{self.profile.name}: power cut during boot")
            box = b.mcu.read_mailbox()
            if box["status"] != FC_OK or not box["input_bytes"]:
                raise DeviceError(f"{self.profile.name}: no verified model is running")
            out, _ = b.mcu.infer(x)
            return out

    # -- the flash as a file ------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        from tinymlops.util.io import write_bytes

        write_bytes(path, bytes(self.flash))

    @classmethod
    def load(cls, profile: DeviceProfile, path: Path, **kw) -> EmuDevice:
        return cls(profile, bytearray(Path(path).read_bytes()), **kw)
