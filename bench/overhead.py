"""What orchestration costs: the pipeline flow's wall time against the bare work.

Bare work = the same library work as the pipeline (train, watermark, int8, evaluate on Keras/TFLite/
TFLM, watermark check, a signed bundle per class, HIL on every profile) called directly on prepared
data: no Prefect, no MLflow, no DVC. The pipeline is the real flow on embedded defaults, without
its fleet rollout (to compare alike), in a fresh git+DVC project, timed twice:
  cold — first flow run in the process: starts the ephemeral Prefect server on a new database,
         creates the MLflow database;
  warm — the same project again with its model cache emptied, so the model is trained anew: the
         steady state of a retrain (server up, stores exist).
Bare and warm are each run REPEATS times and the medians compared (one timing on a shared 2-core
machine swings by tens of percent). Prints the figures and logs them to MLflow (`tinymlops-bench`).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' project scaffold
from tests.support.project import make_project  # noqa: E402

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))


def bare_work(params, prepared: Path, work: Path) -> float:
    """The pipeline's library work, called directly: train, watermark, int8, evaluate, verify the
    watermark, one signed bundle per class, HIL on every profile. No Prefect, MLflow or DVC."""
    from tinymlops.bundle import build_bundle, ensure_dev_keys, load_signer, load_trust
    from tinymlops.device import hil
    from tinymlops.device.profiles import load_profiles
    from tinymlops.ml.data.split import load_meta, load_split
    from tinymlops.ml.evaluate import evaluate
    from tinymlops.ml.model.train import train
    from tinymlops.ml.quantize import quantize
    from tinymlops.ml.watermark import WatermarkConfig, ensure_dev_key, verify_tflite
    from tinymlops.ml.watermark.embed import embed

    meta = load_meta(prepared)
    tr, va, te = (load_split(prepared, s) for s in ("train", "val", "test"))
    wm_config, profiles = WatermarkConfig.load_from(REPO), load_profiles(REPO)
    key, _ = ensure_dev_key(work / "owner.key", 1, 1)
    keys = ensure_dev_keys(work / "keys")
    signer, trust = load_signer(keys.dir), load_trust(keys.root_public)
    start = time.perf_counter()
    model, _ = train(tr, va, len(meta.labels), params)
    marked, _ = embed(model, tr, va, key, wm_config, params.seed)
    _, int8 = quantize(marked, tr, va, params)
    evaluate(int8, te, meta.labels, params.evaluate.tflm_arena_bytes, marked)
    verify_tflite(int8, key, wm_config)
    selftest = hil.golden_vectors(int8, hil.quantized_test(int8, te), n=8, tolerance=1)
    for profile in profiles:
        draft = hil.manifest_draft(int8, profile, model_name="bench", model_version="1", sequence=1, selftest=selftest)
        bundle = work / "bundles" / f"{profile.name}.bundle"
        build_bundle(int8, draft, signer, bundle)
        hil.run_hil(bundle, profile, trust, te, work / "devices")
    return time.perf_counter() - start


def pipeline_run(root: Path):
    os.environ["TINYMLOPS_HOME"] = str(root / ".tinymlops")
    from flows.pipeline import pipeline
    from tasks.context import project

    start = time.perf_counter()
    with project(root):
        summary = pipeline(rollout_devices=0)  # like the bare work: no fleet
    return time.perf_counter() - start, summary


def task_times(flow_run_id: str) -> list[tuple[str, float]]:
    """Per-task wall time of one flow run, as the Prefect server recorded it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    timed = [(r.name.rsplit("-", 1)[0], (r.end_time - r.start_time).total_seconds()) for r in runs if r.end_time]
    return sorted(timed, key=lambda t: -t[1])


def main() -> None:
    from tinymlops.pipeline import stages
    from tinymlops.settings import Environment, TrackingConfig, load_params
    from tinymlops.tracking import Tracker

    work = Path(tempfile.mkdtemp(prefix="tinymlops-bench-"))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["PREFECT_HOME"] = str(work / "prefect")  # cold: a brand-new Prefect database
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    (work / "prefect").mkdir()
    params = load_params(REPO / "params.yaml")

    stages.ingest(params, REPO, work / "raw")
    stages.prepare(params, work / "raw", work / "prepared")
    bare = statistics.median(bare_work(params, work / "prepared", work) for _ in range(REPEATS))
    project = make_project(work / "project")
    cold, summary = pipeline_run(project)
    warm_runs = []
    for _ in range(REPEATS):
        shutil.rmtree(project / ".tinymlops" / "cache")  # force a real retrain
        warm_runs.append(pipeline_run(project))
        assert not warm_runs[-1][1].train_cache_hit
    warm, warm_summary = sorted(warm_runs, key=lambda r: r[0])[len(warm_runs) // 2]
    breakdown = task_times(warm_summary.prefect_flow_run_id)
    size_ratio = summary.size_float_bytes / summary.size_int8_bytes

    figures = {
        "bare_seconds": bare,
        "pipeline_cold_seconds": cold,
        "pipeline_warm_seconds": warm,
        "overhead_ratio_cold": cold / bare,
        "overhead_ratio_warm": warm / bare,
        "size_ratio_float_to_int8": size_ratio,
    }
    print("\n== tinymlops overhead benchmark ==")
    print(f"bare work (same library calls)         : {bare:7.2f} s   (median of {REPEATS})")
    print(f"pipeline flow, cold (new Prefect DB)   : {cold:7.2f} s   ratio {cold / bare:.2f}x")
    print(
        f"pipeline flow, warm (server running)   : {warm:7.2f} s   ratio {warm / bare:.2f}x   (goal <= 1.25x, "
        f"median of {REPEATS})"
    )
    print(
        f"model size float -> int8               : {summary.size_float_bytes:,} B -> "
        f"{summary.size_int8_bytes:,} B   ratio {size_ratio:.2f}x"
    )

    print("warm run, per task: " + ", ".join(f"{name} {sec:.2f}s" for name, sec in breakdown))
    print(f"  sum of tasks {sum(t for _, t in breakdown):.2f}s; the rest is flow start/finish and task bookkeeping")

    os.environ.pop("TINYMLOPS_HOME", None)  # log to the checkout's own MLflow store, not the temp projects'
    env = Environment.from_env(REPO)
    tracker = Tracker.start(env, TrackingConfig(experiment="tinymlops-bench"), "overhead", {"bench": "overhead"})
    tracker.metrics(figures)
    tracker.finish(True)
    print(f"logged to MLflow run {tracker.run_id} ({env.tracking_uri})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
