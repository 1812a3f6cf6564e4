"""Memory-mapped devices of the emulated MCU: log port, cycle counter, profiling mark, and the
flash controller of the model slots and state page.

The flash controller enforces NOR-flash rules: page erase (to 0xFF) and word programming, only
over erased bytes, only outside the firmware region. Every erase and program goes through
`FlashController.hooks` first: a hook may raise FlashPowerCut to cut power at that operation (the
update agent's tests inject resets there), or just observe.

A cut stops the part: the operation is torn (an erase leaves half the page erased, a program lands
its first half, rounded down to words: nothing for a single word), `on_cut` is called (the
emulator stops the core there) and every later operation is refused until `power_on()`.
`CMD 3` programs a row (up to 256 bytes, one page, from RAM at `SRC`, `LEN` bytes) as one
operation, like the row programming of STM32 parts. `lock()` write-protects a range (the
provisioning page after the factory wrote it); attempts are counted in `protected_attempts`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tinymlops.device.mcu.memory import MemoryMap
from tinymlops.errors import FlashPowerCut

FC_OK, FC_NOT_ERASED, FC_RANGE, FC_PROTECTED, FC_POWER_CUT = 0, 1, 2, 3, 4


@dataclass
class FlashOp:
    kind: str  # "erase" | "program"
    addr: int
    data: bytes
    index: int  # how many flash operations came before this one


FlashHook = Callable[[FlashOp], None]


@dataclass
class FlashController:
    mm: MemoryMap
    write: Callable[[int, bytes], None]  # raw write into the emulator's flash
    read: Callable[[int, int], bytes]
    hooks: list[FlashHook] = field(default_factory=list)
    ops: int = 0
    powered: bool = True
    addr: int = 0
    data: int = 0
    src: int = 0
    length: int = 0
    status: int = FC_OK
    on_cut: Callable[[], None] | None = None
    locked: list[tuple[int, int]] = field(default_factory=list)  # [lo, hi) ranges refused as protected
    protected_attempts: int = 0

    def power_on(self) -> None:
        self.powered = True

    def lock(self, lo: int, hi: int) -> None:
        self.locked.append((lo, hi))

    def _check(self, addr: int, n: int) -> int:
        lo = self.mm.provisioning
        if addr < self.mm.flash_base or addr + n > self.mm.flash_end:
            return FC_RANGE
        if addr < lo or any(a < addr + n and addr < b for a, b in self.locked):
            self.protected_attempts += 1
            return FC_PROTECTED
        return FC_OK

    def _notify(self, kind: str, addr: int, data: bytes) -> bool:
        op = FlashOp(kind, addr, data, self.ops)
        self.ops += 1
        try:
            for hook in self.hooks:
                hook(op)
        except FlashPowerCut:
            self.powered = False
            if self.on_cut is not None:
                self.on_cut()
            return False
        return True

    def erase(self, page_addr: int) -> int:
        if not self.powered:
            return FC_POWER_CUT
        page = self.mm.page_bytes
        if page_addr % page:
            return FC_RANGE
        rc = self._check(page_addr, page)
        if rc:
            return rc
        if not self._notify("erase", page_addr, b""):
            half = page // 2  # power cut mid-erase: part of the page erased
            self.write(page_addr, b"\xff" * half)
            return FC_POWER_CUT
        self.write(page_addr, b"\xff" * page)
        return FC_OK

    def program(self, addr: int, data: bytes) -> int:
        if not self.powered:
            return FC_POWER_CUT
        if addr % 4 or len(data) % 4:
            return FC_RANGE
        rc = self._check(addr, len(data))
        if rc:
            return rc
        if self.read(addr, len(data)) != b"\xff" * len(data):
            return FC_NOT_ERASED
        if not self._notify("program", addr, bytes(data)):
            torn = len(data) // 2 // 4 * 4  # the first half of a row lands; a single word: nothing
            if torn:
                self.write(addr, bytes(data[:torn]))
            return FC_POWER_CUT
        self.write(addr, bytes(data))
        return FC_OK

    def program_image(self, addr: int, data: bytes) -> int:
        """Host-side programming (a debugger probe): erase the pages, then program word by word."""
        page = self.mm.page_bytes
        padded = bytes(data) + b"\xff" * ((-len(data)) % 4)
        for p in range(addr - addr % page, addr + len(padded), page):
            rc = self.erase(p)
            if rc:
                return rc
        chunk = 4096
        for off in range(0, len(padded), chunk):
            rc = self.program(addr + off, padded[off : off + chunk])
            if rc:
                return rc
        return FC_OK

    # register interface (HAL_FC_*)
    def reg_write(self, off: int, value: int) -> None:
        if off == 0x104:
            self.addr = value
        elif off == 0x108:
            self.data = value
        elif off == 0x110:
            self.src = value
        elif off == 0x114:
            self.length = value
        elif off == 0x100:
            if value == 1:
                self.status = self.erase(self.addr)
            elif value == 2:
                self.status = self.program(self.addr, self.data.to_bytes(4, "little"))
                if self.status == FC_OK:
                    self.addr += 4
            elif value == 3:
                self.status = self._program_row()
            else:
                self.status = FC_RANGE

    def _program_row(self) -> int:
        n, page = self.length, self.mm.page_bytes
        if n == 0 or n > 256 or n % 4 or self.addr // page != (self.addr + n - 1) // page:
            return FC_RANGE
        try:
            data = self.read(self.src, n)
        except Exception:  # noqa: BLE001  (the source is outside mapped memory: a bus error)
            return FC_RANGE
        return self.program(self.addr, data)

    def reg_read(self, off: int) -> int:
        if off == 0x10C:
            return self.status
        if off == 0x104:
            return self.addr
        return 0
