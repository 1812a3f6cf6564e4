"""The C update agent: crypto cost, code size per core, install speed on the host simulation.

  crypto      one Ed25519 verify, SHA-256 and AES-256-GCM per KB, measured host-natively through
              the C library (ctypes overhead amortised over 1 MB buffers / 200 verifies) and
              converted to host cycles at the host's nominal clock.
  emulated    per core, the firmware (agent + runtime, -O2) on the unicorn emulator with the
              core's cycle model (flash wait states priced): one Ed25519 verify (600-byte
              message), SHA-256 and AES-256-GCM cycles per KB (difference of a 4 KB and a 1 KB
              run, so key schedules and finalisation drop out); the agent's flash and static RAM
              (firmware with the agent minus the runtime-only firmware) and its stack (measured
              high-water mark over boot + install + confirming boot); the M0+ LoRa node's RAM
              budget does not hold the agent, so it is linked with its reserved RAM (said so).
  nrf52840    the default model (cnn_small, 8x8x1 → 10, as the pipeline builds it) compiled for
              the runtime, bundled with 8 golden vectors, installed through the agent on the
              emulated nRF52840 (4 KB chunks through the mailbox) and confirmed by a reboot:
              emulated cycles → ms at 64 MHz, and the emulator's wall time and speed.
  code size   the agent + its crypto, cross-compiled with the ziglang clang (-Os, gc-sections,
              from an entry referencing the public API only) for each core; flash = .text +
              .rodata, static RAM = .data + .bss (the agent has none of its own), plus the
              caller-owned context (sizeof(tmla_agent) on that target) and the work buffer.
  install     the default-sized install (a 64 KB model image, encrypted) on the host
              simulation, and the flash writes/erases it takes.
  power cuts  1,000 randomized trials on the emulated nRF52840 (tests/reliability/emulated_trials.py:
              cuts at random erases/programs of an encrypted install and of the boots after it,
              bit flips in the inactive slot, torn and garbage state-log records, bundles damaged
              in transit): devices bricked, devices running an image that did not verify, wall
              time. `python bench/agent.py power-cuts` runs only this part (and logs it).
  anchor      MCUboot's own tracker (MCUB-68, "Add Ed25519 signature support"): the reference
              Ed25519 implementation "takes 21ms to verify a signature (on FRDM K64F)", a
              Cortex-M4 at 120 MHz: ~2.5 M cycles; tweetnacl ~760 ms.
Prints a table (≤ 100 columns) and logs the figures to MLflow (experiment `tinymlops-bench`).
"""

from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tinymlops  # noqa: F401,E402

MCUBOOT_M4_ED25519_MS, MCUBOOT_M4_MHZ = 21.0, 120  # MCUB-68, FRDM-K64F (Cortex-M4F @ 120 MHz)


def host_hz() -> float:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) * 1e6
    except OSError:
        pass
    return 2.0e9


