"""The emulated MCU: the profile's firmware ELF on unicorn, in exactly the part's flash and RAM.

- Flash is mapped read/execute, RAM read/write/execute, the emulator's peripheral block (devices.py)
  as MMIO; nothing else. Any other access stops the run with a MemoryFault naming the address (a stack
  overflow runs below the RAM base, so it is reported as one).
- Executed blocks are counted by a native unicorn hook (native/prof.c, built for the host with the
  ziglang wheel): no Python runs per block. Each block is decoded once with capstone and priced by
  the core's cycle model (cycles.py).
- Flash data reads are priced by line misses of the part's flash cache/buffer (wait states). A
  memory-read hook sends every guest load down unicorn's slow path (~20x slower), so it is only
  installed for the first `flash_exact_runs` runs after an image is installed (boot + the first
  inferences): there every miss is counted exactly and attributed natively to the block that read.
  Later runs are charged each executed block's measured misses per execution. The kernels read
  weights, biases and multipliers in an order fixed by the model, not by the input, so this is
  exact for them; input-dependent table lookups (SOFTMAX's exp, LOGISTIC/TANH tables) are charged
  their calibration average.
- No unicorn timeout (its timer thread wakes every 2 us and competes for the CPU): a watchdog timer
  stops a run that does not return. RAM is not executable: a jump into RAM faults.
- One unicorn instance serves many inferences: boot once, then per inference write the input into
  the arena, set PC/SP/LR and run app_infer until it returns into tmr_halt.
"""

from __future__ import annotations

import ctypes
import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from capstone import CS_ARCH_ARM, CS_ARCH_RISCV, CS_MODE_MCLASS, CS_MODE_RISCV32, CS_MODE_RISCVC, CS_MODE_THUMB, Cs
from elftools.elf.elffile import ELFFile
from unicorn import (
    UC_ARCH_ARM,
    UC_ARCH_RISCV,
    UC_HOOK_BLOCK,
    UC_HOOK_MEM_FETCH_PROT,
    UC_HOOK_MEM_FETCH_UNMAPPED,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_WRITE_PROT,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_MODE_MCLASS,
    UC_MODE_RISCV32,
    UC_MODE_THUMB,
    UC_PROT_EXEC,
    UC_PROT_READ,
    UC_PROT_WRITE,
    Uc,
    UcError,
)
from unicorn import arm_const as A
from unicorn import riscv_const as R

from tinymlops.device.mcu import cycles as cy
from tinymlops.device.mcu.build import Firmware, build_firmware, default_cache
from tinymlops.device.mcu.devices import FlashController
from tinymlops.device.mcu.memory import MemoryMap, memory_map
from tinymlops.device.profiles import DeviceProfile
from tinymlops.errors import FirmwareRunError, MemoryFault, TinyMLOpsError

_UC_CPU = {
    "cortex-m0plus": A.UC_CPU_ARM_CORTEX_M0,
    "cortex-m4f": A.UC_CPU_ARM_CORTEX_M4,
    "cortex-m7": A.UC_CPU_ARM_CORTEX_M7,
    "cortex-m33": A.UC_CPU_ARM_CORTEX_M33,
    "rv32imc": R.UC_CPU_RISCV32_SIFIVE_E31,
}
STACK_PAINT = 0xA5
MAILBOX_FIELDS = ("magic", "status", "slot_addr", "arena_addr", "arena_bytes", "arena_need", "input_addr",
                  "input_bytes", "output_addr", "output_bytes", "ops_run", "invocations", "profile", "command",
                  "arg0", "arg1")  # fmt: skip
TMR_STATUS = {0: "ok", 1: "bad magic", 2: "unsupported image version", 3: "offset out of bounds",
              4: "arena too small", 5: "unknown op", 6: "bad op parameters"}  # fmt: skip


