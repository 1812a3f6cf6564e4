"""A verified model for every device class: per class, the model that serves it (the main model or
its variant) next to the main model — MACs, int8 size, minimum arena, accuracy and latency.

Runs the whole pipeline flow (defaults of params.yaml and configs/devices.yaml, no rollout) in a
fresh temporary git + DVC project, then reads what the run recorded: the release (which model
serves which class, the search's footprints) and each class's HIL report (accuracy on the emulated
device's TFLM over the whole test split, estimated latency). Prints the table (≤ 100 columns) and
logs every figure to MLflow (experiment `tinymlops-bench`). Takes several minutes.

    .venv/bin/python bench/variants.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' project scaffold
from tests.support.project import make_project  # noqa: E402


def main() -> int:
    from flows.pipeline import pipeline
    from tasks.context import project as in_project
    from tinymlops.device.hil import HILReport
    from tinymlops.ml.variants import Release
    from tinymlops.settings import Environment, TrackingConfig
    from tinymlops.tracking import Tracker

    work = Path(tempfile.mkdtemp(prefix="tinymlops-bench-variants-"))
    project = make_project(work / "project")
    os.environ["TINYMLOPS_HOME"] = str(project / ".tinymlops")
    started = time.perf_counter()
    with in_project(project):
        summary = pipeline(rollout_devices=0)
    seconds = time.perf_counter() - started
    run_dir = Environment.from_env(project).runs_dir / summary.prefect_flow_run_id
    release = Release.model_validate_json((run_dir / "variants" / "release.json").read_text())
    hil = {
        r.device_class: r
        for r in (HILReport.model_validate_json(p.read_text()) for p in (run_dir / "hil").glob("*.json"))
    }
    trained = {t.name: t for t in release.trained}
    main = release.main
    assert main is not None

    header = f"{'class':<22}{'model':<20}{'MACs':>8}{'int8 B':>8}{'arena B':>8}{'acc':>7}{'Δ main':>8}"
    header += f"{'HIL ms':>8}{'HIL':>8}"
    print(header)
    print("-" * len(header))
    figures: dict[str, float] = {"wall_seconds": seconds}
    for device_class, report in sorted(hil.items()):
        served = release.served.get(device_class)
        name = served.variant if served else "none"
        fp = main if name == "main" else (trained[name].footprint if name in trained else None)
        acc = report.accuracy_device
        delta = None if acc is None or release.main_accuracy_int8 is None else 100 * (acc - release.main_accuracy_int8)
        latency = report.estimate.latency_ms if report.estimate else None
        print(
            f"{device_class[:21]:<22}{name[:19]:<20}{(fp.macs if fp else 0):>8,}{(fp.int8_bytes if fp else 0):>8,}"
            f"{(fp.arena_bytes if fp else 0):>8,}{(acc or 0):>7.4f}{'' if delta is None else f'{delta:+.1f}':>8}"
            f"{(latency or 0):>8.2f}{report.status:>8}"
        )
        print(
            f"{'':<22}{'  main model':<20}{main.macs:>8,}{main.int8_bytes:>8,}{main.arena_bytes:>8,}"
            f"{(release.main_accuracy_int8 or 0):>7.4f}{'':>8}{main.latency_ms.get(device_class, 0):>8.2f}"
            f"{'misses' if served and served.main_misses else '':>8}"
        )
        key = device_class.replace("-", "_")
        figures |= {
            f"{key}.macs": fp.macs if fp else 0,
            f"{key}.int8_bytes": fp.int8_bytes if fp else 0,
            f"{key}.arena_bytes": fp.arena_bytes if fp else 0,
            f"{key}.accuracy_device": acc or 0.0,
            f"{key}.accuracy_vs_main_pt": delta or 0.0,
            f"{key}.hil_latency_ms": latency or 0.0,
            f"{key}.hil_passed": float(report.status == "passed"),
            f"{key}.main_latency_ms": main.latency_ms.get(device_class, 0.0),
        }
    figures |= {
        "main.macs": main.macs,
        "main.int8_bytes": main.int8_bytes,
        "main.arena_bytes": main.arena_bytes,
        "main.accuracy_int8": release.main_accuracy_int8 or 0.0,
        "classes_served": len(release.served),
        "classes_passed": sum(r.status == "passed" for r in hil.values()),
        "variants_trained": len(release.trained),
    }
    print(
        f"served {len(release.served)}/{len(hil)} classes, HIL passed "
        f"{int(figures['classes_passed'])}; pipeline {seconds:.0f} s"
    )
    os.environ.pop("TINYMLOPS_HOME", None)  # the checkout's own MLflow store
    env = Environment.from_env(REPO)
    tracker = Tracker.start(env, TrackingConfig(experiment="tinymlops-bench"), "variants", {"bench": "variants"})
    tracker.metrics(figures)
    tracker.text(json.dumps(release.model_dump(mode="json"), indent=1), "variants/release.json")
    tracker.finish(True)
    print(f"logged to MLflow run {tracker.run_id} ({env.tracking_uri})")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
