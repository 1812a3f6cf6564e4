"""Per-device-class variants: when the main model misses a class's limits, a smaller one that fits.

A class's limits (configs/devices.yaml): the ops its firmware registers, one flash model slot, the
RAM left for the tensor arena, and the application's latency deadline (estimated from the model's
MACs and the core's cycles per MAC). `misses()` lists what a model breaks, with figures.

The search (docs/variants.md):
1. Candidates: the main architecture's own family (if its builder takes `width` and `depth`) and
   the families in `variants.families`, over `variants.widths` × `variants.depths`.
2. Footprint of each, untrained: build, convert to int8 with a calibration sample, then measure
   the real bytes (size, ops, minimum arena on TFLM in a worker process, MACs and latency per
   class). Untrained and trained models have the same tensors, so this is exact, and cheap.
3. For each class the main model misses, its feasible candidates, largest (MACs) first; the first
   `variants.per_class` of them are trained on the same data, watermarked, quantized and checked
   (the caller does that: it owns the pipeline's caches and runs).
4. The chosen variant of a class: the most accurate trained candidate (int8, on the test split)
   that fits the class, passes the quality gates and carries the watermark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from tinymlops.device.profiles import DeviceProfile
from tinymlops.errors import ModelError

MAIN = "main"


class Candidate(BaseModel):
    architecture: str  # a registry name or module:function
    width: float
    depth: int

    @property
    def name(self) -> str:
        short = self.architecture.rsplit(":", 1)[-1]
        return f"{short}-w{self.width:g}-d{self.depth}"

    def options(self) -> dict[str, float | int]:
        return {"width": self.width, "depth": self.depth}


class Footprint(BaseModel):
    """What one int8 model asks of a device (exact: measured on its bytes)."""

    name: str
    int8_bytes: int = 0
    arena_bytes: int = 0
    macs: int = 0
    ops: list[str] = []
    latency_ms: dict[str, float] = {}  # per device class
    error: str = ""  # could not be built, converted or measured: never chosen


def measure(name: str, model: bytes, profiles: list[DeviceProfile]) -> Footprint:
    """Size, ops, minimum arena (TFLM, isolated), MACs and estimated latency on every profile."""
    from tinymlops.device.arena import min_arena, model_ops
    from tinymlops.device.estimate import estimate, op_costs

    try:
        costs = op_costs(model)
        return Footprint(
            name=name,
            int8_bytes=len(model),
            arena_bytes=min_arena(model),
            macs=sum(c.macs for c in costs),
            ops=model_ops(model),
            latency_ms={p.device_class: estimate(costs, p).latency_ms for p in profiles},
        )
    except ModelError as exc:
        return Footprint(name=name, error=str(exc))


def misses(fp: Footprint, profile: DeviceProfile) -> list[str]:
    """Each limit of `profile` the model breaks, as `kind: figures` (empty: it fits)."""
    if fp.error:
        return [f"model: {fp.error}"]
    out = []
    missing = sorted(set(fp.ops) - set(profile.ops))
    if missing:
        out.append(f"ops: {', '.join(missing)} not registered by the {profile.name} firmware")
    if fp.int8_bytes > profile.flash_model_bytes:
        out.append(f"flash: {fp.int8_bytes} B > {profile.flash_model_bytes} B model slot")
    if fp.arena_bytes > profile.arena_budget_bytes:
        out.append(f"arena: {fp.arena_bytes} B > {profile.arena_budget_bytes} B budget")
    latency = fp.latency_ms.get(profile.device_class)
    if profile.max_latency_ms is not None and latency is not None and latency > profile.max_latency_ms:
        out.append(f"latency: {latency:.1f} ms > {profile.max_latency_ms:g} ms limit")
    return out


def candidates(
    main_architecture: str,
    families: list[str],
    widths: list[float],
    depths: list[int],
    search_path: Path | None = None,
) -> list[Candidate]:
    """The grid: the main architecture's family (when its builder scales) and `families`."""
    from tinymlops.ml.model.architectures import is_family, resolve

    names = [main_architecture, *families]
    seen: list[str] = []
    for name in names:
        if name not in seen and is_family(resolve(name, search_path)):
            seen.append(name)
    return [Candidate(architecture=a, width=w, depth=d) for a in seen for d in depths for w in widths]


