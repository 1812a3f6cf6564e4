"""Watermarking a small dataset (issue 15 item 5): on 80 IMU-like windows (56 train, 16 val, 4
classes) the fixed plan (192 triggers over 56 samples) costs more accuracy than watermark.yaml
allows; the adaptive plan either ships a mark the int8 file proves, within the cost, or refuses
with one line. The pipeline's stage refuses loudly (fail) or ships unmarked with the reason on record."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tests.support.paths import REPO
from tests.support.small_data import imu_like
from tests.support.wm_keys import fixed_key

pytestmark = pytest.mark.slow
N_TRAIN, N_VAL = 56, 16


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small set, its trained base model on disk, the fixed plan's and the adaptive plan's results."""
    from tinymlops.ml.data.split import Split
    from tinymlops.ml.model import train as training
    from tinymlops.ml.watermark.adaptive import embed_adaptive
    from tinymlops.ml.watermark.config import WatermarkConfig
    from tinymlops.ml.watermark.embed import embed
    from tinymlops.settings import load_params
    from tinymlops.util.io import write_json, write_npz
    from tinymlops.util.layout import TRAIN_REPORT

    x, y = imu_like()
    train, val = (
        Split(x=x[:N_TRAIN], y=y[:N_TRAIN]),
        Split(x=x[N_TRAIN : N_TRAIN + N_VAL], y=y[N_TRAIN : N_TRAIN + N_VAL]),
    )
    test = Split(x=x[N_TRAIN + N_VAL :], y=y[N_TRAIN + N_VAL :])
    params = load_params(REPO / "params.yaml")
    # 2 batches an epoch: the default patience would stop before the model has learnt the task
    params = params.model_copy(
        update={"train": params.train.model_copy(update={"epochs": 150, "early_stopping_patience": 40})}
    )
    base, result = training.train(train, val, 4, params)
    config, key = WatermarkConfig.load_from(REPO), fixed_key()
    started = time.perf_counter()
    _, fixed = embed(base, train, val, key, config, params.seed)
    marked, adaptive = embed_adaptive(base, train, val, key, config, params.seed)
    print(f"fixed + adaptive embedding: {time.perf_counter() - started:.1f} s; {adaptive.reason}")
    root = tmp_path_factory.mktemp("small")
    for name, split in (("train", train), ("val", val), ("test", test)):
        write_npz(root / "prepared" / f"{name}.npz", x=split.x, y=split.y)
    (root / "model").mkdir()
    training.save(base, root / "model")
    write_json(root / "model" / TRAIN_REPORT, result.model_dump(mode="json"))
    return {
        "params": params,
        "config": config,
        "key": key,
        "base": base,
        "train": train,
        "test": test,
        "fixed": fixed,
        "marked": marked,
        "adaptive": adaptive,
        "root": root,
    }


def test_the_fixed_plan_fails_the_gate_on_the_small_set(small) -> None:
    fixed, config = small["fixed"], small["config"]
    assert fixed.val_accuracy_before >= 0.9  # the unmarked model learnt the task …
    assert fixed.n_triggers == config.triggers == 192 > N_TRAIN
    assert fixed.accuracy_cost > config.max_accuracy_cost  # … and 192 triggers over 56 samples cost too much


def test_the_adaptive_plan_ships_a_proven_mark_within_the_cost_or_refuses_in_one_line(small) -> None:
    from tinymlops.ml.quantize import representative, to_int8_tflite
    from tinymlops.ml.watermark.ownership import verify_ownership
    from tinymlops.ml.watermark.verify import tflite_predict

    report, config = small["adaptive"], small["config"]
    assert report.n_train == N_TRAIN and report.min_triggers == 64 and report.owner_tests == 1  # 4 classes: test 1
    assert 1 <= len(report.attempts) <= config.adapt_attempts
    assert all(a.plan.n_triggers >= report.min_triggers for a in report.attempts)  # never below the floor
    if not report.accepted:
        assert small["marked"] is None and "\n" not in report.reason
        assert report.reason.startswith(f"watermark refused: {N_TRAIN} training samples, 4 classes")
        return
    chosen = report.attempts[report.chosen]
    assert chosen.accuracy_cost <= config.max_accuracy_cost and chosen.p_int8_margin < config.fp_bound
    calibration = representative(small["train"], 56, 0)
    int8 = to_int8_tflite(small["marked"], calibration)
    predict, shape, k = tflite_predict(int8, "small int8")
    checked = config.with_plan(chosen.plan.n_triggers)
    owned = verify_ownership(predict, small["key"], checked, shape, k, small["test"].x, source="small int8")
    print("; ".join(owned.lines()))
    assert owned.owned and owned.p_value < config.fp_bound and owned.profile is None
    assert owned.watermark.n_triggers == chosen.plan.n_triggers and owned.watermark.decoded_payload_id


def test_the_stage_refuses_loudly_or_ships_unmarked_as_configured(small, tmp_path: Path) -> None:
    from tinymlops.ml.model import train as training
    from tinymlops.ml.watermark import WatermarkRefused
    from tinymlops.pipeline import protect

    first = small["adaptive"].attempts[0]
    if first.owned and first.accuracy_cost <= small["config"].max_accuracy_cost:
        pytest.skip("the first plan passed on this machine: one attempt cannot be refused")
    one_try = small["config"].model_copy(update={"adapt_attempts": 1})
    args = (small["params"], small["root"] / "prepared", small["root"] / "model")
    with pytest.raises(WatermarkRefused) as refused:
        protect.embed_watermark(*args, tmp_path / "fail", small["key"], one_try)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"watermark refused: {N_TRAIN} training samples, 4 classes")
    assert "1 plan(s) tried" in message and "watermark.yaml" in message and "on_refusal: ship_unmarked" in message
    assert refused.value.report["accepted"] is False and len(refused.value.report["attempts"]) == 1

    ship = one_try.model_copy(update={"on_refusal": "ship_unmarked"})
    out = tmp_path / "ship"
    out.mkdir()
    protect.embed_watermark(*args, out, small["key"], ship)
    assert protect.refusal(out) == message  # the reason travels with the model …
    assert not (out / protect.EMBED_REPORT).exists()
    shipped = training.load(out)
    for a, b in zip(shipped.get_weights(), small["base"].get_weights(), strict=True):
        assert np.array_equal(a, b)  # … which is the unmarked model, bit for bit
