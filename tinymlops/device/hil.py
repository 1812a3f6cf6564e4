"""Emulated hardware-in-the-loop: a release's bundle through the twin of every target device.

Per profile whose core has an emulator (Cortex-M0+/M4F/M7/M33, RV32IMC), the class's bundle carries
the firmware runtime's model image (tinymlops.device.image), and:

  install   the C update agent (firmware/agent) on the emulated part, on a fresh device of the
            class (tinymlops.device.agent.fresh): root key pinned, stream, verify, A/B write,
            reboot, golden-vector self-test on the C runtime, confirm; refused bundles fail,
            images that cannot fit the part (firmware + image vs flash and slot, static RAM +
            arena + stack vs RAM, the agent's own RAM per boot phase) are excluded with the numbers;
  run       the golden vectors, then the whole test split, as machine code of the part's core on
            the instruction-level emulator (tinymlops.device.mcu), in the part's flash and RAM;
  oracle    every output byte is compared with the tflite-micro interpreter running the .tflite
            the image was compiled from: agreement must be 1.0 and max |Δ| 0, else failed;
  figures   cycles (cycle model), latency, energy, firmware flash, image, static RAM, arena,
            measured stack, emulated instructions per second; the old formula estimate beside it,
            labelled as an estimate.

A profile without an emulator (the ESP32-S3's Xtensa LX7) gets the .tflite, installs it through the
host build of the same C agent (TFLM on the host as its runtime callbacks) and runs it on the host
TFLM reference, and every report says so with the reason (`runtime`, `install_runtime`). Library only: the Prefect
tasks and MLflow runs around it are the pipeline's.
"""

from __future__ import annotations

import hashlib
import io
import math
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from tinymlops.device.agent.fresh import AgentRam, install_fresh
from tinymlops.device.arena import min_arena, model_ops, recorded_allocations
from tinymlops.device.estimate import Estimate, estimate, op_costs
from tinymlops.device.firmware import InstallResult, Stage, is_model_image
from tinymlops.device.profiles import DeviceProfile
from tinymlops.errors import ModelError
from tinymlops.ml.data.split import Split
from tinymlops.util.io import write_json

Status = Literal["passed", "failed", "excluded"]
DEFAULT_MIN_AGREEMENT = 0.99  # top-1 agreement, host TFLM vs reference TFLite (host-reference profiles)
REFERENCE_SUFFIX = ".tflite"  # beside <class>.bundle: the .tflite its image was compiled from (the oracle's)
EXCLUDED_SUFFIX = ".excluded.txt"  # beside the bundles: why the release built no bundle for a class


class HILReport(BaseModel):
    profile: str
    device_class: str
    class_id: str
    target: bool
    status: Status
    reason: str  # one line; "" when passed
    runtime: str = ""  # "emulated <core>" or "host reference (TFLM): <why>"
    model_version: str | None = None
    sequence: int | None = None
    install: InstallResult | None = None
    install_runtime: str = ""  # which build of the C agent installed it (emulated core / host build)
    install_s: float | None = None  # wall time of provisioning + install + confirming boot
    install_cycles: float | None = None  # emulated cycles of the install (verify, write) ...
    boot_cycles: float | None = None  # ... and of the confirming boot (re-verify, self-test)
    agent_ram: AgentRam | None = None  # the agent's RAM per boot phase (emulated parts)
    arena_needed_bytes: int | None = None  # TFLM's, by bisection
    arena_recorded_bytes: int | None = None  # TFLM's print_allocations total
    arena_budget_bytes: int
    arena_ratio: float | None = None  # needed / budget
    flash_bytes: int | None = None  # the payload in the slot (image, or .tflite on the host reference)
    flash_budget_bytes: int
    flash_ratio: float | None = None
    ops: list[str] = []
    missing_ops: list[str] = []
    n_test: int = 0
    accuracy_device: float | None = None
    accuracy_reference: float | None = None
    top1_agreement: float | None = None  # device vs reference TFLite (reference kernels)
    max_abs_diff: int | None = None  # device vs the oracle, int8 steps (TFLM on emulated profiles)
    estimate: Estimate | None = None  # the old per-MAC formula: an estimate, not a measurement
    # -- emulated MCU (None on the host reference) ----------------------------------------------
    image_digest: str | None = None
    image_format_version: int | None = None
    tflm_agreement: float | None = None  # share of output bytes equal to the tflite-micro interpreter's
    golden_count: int | None = None
    golden_max_abs_diff: int | None = None
    cycles: float | None = None  # per inference (mean), from the cycle model
    latency_ms: float | None = None
    energy_uj: float | None = None
    instructions: float | None = None  # per inference
    instructions_per_s: float | None = None  # emulation speed
    emulation_s: float | None = None  # wall time of the emulated inferences
    firmware_flash_bytes: int | None = None
    firmware_region_bytes: int | None = None
    image_bytes: int | None = None
    slot_bytes: int | None = None
    static_ram_bytes: int | None = None
    image_arena_bytes: int | None = None  # the runtime's memory plan
    stack_bytes: int | None = None  # measured high-water mark
    stack_region_bytes: int | None = None
    ram_available_bytes: int | None = None
    ram_used_bytes: int | None = None  # static + arena + measured stack
    metering: MeteringCheck | None = None  # a quota token on the emulated part (metering_check)

    def write(self, path: Path | str) -> Path:
        return write_json(path, self.model_dump(mode="json"))


