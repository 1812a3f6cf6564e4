"""Build the C agent with the `ziglang` wheel's clang: a host-native shared library for the tests
and the ctypes driver, and freestanding objects/ELFs per core for the code-size figures.

Outputs go to the cache (default ~/.cache/tinymlops/agent/build/<key>/), keyed by a digest of
every source, the pins and the flags, so a rebuild happens only when something changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tinymlops.device.agent.sources import PINNED, SourceError, cache_lock, default_cache, fetch

REPO = Path(__file__).resolve().parents[3]
FIRMWARE = REPO / "firmware"
AGENT_SOURCES = ("agent/src/cbor.c", "agent/src/verify.c", "agent/src/agent.c", "agent/src/attest.c")
GLUE_SOURCES = (
    "crypto/glue/sha256.c",
    "crypto/glue/sha512.c",
    "crypto/glue/aes.c",
    "crypto/glue/ghash.c",
    "crypto/glue/gcm.c",
    "crypto/glue/keywrap.c",
    "crypto/glue/ed25519.c",
)
HOST_SOURCES = ("agent/host/sim.c",)
CFLAGS = ("-std=c11", "-Wall", "-Wextra", "-Wno-unused-function", "-Wno-unused-parameter", "-Wno-sign-compare")

# core → clang target flags (freestanding: no OS, no libc)
CORES: dict[str, tuple[str, ...]] = {
    "cortex-m0plus": ("-target", "thumb-freestanding-eabi", "-mcpu=cortex_m0plus"),
    "cortex-m4": ("-target", "thumb-freestanding-eabi", "-mcpu=cortex_m4"),
    "cortex-m7": ("-target", "thumb-freestanding-eabi", "-mcpu=cortex_m7"),
    "cortex-m33": ("-target", "thumb-freestanding-eabi", "-mcpu=cortex_m33"),
    "rv32imc": ("-target", "riscv32-freestanding-none", "-mcpu=generic_rv32+m+c"),
}
PUBLIC_API = (
    "tmla_init", "tmla_install_begin", "tmla_install_feed", "tmla_install_end", "tmla_boot",
    "tmla_install_revocations", "tmla_apply_recovery", "tmla_reason_name",
    "tmla_evidence", "tmla_meter_consume", "tmla_install_quota",
)  # fmt: skip


class BuildError(SourceError):
    """The C agent did not compile."""


def _zig_cc() -> list[str]:
    return [sys.executable, "-m", "ziglang", "cc"]


def _key(*parts: object) -> str:
    h = hashlib.sha256()
    for rel in (*AGENT_SOURCES, *GLUE_SOURCES, *HOST_SOURCES, "agent/src/libc.c"):
        h.update((FIRMWARE / rel).read_bytes())
    for d in ("agent/include/tmla", "agent/src", "crypto/include", "crypto/shim"):
        for f in sorted((FIRMWARE / d).glob("*.h")):
            h.update(f.read_bytes())
    for s in PINNED:
        h.update(s.sha256.encode())
    h.update(repr(parts).encode())
    return h.hexdigest()[:16]


def _includes(roots: dict[str, Path], freestanding: bool) -> list[str]:
    inc = []
    if freestanding:
        inc += ["-isystem", str(FIRMWARE / "crypto" / "shim")]
    inc += [
        "-I", str(FIRMWARE / "agent" / "include"),
        "-I", str(FIRMWARE / "crypto" / "include"),
        "-I", str(roots["pycryptodome"] / "src"),
        "-I", str(roots["pymonocypher"]),
    ]  # fmt: skip
    return inc


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(cmd[:6])} …: {done.stderr.strip()[-2000:]}")


def _all_sources(roots: dict[str, Path]) -> list[str]:
    srcs = [str(FIRMWARE / s) for s in (*AGENT_SOURCES, *GLUE_SOURCES)]
    return [*srcs, str(roots["pymonocypher"] / "monocypher.c")]


def host_library(cache: Path | None = None, opt: str = "-O2") -> Path:
    """libtmla_host.so: the agent, its crypto and the simulation HAL (host/sim.c), for ctypes."""
    cache = cache or default_cache()
    out_dir = cache / "build" / _key("host", opt, CFLAGS)
    lib = out_dir / "libtmla_host.so"
    if lib.is_file():
        return lib
    roots = fetch(cache)
    with cache_lock(cache):
        if lib.is_file():  # another process built it while this one waited
            return lib
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, suffix=".so", delete=False) as tmp:
            pass
        try:
            _run([
                *_zig_cc(), "-shared", "-fPIC", opt, *CFLAGS, "-D_DEFAULT_SOURCE",
                *_includes(roots, freestanding=False),
                *_all_sources(roots), *(str(FIRMWARE / s) for s in HOST_SOURCES), "-o", tmp.name,
            ])  # fmt: skip
            os.replace(tmp.name, lib)
        finally:
            Path(tmp.name).unlink(missing_ok=True)
    return lib


def cross_elf(core: str, cache: Path | None = None, opt: str = "-Os") -> Path:
    """A freestanding ELF for `core` holding the agent and its crypto, linked with
    --gc-sections from an entry that references the public API only (what firmware would keep)."""
    cache = cache or default_cache()
    flags = CORES[core]
    out_dir = cache / "build" / _key("cross", core, opt, flags, "entry-v3")
    elf = out_dir / f"tmla-{core}.elf"
    if elf.is_file():
        return elf
    roots = fetch(cache)
    with cache_lock(cache):
        if not elf.is_file():  # another process may have built it while this one waited
            _link_cross(core, flags, opt, roots, out_dir, elf)
    return elf


def _link_cross(core: str, flags: tuple[str, ...], opt: str, roots: dict[str, Path], out_dir: Path, elf: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    entry = out_dir / "entry.c"
    refs = ", ".join(f"(void *){name}" for name in PUBLIC_API)
    entry.write_text(
        '#include "tmla/agent.h"\n'
        '__attribute__((section(".tmla_probe"))) const unsigned tmla_sizeof_agent = sizeof(tmla_agent);\n'
        f"void *const tmla_keep[] = {{(void *)&tmla_sizeof_agent, {refs}}};\n"
        "void _start(void) {\n"
        "    for (unsigned i = 0; i < sizeof tmla_keep / sizeof tmla_keep[0]; i++)\n"
        "        *(void *volatile *)0x20000000 = tmla_keep[i];\n"
        "    for (;;) {}\n"
        "}\n"
    )
    _run([
        *_zig_cc(), *flags, opt, "-ffreestanding", "-ffunction-sections", "-fdata-sections",
        *CFLAGS, *_includes(roots, freestanding=True), *_all_sources(roots),
        str(FIRMWARE / "agent" / "src" / "libc.c"), str(entry),
        "-Wl,--gc-sections", "-Wl,-e,_start", "-o", str(elf),
    ])  # fmt: skip
