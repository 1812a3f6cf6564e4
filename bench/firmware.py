"""Firmware on the emulated MCUs: per network and core, cycles, latency, the runtime's arena next to
TFLM's, firmware flash and image size next to the .tflite, and emulation speed.

Networks: the default architecture (cnn_small, 8x8 digits shape) and networks shaped like the
MLPerf Tiny references (DS-CNN KWS, ResNet-8 IC, FC autoencoder AD), random weights, int8.
Goals (one run, this machine): arena <= 0.75x TFLM's; M4F cycles/MAC on DS-CNN within 1.5x of the
8.2 that the published CMSIS-NN board figure implies; >= 20 M emulated instructions/s.
TFLM's minimum arena is found by bisection, each probe in its own subprocess (the interpreter can
crash just below the minimum). Emulation speed is measured after the flash calibration runs.
Prints a table (100 columns) and logs the figures to MLflow (experiment `tinymlops-bench`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import tinymlops  # noqa: F401,E402

PUBLISHED_M4_CYCLES_PER_MAC = 8.2  # configs/devices.yaml header: MLPerf Tiny v0.5 KWS on NUCLEO-L4R5ZI
INFERENCES = int(os.environ.get("TINYMLOPS_BENCH_FW_INFERENCES", "4"))  # the first 2 calibrate flash reads
_PROBE = """import sys
from tflite_micro.python.tflite_micro import runtime
try:
    runtime.Interpreter.from_bytes(open(sys.argv[1], "rb").read(), arena_size=int(sys.argv[2]))
except RuntimeError:
    sys.exit(3)
"""


def tflm_allocates(model: Path, arena: int) -> bool:
    """Does TFLM allocate the model in `arena` bytes? In a subprocess: below its minimum the
    interpreter may crash instead of failing (a crash counts as no)."""
    out = subprocess.run([sys.executable, "-c", _PROBE, str(model), str(arena)], capture_output=True)
    return out.returncode == 0


def tflm_min_arena(model: Path) -> int:
    """TFLM's smallest arena, by bisection over isolated probes."""
    hi = 1024
    while not tflm_allocates(model, hi):
        hi *= 2
        if hi > 64 << 20:
            raise RuntimeError(f"TFLM cannot allocate {model.name}")
    lo = hi // 2 if hi > 1024 else 0  # invariant: lo does not fit (or 0), hi fits
    while hi - lo > 16:  # 16-byte resolution: TFLM aligns its allocations to 16 bytes
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if tflm_allocates(model, mid) else (mid, hi)
    return hi


def networks(work: Path) -> dict[str, tuple[Path, tuple[int, ...]]]:
    from tests.support.mlperf_models import MLPERF, int8_model
    from tinymlops.ml.model.architectures import build
    from tinymlops.ml.quantize import to_int8_tflite

    out = {}
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    cnn = to_int8_tflite(build("cnn_small", (8, 8, 1), 10), np.random.default_rng(0).uniform(0, 16, (32, 8, 8, 1)))
    (work / "cnn_small.tflite").write_bytes(cnn)
    out["cnn_small"] = (work / "cnn_small.tflite", (8, 8, 1))
    for name, builder in MLPERF.items():
        model, shape = int8_model(builder)
        (work / f"{name}.tflite").write_bytes(model)
        out[name] = (work / f"{name}.tflite", shape)
    return out