def emulation_label(profile: DeviceProfile) -> str:
    from tinymlops.device.mcu import emulated

    if emulated(profile):
        return f"emulated {profile.core}"
    note = profile.emulation_note or f"no emulator for {profile.core}"
    return note if note.startswith("host reference") else f"host reference (TFLM): {note}"


class ClassPayload(BaseModel):
    """What a class's bundle carries: the model image its firmware runs, or the .tflite for a class
    whose firmware is TFLM (no emulated core)."""

    kind: Literal["image", "tflite"]
    data: bytes
    arena_bytes: int
    ops: list[str]
    image_format_version: int | None = None
    digest: str

    def image_info(self) -> Any:
        """The manifest's record of an image payload (None for a .tflite)."""
        from tinymlops.bundle.manifest import ImageInfo

        if self.kind != "image" or self.image_format_version is None:
            return None
        return ImageInfo(
            format_version=self.image_format_version,
            sha256=self.digest,
            size=len(self.data),
            arena_bytes=self.arena_bytes,
        )


def class_payload(model: bytes, profile: DeviceProfile) -> ClassPayload:
    """Compile `model` for the class's firmware (raises UnsupportedModel: one line naming the op and
    the tensor) or, for a class without an emulated core, keep the .tflite."""
    from tinymlops.device.mcu import emulated

    if emulated(profile):
        from tinymlops.device.image import compile_model

        compiled = compile_model(model, ops=profile.ops)
        return ClassPayload(
            kind="image",
            data=compiled.data,
            arena_bytes=compiled.image.arena_bytes,
            ops=sorted(set(compiled.image.ops)),
            image_format_version=compiled.image.format_version,
            digest=compiled.image.digest,
        )
    return ClassPayload(
        kind="tflite",
        data=bytes(model),
        arena_bytes=min_arena(model),
        ops=model_ops(model),
        digest=hashlib.sha256(model).hexdigest(),
    )


def golden_vectors(model: bytes, xq: np.ndarray, n: int = 16, tolerance: int = 2) -> Any:
    """A SelfTest for the manifest: the first `n` int8 inputs and their TFLite Micro outputs.

    The expected outputs come from the runtime devices run (TFLM, which the firmware runtime
    matches bit for bit), not from desktop TFLite: the two can differ by a few int8 steps (3 seen on
    a PTQ model), which would revert a good install. Shapes are the model's tensor shapes (batch 1);
    `tolerance` is the slack the manifest grants the device."""
    from tinymlops.bundle import SelfTest
    from tinymlops.ml.inference import run_tflm
    from tinymlops.ml.quantize import inspect

    info = inspect(model)
    xs = np.ascontiguousarray(xq[:n], dtype=np.int8)
    expected = run_tflm(model, xs, min_arena(model)).reshape(len(xs), -1).astype(np.int8)
    return SelfTest(
        input_shape=info.inputs[0].shape,
        output_shape=info.outputs[0].shape,
        inputs=xs.tobytes(),
        expected=np.ascontiguousarray(expected).tobytes(),
        count=len(xs),
        tolerance=tolerance,
    )


