"""Emulated hardware-in-the-loop: a release's bundle through the twin of every target device.

Per profile: install the bundle through the firmware emulator (verify, fit checks, A/B write,
self-test on TFLM in the profile's RAM), measure the minimum arena by bisection and its ratio to
the budget, flash and ops against the profile, run the whole test split on the device's TFLM
(accuracy, and agreement with the reference int8 TFLite interpreter), and estimate latency and
energy. A model that cannot fit is "excluded" (the rollout skips that class); one that fits but
misbehaves, or a bundle the device refuses, "failed". Library only: the Prefect tasks and MLflow
runs around it are the pipeline's.
"""

from __future__ import annotations

import io
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from tinymlops.data.split import Split
from tinymlops.device.arena import min_arena, model_ops, recorded_allocations
from tinymlops.device.estimate import Estimate, estimate, op_costs
from tinymlops.device.firmware import Device, InstallResult, Stage, bundle_verifier
from tinymlops.device.flash import Flash
from tinymlops.device.profiles import DeviceProfile
from tinymlops.errors import ModelError
from tinymlops.io import write_json

Status = Literal["passed", "failed", "excluded"]
DEFAULT_MIN_AGREEMENT = 0.99  # top-1 agreement, device TFLM vs reference TFLite


class HILReport(BaseModel):
    profile: str
    device_class: str
    class_id: str
    target: bool
    status: Status
    reason: str  # one line; "" when passed
    model_version: str | None = None
    sequence: int | None = None
    install: InstallResult | None = None
    arena_needed_bytes: int | None = None  # bisection on TFLM
    arena_recorded_bytes: int | None = None  # TFLM's print_allocations total
    arena_budget_bytes: int
    arena_ratio: float | None = None  # needed / budget
    flash_bytes: int | None = None
    flash_budget_bytes: int
    flash_ratio: float | None = None
    ops: list[str] = []
    missing_ops: list[str] = []
    n_test: int = 0
    accuracy_device: float | None = None
    accuracy_reference: float | None = None
    top1_agreement: float | None = None
    max_abs_diff: int | None = None
    estimate: Estimate | None = None

    def write(self, path: Path | str) -> Path:
        return write_json(path, self.model_dump(mode="json"))


def golden_vectors(model: bytes, xq: np.ndarray, n: int = 16, tolerance: int = 2) -> Any:
    """A SelfTest for the manifest: the first `n` int8 inputs and the reference int8 TFLite outputs.

    Shapes are the model's tensor shapes (batch 1). `tolerance` covers TFLM vs TFLite differences
    (0 for PTQ models in practice, up to 2 steps seen for QAT)."""
    from tinymlops.bundle import SelfTest
    from tinymlops.inference import run_tflite
    from tinymlops.quantize import inspect

    info = inspect(model)
    xs = np.ascontiguousarray(xq[:n], dtype=np.int8)
    expected = run_tflite(model, xs).astype(np.int8)
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
) -> Any:
    """The bundle ManifestDraft for `profile`'s class, with the arena and ops TFLM really needs."""
    from tinymlops.bundle import Lineage, ManifestDraft

    return ManifestDraft(
        model_name=model_name,
        model_version=model_version,
        sequence=sequence,
        vendor=profile.vendor,
        device_class=profile.device_class,
        arena_bytes=min_arena(model),
        ops=model_ops(model),
        selftest=selftest,
        lineage=lineage or Lineage(),
    )


def quantized_test(model: bytes, test: Split) -> np.ndarray:
    from tinymlops.inference import quantize_input
    from tinymlops.quantize import inspect

    return quantize_input(test.x, inspect(model).inputs[0])


