"""Watermarking small datasets (issue 15 item 5): what the mark costs on 80 samples, fixed vs adaptive.

Each set is split 56 train / 16 val / 8 test, the pipeline's model (params.yaml, trained longer:
2 batches an epoch) learns it, then the owner key is embedded twice from the same base: the fixed
plan (configs/watermark.yaml as it was: every trigger, no replay, embed_epochs) and the adaptive
plan (tinymlops.ml.watermark.adaptive). Per set: val accuracy unmarked / fixed / adaptive, the plan
chosen (or the refusal), and, on the adaptive model's int8 file (PTQ), the owner test's p-value on
the trigger prefix the plan marked (test 2 on the 8 test windows when the set has ≥ 7 classes).
Sets: `imu80-s1`, `imu80-s3` (tests/support/small_data.imu_like, BasicMotions-sized: 4 classes,
(48, 1, 3) windows) and `digits80-s0`, `digits80-s1` (80 random scikit-learn digits, 10 classes).
Prints a table and logs every figure to MLflow (experiment tinymlops-bench, run `watermark-small`).

    .venv/bin/python bench/watermark.py --small-data      (~3 minutes on the shared 2-core machine)
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tinymlops  # noqa: F401,E402  (TF_USE_LEGACY_KERAS before TensorFlow)
from tests.support.small_data import digits_subset, imu_like  # noqa: E402
from tests.support.wm_keys import fixed_key  # noqa: E402

N_TRAIN, N_VAL = 56, 16
SETS = {
    "imu80-s1": lambda: (imu_like(seed=1), 4),
    "imu80-s3": lambda: (imu_like(seed=3), 4),
    "digits80-s0": lambda: (digits_subset(seed=0), 10),
    "digits80-s1": lambda: (digits_subset(seed=1), 10),
}


def measure(name: str, params, config, key) -> dict[str, float | str]:
    from tinymlops.ml.data.split import Split
    from tinymlops.ml.model.train import train as train_model
    from tinymlops.ml.quantize import to_int8_tflite
    from tinymlops.ml.watermark.adaptive import embed_adaptive
    from tinymlops.ml.watermark.embed import embed
    from tinymlops.ml.watermark.ownership import verify_ownership
    from tinymlops.ml.watermark.verify import tflite_predict

    (x, y), k = SETS[name]()
    train, val = (
        Split(x=x[:N_TRAIN], y=y[:N_TRAIN]),
        Split(x=x[N_TRAIN : N_TRAIN + N_VAL], y=y[N_TRAIN : N_TRAIN + N_VAL]),
    )
    test = x[N_TRAIN + N_VAL :]
    base, _ = train_model(train, val, k, params)
    _, fixed = embed(base, train, val, key, config, params.seed)
    started = time.perf_counter()
    marked, report = embed_adaptive(base, train, val, key, config, params.seed)
    seconds = time.perf_counter() - started
    out: dict[str, float | str] = {
        "val_unmarked": fixed.val_accuracy_before,
        "val_fixed": fixed.val_accuracy_after,
        "fixed_cost_pt": fixed.accuracy_cost * 100,
        "attempts": len(report.attempts),
        "min_triggers": report.min_triggers,
        "accepted": float(report.accepted),
        "adaptive_seconds": seconds,
        "reason": report.reason,
    }
    shown = report.attempts[report.chosen] if report.chosen is not None else report.best()
    out.update(
        val_marked=shown.val_accuracy_after,
        cost_pt=shown.accuracy_cost * 100,
        triggers=shown.plan.n_triggers,
        trigger_share=shown.plan.trigger_share,
        clean_repeats=shown.plan.clean_repeats,
        epochs=shown.plan.epochs,
    )
    if marked is not None:
        int8 = to_int8_tflite(marked, train.x)
        predict, shape, n_classes = tflite_predict(int8, f"{name} int8")
        checked = config.with_plan(shown.plan.n_triggers)
        owned = verify_ownership(predict, key, checked, shape, n_classes, test, source=f"{name} int8")
        out.update(p_int8=owned.p_value, int8_matches=owned.watermark.matches, int8_owned=float(owned.owned))
    return out


def run() -> int:
    from tinymlops.ml.watermark.config import WatermarkConfig
    from tinymlops.settings import Environment, TrackingConfig, load_params
    from tinymlops.tracking import Tracker

    started = time.perf_counter()
    params = load_params(REPO / "params.yaml")
    train = params.train.model_copy(update={"epochs": 150, "early_stopping_patience": 40})
    params = params.model_copy(update={"train": train})
    config = WatermarkConfig.load_from(REPO)
    key = fixed_key("bench-small-data", 1, 1)
    rows = {}
    for name in SETS:
        print(f"{name} …", flush=True)
        rows[name] = measure(name, params, config, key)
        print(f"  {rows[name]['reason']}", flush=True)
    allowed = config.max_accuracy_cost * 100
    print(f"\n== watermark on 80 samples (56 train / 16 val; one val sample = 6.25 pt; allowed {allowed:.1f} pt) ==")
    print(f"{'set':12} {'unmarked':>8} {'fixed':>6} {'adapt':>6} {'cost pt':>7} {'plan':24} {'tries':>5} {'p int8':>8}")
    for name, r in rows.items():
        plan = f"{r['triggers']} trig ≤{r['trigger_share']:.0%} ×{r['clean_repeats']} {r['epochs']} ep"
        p = f"{r['p_int8']:.1e}" if "p_int8" in r else "refused"
        print(
            f"{name:12} {r['val_unmarked']:8.4f} {r['val_fixed']:6.4f} {r['val_marked']:6.4f} {r['cost_pt']:+7.2f} "
            f"{plan:24} {r['attempts']:5} {p:>8}"
        )
    figures = {
        f"wm_small_{name.replace('-', '_')}_{field}": (math.log10(max(v, 1e-300)) if field == "p_int8" else v)
        for name, r in rows.items()
        for field, v in r.items()
        if isinstance(v, float | int) and not isinstance(v, bool)
    }
    figures = {(k.replace("_p_int8", "_log10_p_int8")): float(v) for k, v in figures.items()}
    figures["wm_small_seconds"] = time.perf_counter() - started
    os.environ.pop("TINYMLOPS_HOME", None)  # the checkout's own MLflow store
    env = Environment.from_env(REPO)
    tags = {"bench": "watermark-small", **{f"watermark.small.{n}": str(r["reason"])[:4000] for n, r in rows.items()}}
    tracker = Tracker.start(env, TrackingConfig(experiment="tinymlops-bench"), "watermark-small", tags)
    tracker.metrics(figures)
    tracker.finish(True)
    print(f"bench {figures['wm_small_seconds']:.0f} s; logged to MLflow run {tracker.run_id} ({env.tracking_uri})")
    return 0


if __name__ == "__main__":
    sys.exit(run())
