"""The API the HIL calls: fit checks and a batch of inferences of a model image on the emulated MCU.

from tinymlops.device.mcu import run_model, fits, emulated
report = fits(profile, image)          # FitReport: ok + the numbers (refuse when not ok)
run = run_model(profile, image, xq)    # McuRun: outputs, cycles, latency, energy, memory, speed
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from tinymlops.device.image import describe
from tinymlops.device.mcu.build import build_firmware
from tinymlops.device.mcu.emulator import Mcu
from tinymlops.device.mcu.memory import CORES, memory_map
from tinymlops.device.profiles import DeviceProfile
from tinymlops.errors import DoesNotFit, FirmwareBuildError, ModelError


class FitReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    profile: str
    ok: bool
    problems: list[str]
    firmware_flash_bytes: int
    firmware_region_bytes: int
    image_bytes: int
    slot_bytes: int
    static_ram_bytes: int
    arena_bytes: int
    stack_bytes: int
    ram_available_bytes: int

    def raise_if_not_ok(self) -> None:
        if not self.ok:
            raise DoesNotFit(f"{self.profile}: " + "; ".join(self.problems))


class McuRun(BaseModel):
    """A batch of inferences on one emulated part. Figures are per inference (mean over the batch)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    profile: str
    core: str
    clock_hz: int
    outputs: np.ndarray  # int8 (or float32 for a DEQUANTIZE output), one row per input
    cycles: list[float]  # per inference
    cycles_mean: float
    latency_ms: float
    energy_uj: float
    instructions: float  # per inference
    by_class: dict[str, float]  # per inference
    flash_wait_cycles: float  # per inference
    instructions_per_s: float  # emulation speed (over the inferences after the flash calibration, if any)
    instructions_per_cpu_s: float  # the same per CPU second of the emulating thread (0: no such runs)
    wall_s: float
    firmware_flash_bytes: int
    image_bytes: int
    static_ram_bytes: int
    arena_bytes: int
    stack_bytes: int  # measured high-water mark
    stack_region_bytes: int

    def figures(self) -> dict[str, float]:
        """Flat numbers, for MLflow."""
        return {
            "cycles": self.cycles_mean,
            "latency_ms": self.latency_ms,
            "energy_uj": self.energy_uj,
            "instructions": self.instructions,
            "instructions_per_s": self.instructions_per_s,
            "instructions_per_cpu_s": self.instructions_per_cpu_s,
            "firmware_flash_bytes": self.firmware_flash_bytes,
            "image_bytes": self.image_bytes,
            "static_ram_bytes": self.static_ram_bytes,
            "arena_bytes": self.arena_bytes,
            "stack_bytes": self.stack_bytes,
        }


def emulated(profile: DeviceProfile) -> bool:
    """True when the profile's core runs on the emulator (else: host reference, see emulation_note)."""
    return profile.mcu is not None and profile.core in CORES


def fits(profile: DeviceProfile, image: bytes, stack_bytes: int | None = None) -> FitReport:
    mm = memory_map(profile, stack_bytes)
    head = describe(image)
    arena = head["arena_bytes"]
    try:
        fw = build_firmware(mm)
    except FirmwareBuildError as exc:  # e.g. static data + stack do not even link into the RAM
        return FitReport(
            profile=profile.name, ok=False, problems=[f"firmware does not link into the part: {exc}"],
            firmware_flash_bytes=0, firmware_region_bytes=mm.firmware_bytes, image_bytes=len(image),
            slot_bytes=mm.slot_bytes, static_ram_bytes=0, arena_bytes=arena, stack_bytes=mm.stack_bytes,
            ram_available_bytes=mm.app_ram_bytes,
        )  # fmt: skip
    problems = []
    if fw.flash_bytes > mm.firmware_bytes:
        problems.append(f"firmware {fw.flash_bytes} B > firmware flash {mm.firmware_bytes} B")
    if len(image) > mm.slot_bytes:
        problems.append(f"model image {len(image)} B > model slot {mm.slot_bytes} B")
    need = fw.static_ram + arena + mm.stack_bytes
    if need > mm.app_ram_bytes:
        problems.append(
            f"RAM: static {fw.static_ram} B + arena {arena} B + stack {mm.stack_bytes} B = {need} B "
            f"> {mm.app_ram_bytes} B available ({mm.ram_bytes} B RAM - {mm.ram_bytes - mm.app_ram_bytes} B reserved)"
        )
    return FitReport(
        profile=profile.name, ok=not problems, problems=problems, firmware_flash_bytes=fw.flash_bytes,
        firmware_region_bytes=mm.firmware_bytes, image_bytes=len(image), slot_bytes=mm.slot_bytes,
        static_ram_bytes=fw.static_ram, arena_bytes=arena, stack_bytes=mm.stack_bytes,
        ram_available_bytes=mm.app_ram_bytes,
    )  # fmt: skip


