"""How robust the watermark is, and what it costs: the table issue 3 asks for, measured honestly.

On the prepared digits data and the default model (params.yaml), with a fresh random owner key:
  int8 PTQ        — embed (embed_for_int8), full-integer PTQ, verify the int8 bytes;
  attacker tune   — the attacker fine-tunes the marked float model for 10 epochs on 20 % of the
                    training data (Adam, the training learning rate), then ships PTQ int8;
  pruning 50 %    — tfmot prune_low_magnitude at constant 50 % sparsity, 2 epochs on the attacker's
                    20 % (tfmot applies masks during training), strip_pruning, PTQ int8;
  unmarked × N    — N models trained from scratch with other seeds (same data), PTQ int8, verified
                    with the owner's key: none may be "owned", all p > 1e-3;
  unmarked × keys — one unmarked model asked with K fresh keys: the N models above share one key,
                    so their match counts are correlated; many keys check the p-value's calibration
                    (mean matches should be n/classes);
  accuracy cost   — int8 test accuracy, unmarked vs marked, and marked vs the same fine-tune
                    without triggers (separates "the watermark costs" from "more training helps").
Prints the table and logs every figure to MLflow (experiment `tinymlops-bench`). Takes minutes.

    .venv/bin/python bench/watermark.py [--unmarked 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

REPO = Path(__file__).resolve().parents[1]
ATTACK_SHARE = 0.2
ATTACK_EPOCHS = 10
PRUNE_SPARSITY = 0.5
PRUNE_EPOCHS = 2


def int8_accuracy(int8: bytes, test) -> float:
    from tinymlops.inference import quantize_input, run_tflite
    from tinymlops.quantize import inspect

    xq = quantize_input(test.x, inspect(int8).inputs[0])
    return float(np.mean(run_tflite(int8, xq).argmax(axis=1) == test.y))


def attacker_subset(train, seed: int):
    from tinymlops.data.split import Split

    idx = np.random.default_rng(seed).permutation(len(train.x))[: int(len(train.x) * ATTACK_SHARE)]
    return Split(x=train.x[idx], y=train.y[idx])


def attacker_fine_tune(marked, subset, learning_rate: float, seed: int):
    from tinymlops.model.train import compile_model, seed_everything
    from tinymlops.watermark.embed import copy_model

    seed_everything(seed)
    model = copy_model(marked)
    compile_model(model, learning_rate)
    model.fit(subset.x, subset.y, batch_size=32, epochs=ATTACK_EPOCHS, shuffle=True, verbose=0)
    return model


def prune(marked, subset, learning_rate: float, seed: int):
    import tensorflow_model_optimization as tfmot

    from tinymlops.model.train import compile_model, seed_everything
    from tinymlops.watermark.embed import copy_model

    seed_everything(seed)
    schedule = tfmot.sparsity.keras.ConstantSparsity(PRUNE_SPARSITY, begin_step=0, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(copy_model(marked), pruning_schedule=schedule)
    compile_model(pruned, learning_rate)
    pruned.fit(
        subset.x,
        subset.y,
        batch_size=32,
        epochs=PRUNE_EPOCHS,
        shuffle=True,
        verbose=0,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    kernels = [w for layer in stripped.layers for w in layer.get_weights() if w.ndim > 1]
    sparsity = float(sum(np.sum(k == 0) for k in kernels) / sum(k.size for k in kernels))
    return stripped, sparsity


def clean_fine_tune(model, train, config, seed: int):
    """The embedding fine-tune without triggers: the control for the accuracy cost."""
    from tinymlops.model.train import compile_model, seed_everything
    from tinymlops.watermark.embed import copy_model

    seed_everything(seed)
    control = copy_model(model)
    compile_model(control, config.learning_rate)
    control.fit(train.x, train.y, batch_size=config.batch_size, epochs=config.embed_epochs, shuffle=True, verbose=0)
    return control


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unmarked", type=int, default=20, help="independently trained unmarked models")
    parser.add_argument("--keys", type=int, default=200, help="fresh keys tried on one unmarked model")
    parser.add_argument("--cost-seeds", type=int, default=3, help="embed seeds the accuracy cost is averaged over")
    args = parser.parse_args()

    from tinymlops import stages
    from tinymlops.data.split import load_meta, load_split
    from tinymlops.model.train import train as train_model
    from tinymlops.quantize import representative, to_int8_tflite
    from tinymlops.settings import Environment, TrackingConfig, load_params
    from tinymlops.tracking import Tracker
    from tinymlops.watermark.config import WatermarkConfig
    from tinymlops.watermark.embed import embed, embed_for_int8
    from tinymlops.watermark.key import generate_key
    from tinymlops.watermark.verify import verify_tflite

    work = Path(tempfile.mkdtemp(prefix="tinymlops-wm-bench-"))
    params = load_params(REPO / "params.yaml")
    config = WatermarkConfig.load_from(REPO)
    stages.ingest(params, REPO, work / "raw")
    stages.prepare(params, work / "raw", work / "prepared")
    meta = load_meta(work / "prepared")
    train, val, test = (load_split(work / "prepared", s) for s in ("train", "val", "test"))
    calibration = representative(train, params.quantize.representative_samples, params.seed)

    def to_int8(model) -> bytes:
        return to_int8_tflite(model, calibration)

    key = generate_key(owner_id=1, serial=int(time.time()) & 0xFFFFFFFF)  # fresh: no tuning to one key
    print(f"payload {key.payload_id}; {config.triggers} triggers; training the base model …", flush=True)
    base, _ = train_model(train, val, len(meta.labels), params)
    base_int8 = to_int8(base)

    start = time.perf_counter()
    marked, marked_int8, embed_report = embed_for_int8(base, train, val, key, config, params.seed, to_int8)
    embed_seconds = time.perf_counter() - start
    ptq = embed_report.int8_check
    # One test sample is 0.28 pt here, so the cost is averaged over a few embed seeds, each against
    # a control: the same fine-tune without triggers (more training alone also moves accuracy).
    acc_base = int8_accuracy(base_int8, test)
    marked_accs, control_accs = [], []
    for n, seed in enumerate(range(params.seed, params.seed + args.cost_seeds)):
        model_int8 = marked_int8 if n == 0 else to_int8(embed(base, train, val, key, config, seed)[0])
        marked_accs.append(int8_accuracy(model_int8, test))
        control_accs.append(int8_accuracy(to_int8(clean_fine_tune(base, train, config, seed)), test))
    acc_marked, acc_control = float(np.mean(marked_accs)), float(np.mean(control_accs))
    cost_vs_control = [c - m for c, m in zip(control_accs, marked_accs, strict=True)]

    subset = attacker_subset(train, seed=7)
    print("attacks: fine-tune, pruning …", flush=True)
    tuned_int8 = to_int8(attacker_fine_tune(marked, subset, params.train.learning_rate, seed=7))
    tuned = verify_tflite(tuned_int8, key, config, "attacker fine-tune")
    pruned_model, sparsity = prune(marked, subset, params.train.learning_rate, seed=7)
    pruned_int8 = to_int8(pruned_model)
    pruned = verify_tflite(pruned_int8, key, config, "pruned 50%")

    unmarked = []
    for i, seed in enumerate(range(1000, 1000 + args.unmarked), start=1):
        model, _ = train_model(train, val, len(meta.labels), params.model_copy(update={"seed": seed}))
        report = verify_tflite(to_int8(model), key, config, f"unmarked seed {seed}")
        unmarked.append(report)
        print(f"  unmarked {i}/{args.unmarked}: {report.line()}", flush=True)
    unmarked_p = [r.p_value for r in unmarked]
    print(f"one unmarked model × {args.keys} fresh keys …", flush=True)
    by_key = [verify_tflite(base_int8, generate_key(2, i), config, f"key {i}") for i in range(args.keys)]
    key_matches = [r.matches for r in by_key]

    rows = [
        ("int8 PTQ", f"BER {ptq.ber:.4f}", f"p {ptq.p_value:.2e}", "BER 0", ptq.ber == 0 and ptq.owned),
        (
            f"attacker fine-tune {ATTACK_EPOCHS} ep on 20 %",
            f"BER {tuned.ber:.4f}",
            f"p {tuned.p_value:.2e}",
            "BER ≤ 5 %",
            tuned.ber <= 0.05,
        ),
        (
            f"pruning {sparsity:.0%} (tfmot) + int8",
            f"BER {pruned.ber:.4f}",
            f"p {pruned.p_value:.2e}",
            "BER ≤ 5 %",
            pruned.ber <= 0.05,
        ),
        (
            f"{len(unmarked)} unmarked models",
            f"owned {sum(r.owned for r in unmarked)}",
            f"min p {min(unmarked_p):.3g}" if unmarked else "n/a",
            "none owned, p > 1e-3",
            bool(unmarked) and not any(r.owned for r in unmarked) and min(unmarked_p) > 1e-3,
        ),
        (
            f"unmarked model × {len(by_key)} keys",
            f"owned {sum(r.owned for r in by_key)}",
            f"min p {min(r.p_value for r in by_key):.3g}; matches {np.mean(key_matches):.1f}",
            f"none owned; ~{config.triggers / len(meta.labels):.1f} matches",
            not any(r.owned for r in by_key),
        ),
        (
            f"clean accuracy cost (int8 test, {args.cost_seeds} seeds)",
            f"{(acc_base - acc_marked) * 100:+.2f} pt",
            f"vs clean tune {(acc_control - acc_marked) * 100:+.2f} pt",
            "≤ 0.5 pt",
            acc_base - acc_marked <= 0.005 and acc_control - acc_marked <= 0.005,
        ),
    ]
    print("\n== tinymlops watermark benchmark ==")
    print(f"{'case':40} {'result':14} {'':32} {'goal':22} met")
    for case, result, p, goal, met in rows:
        print(f"{case:40} {result:14} {p:32} {goal:22} {'yes' if met else 'NO'}")
    print(
        f"int8 test accuracy ({len(test.y)} samples): unmarked {acc_base:.4f}, marked {acc_marked:.4f} (mean), "
        f"clean fine-tune {acc_control:.4f} (mean); cost vs clean tune per seed "
        + ", ".join(f"{c * 100:+.2f}" for c in cost_vs_control)
        + " pt; "
        f"trigger matches int8 {ptq.matches}/{ptq.n_triggers}, after fine-tune {tuned.matches}, after pruning "
        f"{pruned.matches}; embed {embed_seconds:.1f} s in {embed_report.rounds} round(s)"
    )

    figures = {
        "wm_ptq_ber": ptq.ber,
        "wm_ptq_p_value": ptq.p_value,
        "wm_ptq_matches": ptq.matches,
        "wm_finetune_ber": tuned.ber,
        "wm_finetune_p_value": tuned.p_value,
        "wm_finetune_matches": tuned.matches,
        "wm_prune_ber": pruned.ber,
        "wm_prune_p_value": pruned.p_value,
        "wm_prune_matches": pruned.matches,
        "wm_prune_sparsity": sparsity,
        "wm_unmarked_models": len(unmarked),
        "wm_unmarked_owned": sum(r.owned for r in unmarked),
        "wm_unmarked_min_p_value": min(unmarked_p) if unmarked else 1.0,
        "wm_unmarked_max_matches": max((r.matches for r in unmarked), default=0),
        "wm_keys_tried": len(by_key),
        "wm_keys_owned": sum(r.owned for r in by_key),
        "wm_keys_min_p_value": min(r.p_value for r in by_key),
        "wm_keys_mean_matches": float(np.mean(key_matches)),
        "wm_accuracy_int8_unmarked": acc_base,
        "wm_accuracy_int8_marked": acc_marked,
        "wm_accuracy_int8_clean_finetune": acc_control,
        "wm_accuracy_cost_pt": (acc_base - acc_marked) * 100,
        "wm_accuracy_cost_vs_clean_finetune_pt": (acc_control - acc_marked) * 100,
        "wm_accuracy_cost_vs_clean_finetune_max_pt": max(cost_vs_control) * 100,
        "wm_embed_seconds": embed_seconds,
        "wm_embed_rounds": embed_report.rounds,
        "wm_triggers": config.triggers,
    }
    os.environ.pop("TINYMLOPS_HOME", None)  # the checkout's own MLflow store
    env = Environment.from_env(REPO)
    tags = {"bench": "watermark", "watermark.payload_id": key.payload_id}  # public id only, never the key
    tracker = Tracker.start(env, TrackingConfig(experiment="tinymlops-bench"), "watermark", tags)
    tracker.metrics(figures)
    for step, report in enumerate(unmarked):
        tracker.metrics({"wm_unmarked_p_value": report.p_value, "wm_unmarked_ber": report.ber}, step=step)
    tracker.finish(True)
    print(f"logged to MLflow run {tracker.run_id} ({env.tracking_uri})")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