def manifest_draft(
    model: bytes,
    profile: DeviceProfile,
    *,
    model_name: str,
    model_version: str,
    sequence: int,
    selftest: Any = None,
    lineage: Any = None,
    payload: ClassPayload | None = None,
) -> Any:
    """The bundle ManifestDraft for `profile`'s class. With a `payload` (class_payload), the arena
    and ops are the payload's (the image's memory plan); else what TFLM needs for `model`."""
    from tinymlops.bundle import Lineage, ManifestDraft

    return ManifestDraft(
        model_name=model_name,
        model_version=model_version,
        sequence=sequence,
        vendor=profile.vendor,
        device_class=profile.device_class,
        arena_bytes=payload.arena_bytes if payload else min_arena(model),
        ops=payload.ops if payload else model_ops(model),
        selftest=selftest,
        lineage=lineage or Lineage(),
        image=payload.image_info() if payload else None,
    )


def quantized_test(model: bytes, test: Split) -> np.ndarray:
    from tinymlops.ml.inference import quantize_input
    from tinymlops.ml.quantize import inspect

    return quantize_input(test.x, inspect(model).inputs[0])


def _open_bundle(bundle: Path, trust: Any, kek: bytes | None, revocations: Any, now: datetime | None) -> Any:
    """Host-side verification (the HIL rig holds the KEK too), to measure the plaintext model even
    when the device will refuse it."""
    from tinymlops.bundle import verify_bundle

    sink = io.BytesIO()
    result = verify_bundle(bundle, trust, kek=kek, revocations=revocations, now=now, sink=sink)
    return result, sink.getvalue()


def reference_for(bundle: Path) -> Path:
    """Where the oracle's .tflite of a bundle lies: beside it, same stem."""
    return bundle.with_suffix(REFERENCE_SUFFIX)


_ORACLE: dict[tuple[str, str], np.ndarray] = {}
_ORACLE_LOCK = threading.Lock()


def tflm_outputs(model: bytes, xq: np.ndarray) -> np.ndarray:
    """The tflite-micro interpreter's outputs, one row per input: the HIL's oracle (one batch in a
    TFLM worker; profiles running the same model and inputs share it)."""
    from tinymlops.device import tflm

    xs = np.ascontiguousarray(xq)
    key = (hashlib.sha256(bytes(model)).hexdigest(), hashlib.sha256(xs.tobytes() + str(xs.shape).encode()).hexdigest())
    with _ORACLE_LOCK:
        if key not in _ORACLE:
            _ORACLE.clear()  # one model's split at a time: no growth across runs
            _ORACLE[key] = np.asarray(tflm.run(model, xs, 4 << 20)).reshape(len(xs), -1)
        return _ORACLE[key]


