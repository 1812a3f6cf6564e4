"""Cross-compile the firmware (firmware/) for a profile's core with the `ziglang` wheel's clang.

The build is cached by the hash of every source, the generated memory map and the flags, so a
second build of the same firmware is a file lookup. The ELF's sections give its real flash use
and static RAM.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from tinymlops.device.mcu.memory import CORES, MemoryMap
from tinymlops.errors import FirmwareBuildError

FIRMWARE = Path(__file__).resolve().parents[3] / "firmware"
SOURCES = [
    "runtime/tmr.c",
    "runtime/tmr_ops.c",
    "runtime/kernels_conv.c",
    "runtime/kernels_misc.c",
    "app/app.c",
    "app/startup.c",
]
NO_BUILTIN = ["app/libc_min.c"]
CFLAGS = ["-std=c11", "-O2", "-ffreestanding", "-ffunction-sections", "-fdata-sections", "-ffp-contract=off",
          "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-g0"]  # fmt: skip
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Firmware:
    elf: Path
    core: str
    key: str
    flash_bytes: int  # text + rodata + data initialisers + vectors
    static_ram: int  # .data + .bss (the stack region is counted separately)
    symbols: dict[str, int]
    text_range: tuple[int, int]


def default_cache() -> Path:
    return Path(tempfile.gettempdir()) / "tinymlops-firmware"


def _zig() -> list[str]:
    return [sys.executable, "-m", "ziglang"]


def _digest(mm: MemoryMap, flags: list[str]) -> str:
    h = hashlib.sha256()
    for path in sorted(FIRMWARE.rglob("*")):
        if path.is_file() and path.suffix in (".c", ".h", ".S") and "agent" not in path.parts:
            h.update(str(path.relative_to(FIRMWARE)).encode())
            h.update(path.read_bytes())
    h.update(mm.header().encode())
    h.update(mm.linker_script().encode())
    h.update(" ".join(flags).encode())
    return h.hexdigest()[:20]


_BUILT: dict[tuple, Firmware] = {}


def build_firmware(mm: MemoryMap, cache_dir: Path | None = None, extra_cflags: tuple[str, ...] = ()) -> Firmware:
    """The firmware ELF for this memory map (built once per process and cached on disk)."""
    memo = (mm, cache_dir, tuple(extra_cflags))
    if memo in _BUILT:
        return _BUILT[memo]
    fw = _build(mm, cache_dir, extra_cflags)
    _BUILT[memo] = fw
    return fw


def _build(mm: MemoryMap, cache_dir: Path | None, extra_cflags: tuple[str, ...]) -> Firmware:
    core = CORES[mm.core]
    flags = ["-target", core.zig_target, f"-mcpu={core.zig_cpu}", *CFLAGS, *extra_cflags]
    if core.arch == "riscv":
        flags.append("-mno-relax")
    key = f"{mm.core}-{_digest(mm, flags)}"
    out_dir = (cache_dir or default_cache()) / key
    elf = out_dir / "firmware.elf"
    with _LOCK:
        if not elf.exists():
            _compile(mm, flags, out_dir)
    return _inspect(elf, mm.core, key)


def _compile(mm: MemoryMap, flags: list[str], out_dir: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="fw-build-", dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        (work / "hal_map.h").write_text(mm.header())
        (work / "link.ld").write_text(mm.linker_script())
        inc = [f"-I{work}", f"-I{FIRMWARE / 'runtime'}", f"-I{FIRMWARE / 'hal'}", f"-I{FIRMWARE / 'app'}"]
        objs = []
        for i, src in enumerate(SOURCES + NO_BUILTIN):
            obj = work / f"{i}.o"
            extra = ["-fno-builtin"] if src in NO_BUILTIN else []
            _run([*_zig(), "cc", *flags, *extra, *inc, "-c", str(FIRMWARE / src), "-o", str(obj)])
            objs.append(str(obj))
        elf = work / "firmware.elf"
        _run([*_zig(), "cc", *flags, "-T", str(work / "link.ld"), "-Wl,--gc-sections", "-o", str(elf), *objs])
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp_final = work / "final"
        tmp_final.mkdir()
        shutil.copy2(elf, tmp_final / "firmware.elf")
        (tmp_final / "link.ld").write_text(mm.linker_script())
        (tmp_final / "hal_map.h").write_text(mm.header())
        try:
            tmp_final.rename(out_dir)
        except OSError:
            if not (out_dir / "firmware.elf").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        first = (proc.stderr or proc.stdout).strip().splitlines()
        detail = next((line for line in first if "error" in line), first[0] if first else "")
        raise FirmwareBuildError(f"firmware build failed: {detail}")


def _inspect(elf_path: Path, core: str, key: str) -> Firmware:
    with elf_path.open("rb") as f:
        elf = ELFFile(f)
        flash = ram = 0
        text_lo, text_hi = 1 << 64, 0
        for sec in elf.iter_sections():
            name, size, flags = sec.name, sec["sh_size"], sec["sh_flags"]
            if not flags & 0x2 or size == 0:  # SHF_ALLOC
                continue
            if name in (".vectors", ".text", ".rodata"):
                flash += size
            elif name == ".data":
                flash += size
                ram += size
            elif name == ".bss":
                ram += size
            if name in (".vectors", ".text"):
                text_lo = min(text_lo, sec["sh_addr"])
                text_hi = max(text_hi, sec["sh_addr"] + size)
        symtab = elf.get_section_by_name(".symtab")
        if not isinstance(symtab, SymbolTableSection):
            raise FirmwareBuildError(f"{elf_path}: the firmware ELF has no symbol table")
        symbols = {s.name: int(s["st_value"]) for s in symtab.iter_symbols() if s.name}
    return Firmware(elf_path, core, key, flash, ram, symbols, (text_lo, text_hi))