# ---- the native profiling hook ----------------------------------------------------------------
class _Prof(ctypes.Structure):
    _fields_ = [
        ("base", ctypes.c_uint64),
        ("n", ctypes.c_uint64),
        ("count", ctypes.POINTER(ctypes.c_uint64)),
        ("size", ctypes.POINTER(ctypes.c_uint32)),
        ("taken", ctypes.POINTER(ctypes.c_uint64)),
        ("prev", ctypes.c_uint64),
        ("prev_end", ctypes.c_uint64),
        ("outside", ctypes.c_uint64),
        ("flash_reads", ctypes.c_uint64),
        ("flash_misses", ctypes.c_uint64),
        ("line_shift", ctypes.c_uint64),
        ("n_lines", ctypes.c_uint64),
        ("last_line", ctypes.c_uint64),
        ("tags", ctypes.c_uint64 * 1024),
        ("miss", ctypes.POINTER(ctypes.c_uint64)),
    ]


_NATIVE: ctypes.CDLL | None = None
_NATIVE_LOCK = threading.Lock()


def _native() -> ctypes.CDLL:
    global _NATIVE
    with _NATIVE_LOCK:
        if _NATIVE is None:
            src = Path(__file__).with_name("native") / "prof.c"
            digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
            so = default_cache() / f"prof-{digest}.so"
            if not so.exists():
                so.parent.mkdir(parents=True, exist_ok=True)
                tmp = so.with_suffix(f".{threading.get_ident()}.tmp")
                cmd = [sys.executable, "-m", "ziglang", "cc", "-shared", "-fPIC", "-O2", "-nostdlib", str(src), "-o",
                       str(tmp)]  # fmt: skip
                subprocess.run(cmd, check=True, capture_output=True)
                tmp.rename(so)
            _NATIVE = ctypes.CDLL(str(so))
    return _NATIVE


class _Watchdog:
    """Stops runs that outlive their deadline. One shared thread looks twice a second; arming and
    disarming are a dict write (a timer thread per run, or a notify, cost more than small runs)."""

    _armed: dict[int, tuple[float, Callable[[], None]]] = {}
    _thread: threading.Thread | None = None
    _start_lock = threading.Lock()

    def arm(self, seconds: float, stop: Callable[[], None]) -> None:
        _Watchdog._armed[id(self)] = (time.monotonic() + seconds, stop)
        if _Watchdog._thread is None:
            with _Watchdog._start_lock:
                if _Watchdog._thread is None:
                    _Watchdog._thread = threading.Thread(target=_Watchdog._loop, name="mcu-watchdog", daemon=True)
                    _Watchdog._thread.start()

    def disarm(self) -> None:
        _Watchdog._armed.pop(id(self), None)

    @staticmethod
    def _loop() -> None:
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            for key, (deadline, stop) in list(_Watchdog._armed.items()):
                if now > deadline and _Watchdog._armed.pop(key, None) is not None:
                    stop()


@dataclass
class _Block:
    cost: float
    refill: float
    n_insn: int
    classes: np.ndarray  # counts per cy.CLASSES


@dataclass
class RunStats:
    cycles: float
    instructions: int
    by_class: dict[str, int]
    flash_wait_cycles: float
    wall_s: float
    exact_flash: bool = False  # flash reads counted by the read hook (slow path), not from the rates
    cpu_s: float = 0.0  # CPU time of the emulating thread (robust to a busy machine, unlike wall_s)


def _uc_error(exc: UcError) -> str:
    return str(exc)