def main() -> int:
    import tempfile

    from tests.support.mlperf_models import macs, roomy
    from tinymlops.device.image import compile_model
    from tinymlops.device.mcu import emulated, run_model
    from tinymlops.device.profiles import load_profiles

    work = Path(tempfile.mkdtemp(prefix="tinymlops-bench-fw-"))
    cores = {}
    for p in load_profiles(REPO):
        if emulated(p) and p.core not in cores:
            cores[p.core] = p
    figures: dict[str, float] = {}
    rows = []
    arena_ratios, speeds, cpu_speeds = [], [], []
    m4_cpm = None
    print(f"{'network':17s} {'core':13s} {'cycles':>10s} {'ms':>8s} {'arena':>6s} {'tflm':>6s} {'ratio':>5s} "
          f"{'fw':>6s} {'image':>6s} {'tflite':>6s} {'Minsn/s':>7s}")  # fmt: skip
    for net, (path, shape) in networks(work).items():
        model = path.read_bytes()
        compiled = compile_model(model)
        tflm_arena = tflm_min_arena(path)
        ratio = compiled.image.arena_bytes / tflm_arena
        arena_ratios.append(ratio)
        n_macs = macs(model)
        xs = np.random.default_rng(0).integers(-128, 128, (INFERENCES, *shape), dtype=np.int8)
        for core, p in cores.items():
            run = run_model(roomy(p, compiled.data), compiled.data, xs)
            speeds.append(run.instructions_per_s)
            cpu_speeds.append(run.instructions_per_cpu_s)
            print(f"{net:17s} {core:13s} {run.cycles_mean:10.0f} {run.latency_ms:8.2f} {compiled.image.arena_bytes:6d} "
                  f"{tflm_arena:6d} {ratio:5.2f} {run.firmware_flash_bytes:6d} {compiled.image.size:6d} "
                  f"{len(model):6d} {run.instructions_per_s / 1e6:7.1f}")  # fmt: skip
            key = f"{net}.{core}"
            figures.update({f"{key}.cycles": run.cycles_mean, f"{key}.latency_ms": run.latency_ms,
                            f"{key}.instructions_per_s": run.instructions_per_s, f"{key}.cycles_per_mac":
                            run.cycles_mean / n_macs, f"{key}.stack_bytes": run.stack_bytes})  # fmt: skip
            rows.append({"network": net, "core": core, **run.figures(), "tflm_arena": tflm_arena, "macs": n_macs})
            if net == "ds_cnn_kws" and core == "cortex-m4f":
                m4_cpm = run.cycles_mean / n_macs
        figures.update({f"{net}.arena_bytes": compiled.image.arena_bytes, f"{net}.tflm_arena_bytes": tflm_arena,
                        f"{net}.arena_ratio": ratio, f"{net}.image_bytes": compiled.image.size,
                        f"{net}.tflite_bytes": len(model), f"{net}.macs": n_macs})  # fmt: skip
    print()
    worst = max(arena_ratios)
    print(f"arena / TFLM arena: worst {worst:.2f} (goal <= 0.75) -> {'ok' if worst <= 0.75 else 'MISSED'}")
    if m4_cpm is not None:
        r = m4_cpm / PUBLISHED_M4_CYCLES_PER_MAC
        ok = 1 / 1.5 <= r <= 1.5
        print(f"M4F DS-CNN cycles/MAC {m4_cpm:.2f} vs published {PUBLISHED_M4_CYCLES_PER_MAC} -> ratio {r:.2f} "
              f"(goal within 1.5x) -> {'ok' if ok else 'MISSED'}")  # fmt: skip
        figures["m4f_cycles_per_mac_ratio"] = r
    slowest = min(speeds)
    print(f"emulated instructions/s: min {slowest / 1e6:.1f} M, median {np.median(speeds) / 1e6:.1f} M "
          f"(goal >= 20 M) -> {'ok' if slowest >= 20e6 else 'MISSED'}")  # fmt: skip
    print(f"  per CPU second of the emulating thread: min {min(cpu_speeds) / 1e6:.1f} M, median "
          f"{np.median(cpu_speeds) / 1e6:.1f} M (wall-clock figures depend on the machine's load)")  # fmt: skip
    figures.update({"instructions_per_cpu_s_min": min(cpu_speeds),
                    "instructions_per_cpu_s_median": float(np.median(cpu_speeds))})  # fmt: skip
    figures.update({"arena_ratio_worst": worst, "instructions_per_s_min": slowest,
                    "instructions_per_s_median": float(np.median(speeds))})  # fmt: skip
    (work / "firmware_bench.json").write_text(json.dumps(rows, indent=1))

    from tinymlops.settings import Environment, TrackingConfig
    from tinymlops.tracking import Tracker

    os.environ.pop("TINYMLOPS_HOME", None)
    env = Environment.from_env(REPO)
    tracker = Tracker.start(env, TrackingConfig(experiment="tinymlops-bench"), "firmware", {"bench": "firmware"})
    tracker.metrics(figures)
    tracker.artifact(work / "firmware_bench.json", "bench")
    tracker.finish(True)
    print(f"logged to MLflow run {tracker.run_id} ({env.tracking_uri})")
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    rc = main()
    print(f"bench wall time {time.perf_counter() - start:.0f} s")
    sys.exit(rc)