def _open_bundle(bundle: Path, trust: Any, kek: bytes | None, revocations: Any, now: datetime | None) -> Any:
    """Host-side verification (the HIL rig holds the KEK too), to measure the plaintext model even
    when the device will refuse it."""
    from tinymlops.bundle import verify_bundle

    sink = io.BytesIO()
    result = verify_bundle(bundle, trust, kek=kek, revocations=revocations, now=now, sink=sink)
    return result, sink.getvalue()


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
) -> HILReport:
    """One profile. `workdir/<profile>` becomes the emulated device's flash (fresh each run)."""
    import shutil

    from tinymlops.inference import run_tflite

    base = HILReport(
        profile=profile.name,
        device_class=profile.device_class,
        class_id=str(profile.class_id),
        target=profile.target,
        status="failed",
        reason="",
        arena_budget_bytes=profile.arena_budget_bytes,
        flash_budget_bytes=profile.flash_model_bytes,
    )
    result, model = _open_bundle(Path(bundle_path), trust, kek, revocations, now)
    if not result.ok:
        return base.model_copy(update={"reason": f"bundle: {result.reason.value}: {result.detail}"})
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
            "flash_bytes": len(model),
            "flash_ratio": len(model) / profile.flash_model_bytes,
            "ops": ops,
            "missing_ops": sorted(set(ops) - set(profile.ops)),
            "estimate": estimate(op_costs(model), profile),
        }
    )
    device_dir = Path(workdir) / profile.name
    shutil.rmtree(device_dir, ignore_errors=True)
    clock = (lambda: now) if now is not None else None
    device = Device(profile, Flash(device_dir), bundle_verifier(trust, kek, revocations), clock=clock)
    installed = device.install(Path(bundle_path))
    report = report.model_copy(update={"install": installed})
    if not installed.ok:
        excluded = installed.stage == Stage.CHECK or installed.reason == "too_large"  # cannot fit
        return report.model_copy(
            update={"status": "excluded" if excluded else "failed", "reason": f"{installed.reason}: {installed.detail}"}
        )
    xq = quantized_test(model, test_split)
    on_device = device.infer(xq)
    reference = run_tflite(model, xq)
    agreement = float(np.mean(on_device.argmax(1) == reference.argmax(1)))
    report = report.model_copy(
        update={
            "n_test": len(xq),
            "accuracy_device": float(np.mean(on_device.argmax(1) == test_split.y)),
            "accuracy_reference": float(np.mean(reference.argmax(1) == test_split.y)),
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


def _kb(n: int | None) -> str:
    return "—" if n is None else f"{n / 1024:.1f} KB"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


def summary_rows(reports: list[HILReport]) -> list[list[str]]:
    rows = []
    for r in reports:
        e = r.estimate
        rows.append(
            [
                r.profile,
                r.status + (f" ({r.reason.split(':')[0]})" if r.status != "passed" else ""),
                f"{_kb(r.arena_needed_bytes)} / {_kb(r.arena_budget_bytes)} ({_pct(r.arena_ratio)})",
                f"{_kb(r.flash_bytes)} / {_kb(r.flash_budget_bytes)} ({_pct(r.flash_ratio)})",
                "—" if r.accuracy_device is None else f"{r.accuracy_device:.4f}",
                "—" if r.top1_agreement is None else f"{r.top1_agreement:.4f} (max Δ {r.max_abs_diff})",
                "—" if e is None else f"{e.latency_ms:.2f} ms",
                "—" if e is None else f"{e.energy_uj:.0f} µJ",
            ]
        )
    return rows


SUMMARY_HEADER = [
    "profile",
    "status",
    "arena need / budget",
    "flash / budget",
    "accuracy",
    "parity",
    "latency",
    "energy",
]


def summary_markdown(reports: list[HILReport]) -> str:
    lines = ["| " + " | ".join(SUMMARY_HEADER) + " |", "|" + "---|" * len(SUMMARY_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(reports)]
    notes = [f"- **{r.profile}** {r.status}: {r.reason}" for r in reports if r.status != "passed"]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def plot(reports: list[HILReport], path: Path | str) -> Path:
    """Arena and flash as a share of each profile's budget, and estimated latency, per profile."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    from tinymlops.io import atomic_path

    names = [r.profile for r in reports]
    x = np.arange(len(names))
    fig, (ax_mem, ax_lat) = plt.subplots(1, 2, figsize=(11, 4))
    arena = [100 * (r.arena_ratio or 0) for r in reports]
    flash = [100 * (r.flash_ratio or 0) for r in reports]
    ax_mem.bar(x - 0.2, arena, 0.4, label="arena need / RAM budget")
    ax_mem.bar(x + 0.2, flash, 0.4, label="model / flash slot")
    ax_mem.axhline(100, color="red", linestyle="--", linewidth=1, label="budget")
    ax_mem.set_ylabel("% of budget")
    ax_mem.set_yscale("log")
    ax_mem.legend(fontsize=8)
    latency = [r.estimate.latency_ms if r.estimate else math.nan for r in reports]
    colors = {"passed": "tab:green", "failed": "tab:red", "excluded": "tab:gray"}
    ax_lat.bar(x, latency, color=[colors[r.status] for r in reports])
    ax_lat.set_ylabel("estimated latency per inference (ms)")
    ax_lat.set_yscale("log")
    for ax in (ax_mem, ax_lat):
        ax.set_xticks(x, names, rotation=20, fontsize=8)
    ax_lat.set_title("green passed · gray excluded · red failed", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def route_bundles(source: Path | str, profiles: list[DeviceProfile]) -> dict[str, Path | None]:
    """Which bundle each profile installs: a directory of *.bundle files is routed by each
    manifest's class id (read unverified: routing only, the device verifies); a single file goes to
    the profiles of its class."""
    from tinymlops.bundle import read_manifest

    source = Path(source)
    files = sorted(source.glob("*.bundle")) if source.is_dir() else [source]
    by_class = {str(read_manifest(f).class_id): f for f in files}
    return {p.name: by_class.get(str(p.class_id)) for p in profiles}


def no_bundle_report(profile: DeviceProfile) -> HILReport:
    return HILReport(
        profile=profile.name,
        device_class=profile.device_class,
        class_id=str(profile.class_id),
        target=profile.target,
        status="excluded",
        reason=f"no bundle for class {profile.device_class}",
        arena_budget_bytes=profile.arena_budget_bytes,
        flash_budget_bytes=profile.flash_model_bytes,
    )