@dataclass
class Mcu:
    """One emulated part running its firmware. Not thread-safe: use one per thread (or the lock)."""

    profile: DeviceProfile
    stack_bytes: int | None = None
    cache_dir: Path | None = None
    timeout_s: float = 120.0
    count_flash_reads: bool = True  # price flash data wait states (a native read hook on flash)
    flash_exact_runs: int = 2  # runs after boot whose flash reads are hooked (then: per-block rates)
    memory: MemoryMap | None = None  # another map and firmware for this part (the update agent's build)
    firmware: Firmware | None = None
    mm: MemoryMap = field(init=False)
    fw: Firmware = field(init=False)
    lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.profile.mcu is None:
            raise FirmwareRunError(
                f"{self.profile.name}: no memory map (mcu:) in configs/devices.yaml; it cannot be emulated"
            )
        self.spec = self.profile.mcu
        self.mm = self.memory or memory_map(self.profile, self.stack_bytes)
        self.fw = self.firmware or build_firmware(self.mm, self.cache_dir)
        self.timing = cy.TIMINGS[self.mm.core]
        self.arm = self.mm.arch == "arm"
        if self.arm:
            self.cs = Cs(CS_ARCH_ARM, CS_MODE_THUMB | CS_MODE_MCLASS)
        else:
            self.cs = Cs(CS_ARCH_RISCV, CS_MODE_RISCV32 | CS_MODE_RISCVC)
        mm = self.mm
        self.uc = self._new_uc()
        self.flash = FlashController(
            mm, lambda a, d: self.uc.mem_write(a, d), lambda a, n: bytes(self.uc.mem_read(a, n))
        )
        self.uc.mem_write(mm.flash_base, b"\xff" * mm.flash_bytes)
        self._load_elf()
        self.log: list[str] = []
        self.marks: list[tuple[int, float]] = []
        self.fault: MemoryFault | None = None
        self._fault_hooks()
        self._profiling_hooks()
        self.image_installed: bytes | None = None
        self.booted = False
        self.stack_hwm = 0
        self._watchdog = _Watchdog()
        self.calibrate_flash()

    # -- setup --------------------------------------------------------------------------------
    def _new_uc(self) -> Uc:
        """A unicorn with exactly the part's flash, RAM and peripheral page mapped (no hooks yet)."""
        mm = self.mm
        if self.arm:
            uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS, cpu=_UC_CPU[mm.core])  # type: ignore[call-arg]  # stubs predate `cpu`
        else:
            uc = Uc(UC_ARCH_RISCV, UC_MODE_RISCV32, cpu=_UC_CPU[mm.core])  # type: ignore[call-arg]  # stubs predate `cpu`
        uc.mem_map(mm.flash_base, mm.flash_bytes, UC_PROT_READ | UC_PROT_EXEC)
        uc.mem_map(mm.ram_base, mm.ram_bytes, UC_PROT_READ | UC_PROT_WRITE)
        uc.mmio_map(mm.mmio_base, 0x1000, self._mmio_read, None, self._mmio_write, None)
        return uc

    def _load_elf(self) -> None:
        with self.fw.elf.open("rb") as f:
            elf = ELFFile(f)
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_LOAD" and seg["p_filesz"] > 0:
                    self.uc.mem_write(seg["p_paddr"], seg.data())
        sym = self.fw.symbols
        self.halt = sym["tmr_halt"] & ~1
        self.entry_infer = sym["app_infer"]
        self.entry_reset = sym["Reset_Handler"]
        self.mailbox = sym["tmr_mailbox"]
        self.stack_bottom = sym["__stack_bottom"]
        self.stack_top = sym["__stack_top"]

    def _fault_hooks(self) -> None:
        def unmapped(uc, access, address, size, value, user):
            self._record_fault(address, "unmapped", access)
            return False

        def flash_write(uc, access, address, size, value, user):
            self._record_fault(address, "flash-write", access)
            return False

        def fetch_ram(uc, access, address, size, value, user):
            self._record_fault(address, "exec-ram", access)
            return False

        self.uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED | UC_HOOK_MEM_FETCH_UNMAPPED, unmapped)
        self.uc.hook_add(UC_HOOK_MEM_WRITE_PROT, flash_write)
        self.uc.hook_add(UC_HOOK_MEM_FETCH_PROT, fetch_ram)

    def _record_fault(self, address: int, kind: str, access: int) -> None:
        pc = self._pc()
        mm = self.mm
        if mm.ram_base - 4096 <= address < mm.ram_base:
            what = f"stack overflow: write at 0x{address:08X}, below RAM base 0x{mm.ram_base:08X}"
            kind = "stack-overflow"
        elif kind == "flash-write":
            what = f"direct write to flash at 0x{address:08X} (only the flash controller may write flash)"
        elif kind == "exec-ram":
            what = f"instruction fetch from RAM at 0x{address:08X} (RAM is not executable)"
        else:
            what = (
                f"access outside flash [0x{mm.flash_base:08X}, 0x{mm.flash_end:08X}) and RAM "
                f"[0x{mm.ram_base:08X}, 0x{mm.ram_end:08X}) at 0x{address:08X}"
            )
        self.fault = MemoryFault(f"{self.profile.name}: fault at pc 0x{pc:08X}: {what}", address, pc, kind)

    def _profiling_hooks(self) -> None:
        lib = _native()
        lo, hi = self.fw.text_range
        n = (hi - lo + 1) // 2 + 1
        self._count = np.zeros(n, np.uint64)
        self._size = np.zeros(n, np.uint32)
        self._taken = np.zeros(n, np.uint64)
        self._miss = np.zeros(n, np.uint64)
        p = _Prof()
        p.base, p.n = lo, n
        p.count = self._count.ctypes.data_as(ctypes.POINTER(ctypes.c_uint64))
        p.size = self._size.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32))
        p.taken = self._taken.ctypes.data_as(ctypes.POINTER(ctypes.c_uint64))
        p.miss = self._miss.ctypes.data_as(ctypes.POINTER(ctypes.c_uint64))
        m = self.spec
        p.line_shift = max(m.flash_line_bytes, 1).bit_length() - 1
        p.n_lines = min(m.flash_cache_lines, 1024)
        self._prof = p
        self._lib = lib
        self._hooks = [self._add_native_hook(UC_HOOK_BLOCK, lib.tmr_block_hook, 1, 0)]
        self._read_hook: ctypes.c_size_t | None = None
        self._exact_left = 0  # runs left with the exact flash-read hook
        self._cal_count = np.zeros(n, np.float64)  # block executions during exact runs
        self._cal_miss = np.zeros(n, np.float64)  # flash line misses they caused
        self._miss_rate = np.zeros(n, np.float64)  # misses per execution, used after calibration
        self._blocks: dict[int, _Block] = {}
        n_cls = len(cy.CLASSES)
        self._cost = np.zeros(n, np.float64)
        self._refill = np.zeros(n, np.float64)
        self._ninsn = np.zeros(n, np.float64)
        self._cls = np.zeros((n, n_cls), np.float64)
        self._decoded = np.zeros(n, bool)

    def _add_native_hook(self, htype: int, fn: Any, begin: int, end: int) -> ctypes.c_size_t:
        from unicorn.unicorn_py3.unicorn import uclib  # the binding's loaded libunicorn

        h = ctypes.c_size_t()
        err = uclib.uc_hook_add(
            self.uc._uch, ctypes.byref(h), htype, ctypes.cast(fn, ctypes.c_void_p),
            ctypes.cast(ctypes.pointer(self._prof), ctypes.c_void_p), ctypes.c_uint64(begin), ctypes.c_uint64(end),
        )  # fmt: skip
        if err:
            raise TinyMLOpsError(f"unicorn refused the profiling hook (error {err})")
        return h

    @property
    def prices_flash_reads(self) -> bool:
        return self.count_flash_reads and self.spec.flash_wait_states > 0

    def calibrate_flash(self) -> None:
        """Count flash reads exactly (hook on) for the next runs, forgetting earlier rates."""
        self._cal_count[:] = 0
        self._cal_miss[:] = 0
        self._miss_rate[:] = 0
        self._prof.last_line = 0
        ctypes.memset(ctypes.addressof(self._prof.tags), 0, ctypes.sizeof(self._prof.tags))
        if not self.prices_flash_reads:
            return
        self._exact_left = 1 + self.flash_exact_runs  # boot and the first inferences
        if self._read_hook is None:
            self._read_hook = self._add_native_hook(
                UC_HOOK_MEM_READ, self._lib.tmr_read_hook, self.mm.flash_base, self.mm.flash_end - 1
            )

    def _end_calibration(self) -> None:
        """Rates from the exact runs; then continue on a fresh unicorn without the read hook (once
        a memory-read hook existed, deleting it does not bring unicorn's fast path back)."""
        seen = self._cal_count > 0
        self._miss_rate[seen] = self._cal_miss[seen] / self._cal_count[seen]
        if self._read_hook is None:
            return
        mm = self.mm
        flash = bytes(self.uc.mem_read(mm.flash_base, mm.flash_bytes))
        ram = bytes(self.uc.mem_read(mm.ram_base, mm.ram_bytes))
        old, self.uc = self.uc, self._new_uc()
        if self.flash.on_cut == old.emu_stop:  # a power cut stops the core: the new one
            self.flash.on_cut = self.uc.emu_stop
        self.uc.mem_write(mm.flash_base, flash)
        self.uc.mem_write(mm.ram_base, ram)
        self._fault_hooks()
        self._hooks = [self._add_native_hook(UC_HOOK_BLOCK, self._lib.tmr_block_hook, 1, 0)]
        self._read_hook = None

    # -- registers, mmio ----------------------------------------------------------------------
    def _pc(self) -> int:
        return self.uc.reg_read(A.UC_ARM_REG_PC if self.arm else R.UC_RISCV_REG_PC)

    def _mmio_read(self, uc, offset, size, user):
        if offset == 0x04:
            return int(self._cycles_now()) & 0xFFFFFFFF
        if offset >= 0x100:
            return self.flash.reg_read(offset)
        return 0

    def _mmio_write(self, uc, offset, size, value, user):
        if offset == 0x00:
            self.log.append(chr(value & 0xFF))
        elif offset == 0x08:
            self.marks.append((value, self._cycles_now()))
        elif offset >= 0x100:
            self.flash.reg_write(offset, value)

    # -- the cycle model over the native counters ---------------------------------------------
    def _decode(self, idx: np.ndarray) -> None:
        lo = self.fw.text_range[0]
        classify = cy.classify_arm if self.arm else cy.classify_riscv
        for i in idx:
            addr, size = lo + 2 * int(i), int(self._size[i])
            code = bytes(self.uc.mem_read(addr, size)) if size else b""
            insns = [classify(ins.mnemonic, ins.op_str) for ins in self.cs.disasm(code, addr)]
            counts = np.zeros(len(cy.CLASSES))
            for cls, _ in insns:
                counts[cy.CLASSES.index(cls)] += 1
            self._cost[i] = cy.block_cost(self.timing, insns)
            self._refill[i] = self.timing.refill + (0 if self.spec.icache else self.spec.flash_wait_states)
            self._ninsn[i] = len(insns)
            self._cls[i] = counts
            self._decoded[i] = True

    def _snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        exact = self._read_hook is not None
        return self._count.copy(), self._taken.copy(), self._miss.copy() if exact else None

    def _cost_since(self, snap, calibrate: bool = False) -> tuple[float, int, np.ndarray, float]:
        c0, t0, m0 = snap
        dc = self._count - c0
        dt = self._taken - t0
        idx = np.flatnonzero(dc)
        new = idx[~self._decoded[idx]]
        if len(new):
            self._decode(new)
        dcf = dc[idx].astype(np.float64)
        if m0 is not None:  # exact: the hook counted every line miss
            dm = (self._miss[idx] - m0[idx]).astype(np.float64)
            misses = float(dm.sum())
            if calibrate:
                self._cal_count[idx] += dcf
                self._cal_miss[idx] += dm
        else:  # calibrated: each block's misses per execution
            misses = float(dcf @ self._miss_rate[idx])
        wait = misses * self.spec.flash_wait_states
        cycles = float(dcf @ self._cost[idx] + dt[idx].astype(np.float64) @ self._refill[idx]) + wait
        insns = int(dcf @ self._ninsn[idx])
        by_class = dcf @ self._cls[idx]
        return cycles, insns, by_class, float(wait)

    def _cycles_now(self) -> float:
        snap = getattr(self, "_run_snap", None)
        return self._cost_since(snap)[0] if snap is not None else 0.0

    def _emulate(self, begin: int) -> None:
        """emu_start under a watchdog (unicorn's own timeout polls from a thread every 2 us)."""
        self._watchdog.arm(self.timeout_s, self.uc.emu_stop)
        try:
            self.uc.emu_start(begin, self.halt)
        finally:
            self._watchdog.disarm()

    # -- running --------------------------------------------------------------------------------
    def _set_call(self, entry: int) -> None:
        if self.arm:
            self.uc.reg_write(A.UC_ARM_REG_SP, self.stack_top)
            self.uc.reg_write(A.UC_ARM_REG_LR, self.halt | 1)
        else:
            self.uc.reg_write(R.UC_RISCV_REG_SP, self.stack_top)
            self.uc.reg_write(R.UC_RISCV_REG_RA, self.halt)

    def _run(self, entry: int) -> RunStats:
        if self._read_hook is not None and self._exact_left <= 0:
            self._end_calibration()
        self.fault = None
        self._prof.prev = 0
        self._set_call(entry)
        self.uc.mem_write(self.stack_bottom, bytes([STACK_PAINT]) * (self.stack_top - self.stack_bottom))
        self._run_snap = self._snapshot()
        start, cpu0 = time.perf_counter(), time.thread_time()
        begin = entry | 1 if self.arm else entry
        try:
            self._emulate(begin)
        except UcError as exc:
            if self.fault is None:
                self.fault = MemoryFault(f"{self.profile.name}: emulation stopped at pc 0x{self._pc():08X}: "
                                   f"{_uc_error(exc)}", self._pc(), self._pc(), "cpu")  # fmt: skip
        wall, cpu = time.perf_counter() - start, time.thread_time() - cpu0
        exact = self._run_snap[2] is not None
        cycles, insns, by_class, wait = self._cost_since(self._run_snap, calibrate=exact)
        del self._run_snap
        if exact:
            self._exact_left -= 1
        self._measure_stack()
        if self.fault is not None:
            raise self.fault
        if self._pc() != self.halt:
            raise FirmwareRunError(f"{self.profile.name}: firmware did not return within {self.timeout_s:.0f} s "
                                f"(pc 0x{self._pc():08X})")  # fmt: skip
        classes = dict(zip(cy.CLASSES, (int(v) for v in by_class), strict=True))
        return RunStats(cycles, insns, classes, wait, wall, exact, cpu)

    def _measure_stack(self) -> None:
        region = bytes(self.uc.mem_read(self.stack_bottom, self.stack_top - self.stack_bottom))
        untouched = len(region) - len(region.lstrip(bytes([STACK_PAINT])))
        self.stack_hwm = max(self.stack_hwm, len(region) - untouched)

    def call(self, symbol: str, *args: int) -> tuple[int, RunStats]:
        """Call a firmware function by name with up to four integer arguments; returns its result."""
        regs = [A.UC_ARM_REG_R0, A.UC_ARM_REG_R1, A.UC_ARM_REG_R2, A.UC_ARM_REG_R3] if self.arm else [
            R.UC_RISCV_REG_A0, R.UC_RISCV_REG_A1, R.UC_RISCV_REG_A2, R.UC_RISCV_REG_A3]  # fmt: skip
        for reg, value in zip(regs, args, strict=False):
            self.uc.reg_write(reg, value & 0xFFFFFFFF)
        stats = self._run(self.fw.symbols[symbol])
        return self.uc.reg_read(regs[0]), stats

    def read_mailbox(self) -> dict[str, int]:
        raw = bytes(self.uc.mem_read(self.mailbox, 4 * len(MAILBOX_FIELDS)))
        return dict(zip(MAILBOX_FIELDS, np.frombuffer(raw, "<u4").tolist(), strict=True))

    def install(self, image: bytes, slot: str = "a") -> None:
        """Program an image into a model slot through the flash controller (a probe's view)."""
        addr = self.mm.slot_a if slot == "a" else self.mm.slot_b
        if len(image) > self.mm.slot_bytes:
            raise FirmwareRunError(f"{self.profile.name}: image {len(image)} B > slot {self.mm.slot_bytes} B")
        rc = self.flash.program_image(addr, image)
        if rc:
            raise FirmwareRunError(f"{self.profile.name}: flash controller refused the image (status {rc})")
        self.image_installed = bytes(image)
        self.booted = False
        self.calibrate_flash()

    def boot(self) -> dict[str, int]:
        """Reset: the startup code, app_init, tmr_load of slot A."""
        self._run(self.entry_reset)
        box = self.read_mailbox()
        self.booted = True
        if box["status"] != 0:
            raise FirmwareRunError(
                f"{self.profile.name}: runtime refused the image: {TMR_STATUS.get(box['status'], box['status'])} "
                f"(arena need {box['arena_need']} B, available {box['arena_bytes']} B)"
            )
        return box

    def infer(self, x: bytes) -> tuple[bytes, RunStats]:
        box = self.read_mailbox()
        if len(x) != box["input_bytes"]:
            raise FirmwareRunError(f"{self.profile.name}: input is {len(x)} B, the model takes {box['input_bytes']} B")
        self.uc.mem_write(box["input_addr"], bytes(x))
        stats = self._run(self.entry_infer)
        box = self.read_mailbox()
        if box["status"] != 0:
            raise FirmwareRunError(f"{self.profile.name}: inference failed: {TMR_STATUS.get(box['status'])}")
        return bytes(self.uc.mem_read(box["output_addr"], box["output_bytes"])), stats