def run_hil(
    bundle_path: Path | str,
    profile: DeviceProfile,
    trust: Any,
    test_split: Split,
    workdir: Path | str,
    *,
    kek: bytes | None = None,
    revocations: Any = None,
    now: datetime | None = None,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    reference: bytes | None = None,
) -> HILReport:
    """One profile, on a fresh device of its class (its flash lives in memory; `workdir` is kept for
    callers and no longer written).
    `reference` is the .tflite the bundle's image was compiled from (default: read from beside the
    bundle, reference_for); a bundle that carries a .tflite is its own reference."""
    bundle_path = Path(bundle_path)
    base = HILReport(
        profile=profile.name,
        device_class=profile.device_class,
        class_id=str(profile.class_id),
        target=profile.target,
        status="failed",
        reason="",
        runtime=emulation_label(profile),
        arena_budget_bytes=profile.arena_budget_bytes,
        flash_budget_bytes=profile.flash_model_bytes,
    )
    result, payload = _open_bundle(bundle_path, trust, kek, revocations, now)
    if not result.ok:
        return base.model_copy(update={"reason": f"bundle: {result.reason.value}: {result.detail}"})
    image = is_model_image(payload)
    if image and reference is None and reference_for(bundle_path).exists():
        reference = reference_for(bundle_path).read_bytes()
    model = payload if not image else reference
    if image and model is None:
        return base.model_copy(
            update={"reason": f"oracle: no reference .tflite at {reference_for(bundle_path)} for the TFLM comparison"}
        )
    assert model is not None
    try:
        need, ops = min_arena(model), model_ops(model)
    except ModelError as exc:  # signed, but not a model TFLM can load
        return base.model_copy(update={"reason": f"model: {exc}"})
    report = base.model_copy(
        update={
            "model_version": result.manifest.model_version,
            "sequence": result.manifest.sequence,
            "arena_needed_bytes": need,
            "arena_recorded_bytes": recorded_allocations(model).total_bytes,
            "arena_ratio": need / profile.arena_budget_bytes,
            "flash_bytes": len(payload),
            "flash_ratio": len(payload) / profile.flash_model_bytes,
            "ops": ops,
            "missing_ops": sorted(set(ops) - set(profile.ops)),
            "estimate": estimate(op_costs(model), profile),
        }
    )
    from tinymlops.device.mcu import emulated

    if image and not emulated(profile):
        return report.model_copy(update={"reason": f"bundle carries a model image but {report.runtime}"})
    if not image and emulated(profile):
        report = report.model_copy(
            update={"runtime": "host reference (TFLM): the bundle carries a .tflite, not a model image"}
        )
    if image:
        fit = _fit(profile, payload)
        report = report.model_copy(update=fit.figures)
        if fit.problems:
            why = "does not fit: " + "; ".join(fit.problems)
            return report.model_copy(update={"status": "excluded", "reason": why})
    arena = report.image_arena_bytes or 0
    agent = install_fresh(
        bundle_path.read_bytes(), profile, trust, kek=kek, revocations=revocations, now=now, arena_bytes=arena,
        tflm=not image,
    )  # fmt: skip
    installed = agent.result.model_copy(
        update={"model_version": result.manifest.model_version, "sequence": result.manifest.sequence}
    )
    report = report.model_copy(
        update={
            "install": installed,
            "install_runtime": agent.runtime,
            "install_s": agent.wall_s,
            "install_cycles": agent.install_cycles,
            "boot_cycles": agent.boot_cycles,
            "agent_ram": agent.ram,
        }
    )
    if not installed.ok:
        excluded = installed.stage == Stage.CHECK or installed.reason == "too_large"  # cannot fit
        return report.model_copy(
            update={"status": "excluded" if excluded else "failed", "reason": f"{installed.reason}: {installed.detail}"}
        )
    xq = quantized_test(model, test_split)
    if image:
        return _run_emulated(report, profile, payload, model, xq, test_split, result.manifest)
    return _run_host_reference(report, profile, model, xq, test_split, min_agreement)


class _Fit(BaseModel):
    problems: list[str]
    figures: dict[str, Any]


def _fit(profile: DeviceProfile, image: bytes) -> _Fit:
    from tinymlops.device.image import describe
    from tinymlops.device.mcu import fits, image_ops

    f = fits(profile, image)
    problems = list(f.problems)
    missing = sorted(set(image_ops(image)) - set(profile.ops))
    if missing:
        problems.append(f"op {', '.join(missing)} not registered by the {profile.name} firmware")
    figures = {
        "image_digest": hashlib.sha256(image).hexdigest(),
        "image_format_version": describe(image)["version"],
        "firmware_flash_bytes": f.firmware_flash_bytes,
        "firmware_region_bytes": f.firmware_region_bytes,
        "image_bytes": f.image_bytes,
        "slot_bytes": f.slot_bytes,
        "static_ram_bytes": f.static_ram_bytes,
        "image_arena_bytes": f.arena_bytes,
        "stack_region_bytes": f.stack_bytes,
        "ram_available_bytes": f.ram_available_bytes,
    }
    return _Fit(problems=problems, figures=figures)