def footprint(
    candidate: Candidate,
    input_shape: tuple[int, ...],
    n_classes: int,
    calibration: np.ndarray,
    profiles: list[DeviceProfile],
    seed: int,
    search_path: Path | None = None,
) -> Footprint:
    """Build the candidate untrained, convert it to int8 and measure the bytes."""
    from tinymlops.ml.model.architectures import build
    from tinymlops.ml.model.train import seed_everything
    from tinymlops.ml.quantize import to_int8_tflite
    from tinymlops.ml.tf import tf

    tf.keras.backend.clear_session()
    seed_everything(seed)
    try:
        model = build(candidate.architecture, input_shape, n_classes, search_path=search_path, **candidate.options())
        int8 = to_int8_tflite(model, calibration)
    except Exception as exc:  # a family that cannot take this shape or scale is just not a candidate
        return Footprint(name=candidate.name, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    return measure(candidate.name, int8, profiles)


def to_train(
    footprints: dict[str, Footprint],
    missed: dict[str, DeviceProfile],
    per_class: int,
    limit: int,
) -> dict[str, list[str]]:
    """For each class the main model misses: its feasible candidates, most MACs first, at most
    `per_class`; the union is capped at `limit`. → {device class: [candidate names]}."""
    plan: dict[str, list[str]] = {}
    chosen: list[str] = []
    for device_class, profile in missed.items():
        feasible = [fp for fp in footprints.values() if not misses(fp, profile)]
        feasible.sort(key=lambda fp: (-fp.macs, fp.int8_bytes, fp.name))
        plan[device_class] = [fp.name for fp in feasible[:per_class]]
        chosen += [n for n in plan[device_class] if n not in chosen]
    keep = set(chosen[:limit])
    return {c: [n for n in names if n in keep] for c, names in plan.items()}


class Trained(BaseModel):
    """A trained, watermarked, quantized candidate and how it did."""

    name: str
    footprint: Footprint
    accuracy_float: float | None
    accuracy_int8: float | None
    gate_failures: list[str] = []
    watermarked: bool = False
    int8_path: Path | None = None
    run_id: str = ""
    error: str = ""

    @property
    def usable(self) -> bool:
        return not self.error and not self.gate_failures and self.watermarked and self.int8_path is not None


class Served(BaseModel):
    """Which model serves one device class in a release."""

    device_class: str
    variant: str  # MAIN or a candidate name
    int8_path: Path
    run_id: str  # the MLflow run of that model (a variant's nested run, or the pipeline's)
    accuracy_int8: float | None
    main_misses: list[str] = []  # why the main model did not serve the class


class Release(BaseModel):
    """A release: one model per targeted class (the main model where it fits, else a variant)."""

    served: dict[str, Served] = {}
    unserved: dict[str, str] = {}  # class → why nothing serves it
    main: Footprint | None = None
    main_accuracy_int8: float | None = None
    candidates: list[Footprint] = []
    trained: list[Trained] = []

    def line(self, device_class: str) -> str:
        s = self.served.get(device_class)
        return f"{s.variant}" if s else f"none ({self.unserved.get(device_class, 'not targeted')})"


def choose(profile: DeviceProfile, trained: list[Trained]) -> Trained | None:
    """The most accurate usable variant that fits the class (ties: fewer MACs)."""
    fitting = [t for t in trained if t.usable and not misses(t.footprint, profile)]
    if not fitting:
        return None
    return max(fitting, key=lambda t: (t.accuracy_int8 or 0.0, -t.footprint.macs))


def plot_tradeoff(
    classes: list[DeviceProfile],
    footprints: dict[str, Footprint],
    trained: dict[str, Trained],
    main: Footprint,
    main_accuracy: float | None,
    chosen: dict[str, str],
    path: Path,
) -> Path:
    """One panel per class: estimated latency (x, log) against int8 accuracy (y; untrained
    candidates at the bottom edge), marker area ∝ int8 size; the class's limits and the chosen
    point marked, the main model as a diamond."""
    from tinymlops.util.plotting import png

    n = max(1, len(classes))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    with png(path, rows, cols, figsize=(4.6 * cols, 3.8 * rows)) as (fig, axes):
        flat = np.atleast_1d(axes).ravel()
        for ax, profile in zip(flat, classes, strict=False):
            _panel(ax, profile, footprints, trained, main, main_accuracy, chosen.get(profile.device_class))
        for ax in flat[len(classes) :]:
            ax.axis("off")
        fig.suptitle("variants: accuracy / size / latency per device class (★ chosen, ◆ main model)")
    return Path(path)


def _panel(ax, profile, footprints, trained, main, main_accuracy, chosen_name) -> None:
    floor = 0.0
    for fp in footprints.values():
        if fp.error:
            continue
        t = trained.get(fp.name)
        acc = t.accuracy_int8 if t and t.accuracy_int8 is not None else floor
        ok = not misses(fp, profile)
        ax.scatter(
            fp.latency_ms.get(profile.device_class, np.nan),
            acc,
            s=20 + fp.int8_bytes / 200,
            c="tab:green" if ok else "tab:gray",
            alpha=0.8 if t else 0.35,
            marker="o" if ok else "x",
        )
        if fp.name == chosen_name:
            ax.scatter(fp.latency_ms.get(profile.device_class), acc, s=260, marker="*", c="tab:red", zorder=5)
            ax.annotate(
                fp.name,
                (fp.latency_ms.get(profile.device_class, 0), acc),
                fontsize=7,
                xytext=(4, -10),
                textcoords="offset points",
            )
    if not main.error:
        ax.scatter(
            main.latency_ms.get(profile.device_class),
            main_accuracy or floor,
            s=90,
            marker="D",
            c="black" if chosen_name == MAIN else "white",
            edgecolors="black",
            zorder=4,
        )
    if profile.max_latency_ms:
        ax.axvline(profile.max_latency_ms, color="red", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("estimated latency (ms)")
    ax.set_ylabel("int8 test accuracy")
    ax.set_title(
        f"{profile.device_class}\narena {profile.arena_budget_bytes // 1024} KB · slot "
        f"{profile.flash_model_bytes // 1024} KB"
        + (f" · ≤ {profile.max_latency_ms:g} ms" if profile.max_latency_ms else ""),
        fontsize=8,
    )