_POOL: dict[tuple[str, int | None], Mcu] = {}
_POOL_LOCK = threading.Lock()


def mcu_for(profile: DeviceProfile, stack_bytes: int | None = None, cache_dir: Path | None = None) -> Mcu:
    """A (cached) emulated part for the profile; one per profile and stack size per process."""
    key = (profile.model_dump_json(), stack_bytes)
    with _POOL_LOCK:
        mcu = _POOL.get(key)
        if mcu is None:
            mcu = _POOL[key] = Mcu(profile, stack_bytes=stack_bytes, cache_dir=cache_dir)
    return mcu


def run_model(
    profile: DeviceProfile, image: bytes, inputs: np.ndarray, *, stack_bytes: int | None = None, check_fit: bool = True
) -> McuRun:
    """Install `image` in slot A, boot, run every row of `inputs` (int8, or float32 for a model with a
    float input) and return outputs and figures. Raises DoesNotFit (with the numbers) first when
    the image cannot fit; MemoryFault when the firmware touches memory outside the part."""
    if check_fit:
        fits(profile, image, stack_bytes).raise_if_not_ok()
    mcu = mcu_for(profile, stack_bytes)
    with mcu.lock:
        if mcu.image_installed != bytes(image) or not mcu.booted:
            mcu.install(image)
            mcu.boot()
        box = mcu.read_mailbox()
        xs = np.ascontiguousarray(inputs)
        rows = xs.reshape(len(xs), -1) if xs.ndim > 1 else xs.reshape(1, -1)
        outs, cycles, insns, waits, wall = [], [], 0, 0.0, 0.0
        fast_insns, fast_wall, fast_cpu = 0, 0.0, 0.0
        by_class: dict[str, float] = {}
        mcu.stack_hwm = 0
        for row in rows:
            out, st = mcu.infer(row.tobytes())
            outs.append(out)
            cycles.append(st.cycles)
            insns += st.instructions
            waits += st.flash_wait_cycles
            wall += st.wall_s
            if not st.exact_flash:
                fast_insns += st.instructions
                fast_wall += st.wall_s
                fast_cpu += st.cpu_s
            for k, v in st.by_class.items():
                by_class[k] = by_class.get(k, 0) + v
        head = describe(image)
    n = max(len(rows), 1)
    speed = fast_insns / fast_wall if fast_wall else (insns / wall if wall else 0.0)
    cpu_speed = fast_insns / fast_cpu if fast_cpu else 0.0
    out_dtype = np.float32 if box["output_bytes"] and _out_is_float(image) else np.int8
    outputs = np.stack([np.frombuffer(o, out_dtype) for o in outs]) if outs else np.zeros((0,), np.int8)
    mean = float(np.mean(cycles)) if cycles else 0.0
    return McuRun(
        profile=profile.name, core=profile.core, clock_hz=profile.clock_hz, outputs=outputs, cycles=cycles,
        cycles_mean=mean, latency_ms=mean / profile.clock_hz * 1e3, energy_uj=mean * profile.energy_pj_per_cycle / 1e6,
        instructions=insns / n, by_class={k: v / n for k, v in by_class.items()}, flash_wait_cycles=waits / n,
        instructions_per_s=speed, instructions_per_cpu_s=cpu_speed, wall_s=wall,
        firmware_flash_bytes=mcu.fw.flash_bytes,
        image_bytes=len(image), static_ram_bytes=mcu.fw.static_ram, arena_bytes=head["arena_bytes"],
        stack_bytes=mcu.stack_hwm, stack_region_bytes=mcu.mm.stack_bytes,
    )  # fmt: skip