def _run_emulated(
    report: HILReport, profile: DeviceProfile, image: bytes, model: bytes, xq: np.ndarray, test: Split, manifest: Any
) -> HILReport:
    """Golden vectors, then the whole test split, on the emulated part; every byte vs TFLM."""
    from tinymlops.device.mcu import run_model
    from tinymlops.errors import TinyMLOpsError
    from tinymlops.ml.inference import run_tflite

    try:
        golden_worst, n_golden = 0, 0
        if manifest.selftest is not None and manifest.selftest.count:
            st = manifest.selftest
            gx = np.frombuffer(st.inputs, np.int8).reshape(st.count, *st.input_shape[1:])
            got = run_model(profile, image, gx).outputs.reshape(st.count, -1)
            want = np.frombuffer(st.expected, np.int8).reshape(st.count, -1)
            oracle = tflm_outputs(model, gx).reshape(st.count, -1)
            golden_worst = max(_max_diff(got, want), _max_diff(got, oracle))
            n_golden = st.count
        started = time.perf_counter()
        run = run_model(profile, image, xq)
        wall = time.perf_counter() - started
    except TinyMLOpsError as exc:  # a fault with its address, a firmware error, a refusal
        return report.model_copy(update={"reason": f"firmware: {exc}"})
    oracle = tflm_outputs(model, xq)
    got = run.outputs.reshape(len(xq), -1)
    same = got.view(np.uint8) == oracle.reshape(len(xq), -1).astype(got.dtype).view(np.uint8)
    worst = _max_diff(got, oracle)
    reference = run_tflite(model, xq)
    ram_used = run.static_ram_bytes + run.arena_bytes + run.stack_bytes
    report = report.model_copy(
        update={
            "n_test": len(xq),
            "accuracy_device": float(np.mean(got.argmax(1) == test.y)),
            "accuracy_reference": float(np.mean(reference.argmax(1) == test.y)),
            "top1_agreement": float(np.mean(got.argmax(1) == reference.argmax(1))),
            "max_abs_diff": worst,
            "tflm_agreement": float(same.mean()),
            "golden_count": n_golden,
            "golden_max_abs_diff": golden_worst,
            "cycles": run.cycles_mean,
            "latency_ms": run.latency_ms,
            "energy_uj": run.energy_uj,
            "instructions": run.instructions,
            "instructions_per_s": run.instructions_per_s,
            "emulation_s": wall,
            "stack_bytes": run.stack_bytes,
            "ram_used_bytes": ram_used,
        }
    )
    if ram_used > (report.ram_available_bytes or 0):
        return report.model_copy(
            update={
                "status": "excluded",
                "reason": f"does not fit: RAM: static {run.static_ram_bytes} B + arena {run.arena_bytes} B + "
                f"measured stack {run.stack_bytes} B = {ram_used} B > {report.ram_available_bytes} B available",
            }
        )
    if golden_worst > (manifest.selftest.tolerance if manifest.selftest else 0):
        return report.model_copy(update={"reason": f"golden vectors: max |Δ| {golden_worst} on the emulated part"})
    if not same.all() or worst:
        return report.model_copy(
            update={
                "reason": f"parity: {int((~same).sum())} of {same.size} output bytes differ from TFLM "
                f"(max |Δ| {worst}); agreement must be 1.0"
            }
        )
    return report.model_copy(update={"status": "passed"})


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    if a.size == 0:
        return 0
    return int(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def _run_host_reference(
    report: HILReport, profile: DeviceProfile, model: bytes, xq: np.ndarray, test: Split, min_agreement: float
) -> HILReport:
    from tinymlops.device.tflm import TFLMRuntime
    from tinymlops.ml.inference import run_tflite

    on_device = TFLMRuntime(model, profile.arena_budget_bytes).invoke_batch(xq)  # the installed .tflite
    reference = run_tflite(model, xq)
    agreement = float(np.mean(on_device.argmax(1) == reference.argmax(1)))
    report = report.model_copy(
        update={
            "n_test": len(xq),
            "accuracy_device": float(np.mean(on_device.argmax(1) == test.y)),
            "accuracy_reference": float(np.mean(reference.argmax(1) == test.y)),
            "top1_agreement": agreement,
            "max_abs_diff": int(np.abs(on_device.astype(np.int16) - reference.astype(np.int16)).max()),
        }
    )
    if agreement < min_agreement:
        return report.model_copy(
            update={"reason": f"parity: top-1 agreement {agreement:.4f} with TFLite below {min_agreement}"}
        )
    return report.model_copy(update={"status": "passed"})


def gate_failures(reports: list[HILReport]) -> list[str]:
    """One line per targeted profile that failed (excluded profiles do not stop a release)."""
    return [f"{r.profile}: {r.reason}" for r in reports if r.target and r.status == "failed"]


def _kb(n: float | None) -> str:
    return "—" if n is None else f"{n / 1024:.1f}"


_CORE_SHORT = {"cortex-m0plus": "M0+", "cortex-m4f": "M4F", "cortex-m7": "M7", "cortex-m33": "M33", "rv32imc": "RV32"}


def _latency(r: HILReport) -> str:
    if r.latency_ms is not None:
        return f"{r.latency_ms:.2f} ms"
    return "—" if r.estimate is None else f"~{r.estimate.latency_ms:.2f} ms"


def _energy(r: HILReport) -> str:
    e = r.energy_uj if r.energy_uj is not None else (r.estimate.energy_uj if r.estimate else None)
    if e is None:
        return "—"
    return ("" if r.energy_uj is not None else "~") + (f"{e:.0f} µJ" if e >= 10 else f"{e:.1f} µJ")


def summary_rows(reports: list[HILReport]) -> list[list[str]]:
    """One row per profile, every cell short: the table is readable at 100 columns. Emulated figures
    are measured; `~` marks the formula estimate of a profile on the host reference."""
    rows = []
    for r in reports:
        emulated = r.runtime.startswith("emulated")
        core = r.runtime.split()[-1] if emulated else "TFLM"
        if r.firmware_flash_bytes is not None and r.image_bytes is not None:
            flash = f"{_kb(r.firmware_flash_bytes)}+{_kb(r.image_bytes)}"
        else:
            flash = _kb(r.flash_bytes)
        if r.static_ram_bytes is not None and r.image_arena_bytes is not None:
            used = r.ram_used_bytes or r.static_ram_bytes + r.image_arena_bytes + (r.stack_region_bytes or 0)
            ram = f"{_kb(used)}/{_kb(r.ram_available_bytes)}"
        else:
            ram = f"{_kb(r.arena_needed_bytes)}/{_kb(r.arena_budget_bytes)}"
        if r.tflm_agreement is not None:
            parity = f"{r.tflm_agreement:.3f} Δ{r.max_abs_diff}"
        elif r.top1_agreement is not None:
            parity = f"top1 {r.top1_agreement:.2f}"
        else:
            parity = "—"
        rows.append(
            [
                r.profile,
                r.status,
                _CORE_SHORT.get(core, core),
                _latency(r),
                _energy(r),
                flash,
                ram,
                parity,
                "—" if r.instructions_per_s is None else f"{r.instructions_per_s / 1e6:.0f}",
            ]
        )
    return rows


SUMMARY_HEADER = ["profile", "status", "core", "latency", "energy", "flash KB", "RAM KB", "vs TFLM", "Minsn/s"]
SUMMARY_NOTE = (
    "core: emulated core, or TFLM = host reference (no emulator); ~ = formula estimate; flash KB = "
    "firmware+image; RAM KB = static+arena+measured stack / available (TFLM: arena / budget); "
    "vs TFLM = share of output bytes equal to the tflite-micro interpreter's and max |Δ|"
)


def summary_markdown(reports: list[HILReport]) -> str:
    lines = ["| " + " | ".join(SUMMARY_HEADER) + " |", "|" + "---|" * len(SUMMARY_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(reports)]
    notes = [f"- **{r.profile}** {r.status}: {r.reason}" for r in reports if r.status != "passed"]
    notes += [f"- **{r.profile}** runs on the {r.runtime}" for r in reports if r.runtime.startswith("host")]
    return "\n".join(lines + ["", SUMMARY_NOTE] + ([""] + notes if notes else [])) + "\n"


def summary_table(reports: list[HILReport], width: int = 100) -> str:
    """The HIL matrix as fixed-width text (the terminal and the run summary): at most `width`
    columns; the reasons of the profiles that did not pass follow, one line each."""
    import textwrap

    rows = summary_rows(reports)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(SUMMARY_HEADER)]
    fmt = " ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*SUMMARY_HEADER).rstrip(), " ".join("─" * w for w in widths)]
    lines += [fmt.format(*row).rstrip() for row in rows]
    lines += textwrap.wrap(SUMMARY_NOTE, width)
    for r in reports:
        if r.status != "passed":
            lines += textwrap.wrap(f"{r.profile} {r.status}: {r.reason}", width, subsequent_indent="  ")
        if r.runtime.startswith("host"):
            lines += textwrap.wrap(f"{r.profile} runs on the {r.runtime}", width, subsequent_indent="  ")
    return "\n".join(lines) + "\n"


def plot(reports: list[HILReport], path: Path | str) -> Path:
    """Arena and flash as a share of each profile's budget, and estimated latency, per profile."""
    from tinymlops.util.plotting import png

    names = [r.profile for r in reports]
    x = np.arange(len(names))
    with png(path, 1, 2, figsize=(11, 4)) as (_, (ax_mem, ax_lat)):
        _draw(reports, names, x, ax_mem, ax_lat)
    return Path(path)


def _draw(reports: list[HILReport], names: list[str], x: np.ndarray, ax_mem: Any, ax_lat: Any) -> None:
    arena = [100 * (r.arena_ratio or 0) for r in reports]
    flash = [100 * (r.flash_ratio or 0) for r in reports]
    ax_mem.bar(x - 0.2, arena, 0.4, label="arena need / RAM budget")
    ax_mem.bar(x + 0.2, flash, 0.4, label="model / flash slot")
    ax_mem.axhline(100, color="red", linestyle="--", linewidth=1, label="budget")
    ax_mem.set_ylabel("% of budget")
    ax_mem.set_yscale("log")
    ax_mem.legend(fontsize=8)
    latency = [
        r.latency_ms if r.latency_ms is not None else (r.estimate.latency_ms if r.estimate else math.nan)
        for r in reports
    ]
    colors = {"passed": "tab:green", "failed": "tab:red", "excluded": "tab:gray"}
    ax_lat.bar(x, latency, color=[colors[r.status] for r in reports])
    ax_lat.set_ylabel("latency per inference (ms): emulated, or estimate (TFLM)")
    ax_lat.set_yscale("log")
    for ax in (ax_mem, ax_lat):
        ax.set_xticks(x, names, rotation=20, fontsize=8)
    ax_lat.set_title("green passed · gray excluded · red failed", fontsize=9)


def route_bundles(source: Path | str, profiles: list[DeviceProfile]) -> dict[str, Path | None]:
    """Which bundle each profile installs: a directory of *.bundle files is routed by each
    manifest's class id (read unverified: routing only, the device verifies); a single file goes to
    the profiles of its class."""
    from tinymlops.bundle import read_manifest

    source = Path(source)
    files = sorted(source.glob("*.bundle")) if source.is_dir() else [source]
    by_class = {str(read_manifest(f).class_id): f for f in files}
    return {p.name: by_class.get(str(p.class_id)) for p in profiles}


def no_bundle_report(profile: DeviceProfile, bundle_dir: Path | str | None = None) -> HILReport:
    """An excluded profile: the release built no bundle for its class (the reason it left beside the
    bundles, e.g. an op the class's firmware does not run), or none was given."""
    reason = f"no bundle for class {profile.device_class}"
    why = Path(bundle_dir) / f"{profile.device_class}{EXCLUDED_SUFFIX}" if bundle_dir else None
    if why is not None and why.is_file():
        reason = " ".join(why.read_text().split())
    return HILReport(
        profile=profile.name,
        device_class=profile.device_class,
        class_id=str(profile.class_id),
        target=profile.target,
        status="excluded",
        reason=reason,
        runtime=emulation_label(profile),
        arena_budget_bytes=profile.arena_budget_bytes,
        flash_budget_bytes=profile.flash_model_bytes,
    )


# -- metering on the emulated MCU (issue 13: the HIL shows the quota refusal) ---------------------
class MeteringCheck(BaseModel):
    """A quota token on the emulated part: the C agent installs the release's bundle, takes a
    tiny quota, serves that many inferences of the test split and refuses the next ones."""

    status: Literal["passed", "failed"]
    reason: str  # one line; "" when passed
    quota: int
    attempted: int
    served: int  # inferences the agent let run (outputs equal to the oracle's)
    refused_at: int | None  # 1-based attempt of the first refusal
    refusal: str | None  # the agent's reason (quota_exhausted)
    evidence_count: int | None = None  # the inference counter in the agent's signed evidence
    boot_count: int | None = None  # the evidence's bootcount
    ram: str = "budget"  # "all": the agent does not fit the app RAM budget (docs/agent.md)
    seconds: float = 0.0


HILReport.model_rebuild()
# Callable[[QuotaToken], bytes]: a token signed by a metering key the part's pinned root certified
# (tinymlops.bundle.quota.quota_issuer: the key directory's metering key when it has one, so root.key
# can stay offline); a root-signed or bundle-key-signed token is refused by the agent (untrusted_key)
QuotaIssuer = Any


def metering_check(
    bundle_path: Path | str,
    profile: DeviceProfile,
    trust: Any,
    test_split: Split,
    issue: QuotaIssuer,
    *,
    kek: bytes | None = None,
    now: datetime | None = None,
    quota: int = 3,
    attempts: int = 5,
) -> MeteringCheck:
    """A fresh metered part of `profile` (root = `trust`, its own device key): install + boot the
    bundle through the C agent, install a quota token of `quota` from `issue`, then `attempts`
    metered inferences (agent_infer: counter in flash first, then the model)."""
    import secrets
    import uuid
    from datetime import timedelta, timezone

    from tinymlops.bundle.evidence import verify_evidence
    from tinymlops.bundle.quota import QuotaToken
    from tinymlops.bundle.verify import read_manifest
    from tinymlops.device.agent.emulated import EmuDevice
    from tinymlops.errors import TinyMLOpsError

    started = time.perf_counter()
    bundle_path = Path(bundle_path)
    when = now or datetime.now(timezone.utc)
    base = MeteringCheck(status="failed", reason="", quota=quota, attempted=0, served=0, refused_at=None, refusal=None)

    def failed(why: str, **kw: Any) -> MeteringCheck:
        return base.model_copy(update={"reason": why, "seconds": time.perf_counter() - started, **kw})

    reference = reference_for(bundle_path)
    if not reference.exists():
        return failed(f"no reference .tflite at {reference} for the oracle")
    model = reference.read_bytes()
    try:
        try:
            dev, ram = EmuDevice(profile), "budget"
        except TinyMLOpsError:  # the M0+ agent does not fit its RAM budget (docs/agent.md)
            dev, ram = EmuDevice(profile, ram="all"), "all"
        base = base.model_copy(update={"ram": ram})
        device_id = uuid.uuid4()
        # a part of the fleet that ran the release before (sequence − 1): a factory-fresh part would
        # rightly refuse a release far above its sequence as a fast-forward
        previous = max(0, read_manifest(bundle_path).sequence - 1)
        public = dev.provision(
            trust.public_key, device_id, profile.class_id, kek=kek, metered=True, initial_sequence=previous
        )
        installed = dev.install(bundle_path.read_bytes(), when)
        if installed.reason != "pending":
            return failed(f"install: {installed.reason}")
        booted = dev.boot(when)
        if booted.event != "confirmed":
            return failed(f"boot: {booted.event} ({booted.reason})")
        token = QuotaToken(device_id=device_id, quota=quota, expires=when + timedelta(hours=1), serial=1)
        took = dev.install_quota(issue(token), now=when)
        if took.reason != "ok":
            return failed(f"quota token: {took.reason}")
        xq = quantized_test(model, test_split)
        oracle = tflm_outputs(model, xq)  # the HIL's own oracle batch (cached), sliced below
        served, refused_at, refusal = 0, None, None
        n = min(attempts, len(xq))
        for i in range(n):
            why, out = dev.metered_infer(np.ascontiguousarray(xq[i]).tobytes(), now=when)
            if why == "ok" and out is not None:
                if np.frombuffer(out, np.int8).tobytes() != oracle[i].astype(np.int8).tobytes():
                    return failed(f"metered inference {i + 1}: output differs from TFLM", attempted=i + 1)
                served += 1
            elif refused_at is None:
                refused_at, refusal = i + 1, why
        ev = verify_evidence(dev.evidence(secrets.token_bytes(16), now=when), public or b"")
    except TinyMLOpsError as exc:
        return failed(f"firmware: {exc}")
    got = base.model_copy(
        update={
            "attempted": n, "served": served, "refused_at": refused_at, "refusal": refusal,
            "evidence_count": ev.inference_count, "boot_count": ev.boot_count,
            "seconds": time.perf_counter() - started,
        }
    )  # fmt: skip
    want_served = min(quota, n)
    if served != want_served or ev.inference_count != want_served:
        return got.model_copy(update={"reason": f"served {served} (counter {ev.inference_count}) of quota {quota}"})
    if n > quota and (refused_at != quota + 1 or refusal != "quota_exhausted"):
        return got.model_copy(update={"reason": f"not refused after the quota: first refusal {refused_at} ({refusal})"})
    return got.model_copy(update={"status": "passed"})


def with_metering(report: HILReport, check: MeteringCheck) -> HILReport:
    """The report with its metering check; a failed check fails a passed profile."""
    update: dict[str, Any] = {"metering": check}
    if check.status == "failed" and report.status == "passed":
        update |= {"status": "failed", "reason": f"metering: {check.reason}"}
    return report.model_copy(update=update)