def best(fn, rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def elf_sizes(path: Path) -> dict[str, int]:
    """flash (.text + .rodata + the keep-table of the entry), static RAM (.data + .bss), and
    sizeof(tmla_agent) on that target from the probe section. A minimal ELF32 LE reader."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 1, "ELF32 expected"
    (shoff,) = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
    sections = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_off = sections[shstrndx][4]

    def name(off: int, base: int) -> str:
        end = data.index(b"\0", base + off)
        return data[base + off : end].decode()

    flash = ram = context = 0
    for sh in sections:
        n, typ, flags, offset, size = name(sh[0], strtab_off), sh[1], sh[2], sh[4], sh[5]
        if n == ".tmla_probe":  # the size probe: sizeof(tmla_agent) on this target
            (context,) = struct.unpack_from("<I", data, offset)
        elif not flags & 0x2:  # not SHF_ALLOC
            continue
        elif flags & 0x1 or typ == 8:  # SHF_WRITE or NOBITS
            ram += size
        else:
            flash += size
    return {"flash": flash - 4 * bool(context), "static_ram": ram, "context": context}


POWER_CUT_TRIALS = int(os.environ.get("TINYMLOPS_BENCH_AGENT_TRIALS", "1000"))


def power_cut_figures(trials: int = POWER_CUT_TRIALS) -> dict[str, float]:
    """The randomized power-cut/corruption trials on the emulated nRF52840, printed."""
    from tests.reliability.emulated_trials import make_rig, run_trials
    from tests.unit.device.agent import rig

    rig.use(rig.EMULATED)
    try:
        started = time.perf_counter()
        r = make_rig()
        tally, kinds = run_trials(r, trials, seed=20260601 + trials)
        wall = time.perf_counter() - started
    finally:
        rig.use("host")
    print(f"power cuts on the emulated {rig.EMULATED} (C agent firmware, Cortex-M4F): {tally['trials']:.0f} "
          f"randomized trials in {tally['seconds']:.1f} s ({wall:.1f} s with the setup)")  # fmt: skip
    print(f"  bricked {tally['bricked']:.0f}, running an unverified image {tally['unverified']:.0f}; running "
          f"new {tally['running_new']:.0f} / old {tally['running_old']:.0f} / none {tally['running_none']:.0f}; "
          f"{tally['distinct_states_checked']:.0f} distinct flash states checked")  # fmt: skip
    print("  trials per kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    return {f"power_cut_{k}": float(v) for k, v in tally.items()} | {"power_cut_wall_s": wall}


def log(figures: dict[str, float], run_name: str = "agent") -> None:
    from tinymlops.settings import Environment, TrackingConfig
    from tinymlops.tracking import Tracker

    os.environ.pop("TINYMLOPS_HOME", None)
    env = Environment.from_env(REPO)
    tracker = Tracker.start(env, TrackingConfig(experiment="tinymlops-bench"), run_name, {"bench": "agent"})
    tracker.metrics(figures)
    tracker.finish(True)
    print(f"logged to MLflow run {tracker.run_id} ({env.tracking_uri})")


def main() -> None:
    if sys.argv[1:] == ["power-cuts"]:
        log(power_cut_figures(), "agent-power-cuts")
        return
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from tinymlops.device.agent import AgentLibrary
    from tinymlops.device.agent.build import CORES, cross_elf

    lib = AgentLibrary.load()
    hz = host_hz()
    key = Ed25519PrivateKey.generate()
    pk = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    msg = os.urandom(600)  # about a manifest's Sig_structure
    sig = key.sign(msg)
    n_verify = 200
    t_verify = best(lambda: [lib.ed25519_verify(sig, pk, msg) for _ in range(n_verify)], 3) / n_verify
    mb = os.urandom(1 << 20)
    t_sha = best(lambda: lib.sha256(mb)) / 1024
    k, iv = os.urandom(32), os.urandom(12)
    t_gcm = best(lambda: lib.gcm_encrypt(k, iv, b"", mb)) / 1024

    figures: dict[str, float] = {
        "host_ed25519_verify_us": t_verify * 1e6,
        "host_ed25519_verify_cycles": t_verify * hz,
        "host_sha256_cycles_per_kb": t_sha * hz,
        "host_aes_gcm_cycles_per_kb": t_gcm * hz,
        "host_clock_mhz": hz / 1e6,
        "mcuboot_m4_ed25519_verify_cycles": MCUBOOT_M4_ED25519_MS * 1e-3 * MCUBOOT_M4_MHZ * 1e6,
    }

    sizes = {}
    for core in CORES:
        sizes[core] = elf_sizes(cross_elf(core))
        for what, value in sizes[core].items():
            figures[f"{core}_{what}_bytes"] = value

    # an install on the host simulation: 64 KB image, encrypted, in 4 KB chunks
    from tests.unit.device.agent import rig
    from tinymlops.bundle import generate_kek
    from tinymlops.device.agent.images import toy_model

    kek = generate_kek()
    image = toy_model(1024, 63, seed=5)  # 64,528 bytes
    data = rig.bundle(8, payload=image, kek=kek)
    dev = rig.device(kek=kek, slot_bytes=128 * 1024)
    template = bytes(dev.flash)

    def install() -> None:
        dev.flash[:] = template
        assert dev.install(data, rig.NOW).reason == "pending"

    t_install = best(install)
    counters = dev.counters()
    figures.update({
        "host_install_64kb_encrypted_ms": t_install * 1e3,
        "install_64kb_flash_writes": counters["writes"] / 5,
        "install_64kb_flash_erases": counters["erases"] / 5,
    })  # fmt: skip

    emu = emulated_figures(key, pk, msg, sig)
    for core, row in emu["cores"].items():
        for what, value in row.items():
            if isinstance(value, int | float):
                figures[f"emu_{core}_{what}"] = value
    figures.update({f"emu_nrf52840_{k}": v for k, v in emu["install"].items() if isinstance(v, int | float)})
    m4 = emu["cores"]["cortex-m4f"]["ed25519_cycles"]

    w = 100
    print("=" * w)
    print("C update agent (firmware/agent) on the emulated cores: firmware = agent + runtime, -O2")
    print("-" * w)
    print(f"{'core (part)':26}{'Ed25519':>11}{'SHA-256/KB':>11}{'GCM/KB':>10}{'flash B':>10}{'RAM B':>9}"
          f"{'stack B':>9}{'emu Mcyc/s':>12}")  # fmt: skip
    for core, r in emu["cores"].items():
        print(f"{core + ' (' + r['part'] + ')':26}{r['ed25519_cycles']:11,.0f}{r['sha256_cycles_per_kb']:11,.0f}"
              f"{r['gcm_cycles_per_kb']:10,.0f}{r['agent_flash']:10,}{r['agent_ram']:9,}{r['stack']:9,}"
              f"{r['emu_mcycles_per_s']:12.1f}")  # fmt: skip
    print(f"{'MCUboot ref. Ed25519 (MCUB-68)':26}{figures['mcuboot_m4_ed25519_verify_cycles']:11,.0f}"
          f"  Cortex-M4 FRDM-K64F: 21 ms at 120 MHz; ours on the M4F: {m4 / 1e6:.2f} M cycles = "
          f"{m4 / figures['mcuboot_m4_ed25519_verify_cycles']:.2f}x")  # fmt: skip
    for note in emu["notes"]:
        print(note)
    i = emu["install"]
    print("-" * w)
    print(f"default model ({i['image_bytes']:,} B image, {i['bundle_bytes']:,} B bundle) on the emulated nRF52840:")
    print(f"  install {i['install_cycles'] / 1e6:.2f} M cycles = {i['install_ms_at_64mhz']:.1f} ms at 64 MHz; "
          f"confirming boot {i['boot_cycles'] / 1e6:.2f} M cycles = {i['boot_ms_at_64mhz']:.1f} ms "
          f"({i['selftest_vectors']} golden vectors)")  # fmt: skip
    print(f"  emulator wall time: install {i['install_wall_s']:.2f} s + boot {i['boot_wall_s']:.2f} s "
          f"({i['emu_mcycles_per_s']:.0f} M emulated cycles/s); {i['flash_ops']} flash operations")  # fmt: skip
    print("-" * w)
    print("host-native (x86-64, -O2), for reference")
    print(f"{'primitive':34}{'host µs':>12}{'host cycles':>16}")
    print(f"{'Ed25519 verify (600-byte message)':34}{t_verify * 1e6:12.1f}{t_verify * hz:16,.0f}")
    print(f"{'SHA-256, per KB':34}{t_sha * 1e6:12.2f}{t_sha * hz:16,.0f}")
    print(f"{'AES-256-GCM, per KB':34}{t_gcm * 1e6:12.2f}{t_gcm * hz:16,.0f}")
    print(f"{'MCUboot ref. Ed25519, Cortex-M4':34}{MCUBOOT_M4_ED25519_MS * 1e3:12.0f}"
          f"{figures['mcuboot_m4_ed25519_verify_cycles']:16,.0f}{'(MCUB-68)':>18}")  # fmt: skip
    print(f"host clock {hz / 1e6:.0f} MHz (x86-64, -O2): host cycles are not Cortex-M cycles")
    print("-" * w)
    print(f"{'core (-Os, gc-sections)':34}{'flash B':>12}{'static RAM B':>16}{'context B':>18}")
    for core, s in sizes.items():
        print(f"{core:34}{s['flash']:12,}{s['static_ram']:16,}{s['context']:18,}")
    print("plus the caller's work buffer (= slot manifest area, e.g. 16 KB); emulated stack above")
    print("-" * w)
    writes, erases = figures["install_64kb_flash_writes"], figures["install_64kb_flash_erases"]
    print(
        f"install 64 KB encrypted model, host simulation: {t_install * 1e3:.1f} ms, "
        f"{writes:.0f} writes, {erases:.0f} erases"
    )
    print("-" * w)
    figures.update(power_cut_figures())
    print("=" * w)
    log(figures)


PARTS = {"cortex-m0plus": "stm32l072-lora", "cortex-m4f": "nrf52840", "cortex-m7": "stm32h7a3",
         "cortex-m33": "stm32u585", "rv32imc": "esp32c3"}  # fmt: skip


def emulated_figures(key, pk: bytes, msg: bytes, sig: bytes) -> dict:
    from tinymlops.device.agent.emulated import Board, EmuDevice
    from tinymlops.device.mcu.build import build_firmware
    from tinymlops.device.mcu.memory import memory_map
    from tinymlops.device.profiles import get_profile, load_profiles

    profiles = load_profiles(REPO)
    cores, notes = {}, []
    for core, name in PARTS.items():
        profile = get_profile(profiles, name)
        ram = "budget"
        try:
            board = Board(profile, ram, count_flash_reads=True)
        except Exception as exc:  # noqa: BLE001
            ram = "all"
            notes.append(f"{name}: the agent does not fit its RAM budget ({str(exc).split(': ')[-1][:60]}); "
                         "measured with the reserved RAM")  # fmt: skip
            board = Board(profile, ram, count_flash_reads=True)
        mcu, work = board.mcu, board.work
        mcu.uc.mem_write(work, sig + pk + msg)
        rc, ed = board.run("agent_x_ed25519", work, work + 64, work + 96, len(msg))
        assert rc == 0, f"{core}: Ed25519 verify failed on the emulated core"
        mcu.uc.mem_write(work, os.urandom(4096 + 64))

        def per_kb(symbol: str, *tail: int, board=board) -> float:
            _, one = board.run(symbol, *(a if a != -1 else 1024 for a in tail))
            _, four = board.run(symbol, *(a if a != -1 else 4096 for a in tail))
            return (four - one) / 3

        sha = per_kb("agent_x_sha256", work, -1, board.io)
        gcm = per_kb("agent_x_gcm", board.io, work, -1, board.io + 64)
        base_fw = build_firmware(memory_map(profile))
        # stack: a boot, an install and the confirming boot of a small model
        mcu.stack_hwm = 0
        try:
            stack = _install_stack(EmuDevice(profile, board=board))
        except Exception as exc:  # noqa: BLE001
            stack = -1
            notes.append(f"{name}: stack not measured ({type(exc).__name__}: {str(exc)[:60]})")
        start = __import__("time").perf_counter()
        _, cyc = board.run("agent_x_ed25519", work, work + 64, work + 96, len(msg))
        wall = __import__("time").perf_counter() - start
        cores[core] = {
            "part": name, "ram_mode": ram, "ed25519_cycles": ed, "sha256_cycles_per_kb": sha,
            "gcm_cycles_per_kb": gcm, "agent_flash": mcu.fw.flash_bytes - base_fw.flash_bytes,
            "agent_ram": mcu.fw.static_ram - base_fw.static_ram, "stack": stack,
            "emu_mcycles_per_s": cyc / wall / 1e6 if wall else 0.0,
        }  # fmt: skip
    return {"cores": cores, "notes": notes, "install": default_install()}


def _install_stack(dev) -> int:
    from tests.unit.device.agent import rig

    rig.use(rig.EMULATED)
    try:
        dev.provision(rig.trust().public_key, rig.DEVICE_ID, rig.CLASS_ID)
        dev.boot(rig.NOW)
        assert dev.install(rig.bundle(7), rig.NOW).reason == "pending"
        assert dev.boot(rig.NOW).event == "confirmed"
    finally:
        rig.use("host")
    return dev.board.mcu.stack_hwm


def default_install() -> dict:
    import tempfile
    from datetime import timedelta

    import numpy as np

    from tests.unit.device.agent import rig
    from tinymlops.bundle import ManifestDraft, SelfTest, build_bundle
    from tinymlops.device.agent.emulated import Board, EmuDevice
    from tinymlops.device.image import compile_model
    from tinymlops.device.profiles import get_profile, load_profiles
    from tinymlops.device.tflm import TFLMRuntime
    from tinymlops.ml.model.architectures import build
    from tinymlops.ml.quantize import to_int8_tflite

    rng = np.random.default_rng(0)
    model = to_int8_tflite(build("cnn_small", (8, 8, 1), 10), rng.uniform(0, 16, (32, 8, 8, 1)))
    image = compile_model(model).data
    rt = TFLMRuntime(model, 64 * 1024)
    xs = rng.integers(-128, 128, size=(8, 1, 8, 8, 1), dtype=np.int8)
    ys = np.stack([np.asarray(rt.invoke(x)) for x in xs]).astype(np.int8)
    profile = get_profile(load_profiles(REPO), "nrf52840")
    draft = ManifestDraft(
        model_name="cnn_small", model_version="1", sequence=1, vendor=profile.vendor,
        device_class=profile.device_class, arena_bytes=16384, ops=["CONV_2D"],
        selftest=SelfTest.from_arrays(xs, ys, tolerance=1), lifetime=timedelta(days=30),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "default.bundle"
        build_bundle(image, draft, rig.signer(), path, now=rig.NOW)
        data = path.read_bytes()
    dev = EmuDevice(profile, board=Board(profile, count_flash_reads=True))
    dev.provision(rig.trust().public_key, rig.DEVICE_ID, profile.class_id)
    dev.boot(rig.NOW)
    ops0 = dev.ops
    t0 = time.perf_counter()
    out = dev.install(data, rig.NOW)
    t1 = time.perf_counter()
    booted = dev.boot(rig.NOW)
    t2 = time.perf_counter()
    assert out.reason == "pending" and booted.event == "confirmed", (out, booted)
    install, boot = dev.cycles["install"], dev.cycles["boot"]
    return {
        "image_bytes": len(image), "bundle_bytes": len(data), "install_cycles": install,
        "install_ms_at_64mhz": install / 64e3, "boot_cycles": boot, "boot_ms_at_64mhz": boot / 64e3,
        "install_wall_s": t1 - t0, "boot_wall_s": t2 - t1, "selftest_vectors": dev.last_selftest[0],
        "emu_mcycles_per_s": (install + boot) / (t2 - t0) / 1e6, "flash_ops": dev.ops - ops0,
    }  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