def is_image(payload: bytes) -> bool:
    """True when a bundle payload is a firmware model image (magic TMR1), not a .tflite."""
    from tinymlops.device.image import format as F

    return len(payload) >= 4 and int.from_bytes(bytes(payload[:4]), "little") == F.MAGIC


def image_ops(image: bytes) -> list[str]:
    """The op names of a model image's op stream (sorted, unique)."""
    import struct

    from tinymlops.device.image import format as F

    head = describe(image)
    off, end, names = head["ops_off"], head["ops_off"] + head["ops_bytes"], set()
    for _ in range(head["n_ops"]):
        if off + 4 > end or end > len(image):
            raise ModelError("model image: op stream runs past its section")
        code, n = struct.unpack_from("<HH", image, off)
        names.add(F.OP_NAMES.get(code, f"op {code}"))
        off += 4 + 4 * n
    return sorted(names)


def image_fit_problems(profile: DeviceProfile, image: bytes) -> list[tuple[str, str]]:
    """(reason, detail) for each way a model image does not fit the profile's part: flash and slot,
    RAM (static + arena + stack), and ops its firmware does not register."""
    report = fits(profile, image)
    problems = [("flash" if "flash" in p or "slot" in p else "arena", p) for p in report.problems]
    missing = sorted(set(image_ops(image)) - set(profile.ops))
    if missing:
        problems.append(("ops", f"op {', '.join(missing)} not registered by the {profile.name} firmware"))
    return problems


_SELFTESTS: dict[tuple[str, str, str], str | None] = {}


def image_selftest(profile: DeviceProfile, image: bytes, vectors) -> str | None:  # noqa: ANN001  (GoldenVectors)
    """Run golden vectors on the emulated part; None when every output is within the tolerance.
    Memoised by (part, image, vectors): the emulator is deterministic."""
    import hashlib

    if vectors is None:
        key = (profile.model_dump_json(), hashlib.sha256(image).hexdigest(), "")
    else:
        key = (profile.model_dump_json(), hashlib.sha256(image).hexdigest(), vectors.model_dump_json())
    if key in _SELFTESTS:
        return _SELFTESTS[key]
    try:
        if vectors is None:
            run_model(profile, image, np.zeros((0, 1), np.int8))
            why = None
        else:
            xs = np.frombuffer(vectors.inputs, np.int8).reshape(vectors.count, -1)
            want = np.frombuffer(vectors.expected, np.int8).reshape(vectors.count, -1)
            got = run_model(profile, image, xs).outputs.reshape(vectors.count, -1)
            worst = int(np.abs(got.astype(np.int16) - want.astype(np.int16)).max()) if vectors.count else 0
            why = (
                None
                if worst <= vectors.tolerance
                else f"golden vectors differ by {worst} int8 steps (tolerance {vectors.tolerance})"
            )
    except ModelError as exc:
        why = str(exc)
    _SELFTESTS[key] = why
    return why


def _out_is_float(image: bytes) -> bool:
    import struct

    from tinymlops.device.image import format as F

    head = describe(image)
    out_id = struct.unpack_from("<I", image, head["io_off"] + 4 * head["n_inputs"])[0]
    dtype = image[head["tensors_off"] + F.TENSOR.size * out_id + 8]
    return dtype == F.T_FLOAT32
