"""The latency/energy estimator: MAC counts from the .tflite, the calibration, the formula."""

from __future__ import annotations

import numpy as np
import pytest

from tinymlops.device.estimate import (
    CALIBRATION,
    calibrated_cycles_per_mac,
    calibration_check,
    estimate,
    op_costs,
)


def test_macs_of_the_default_model_match_its_layers(int8_model: bytes) -> None:
    from tinymlops.ml.quantize import interpreter

    costs = op_costs(int8_model)
    it = interpreter(int8_model)
    tensors = {t["index"]: t["shape"] for t in it.get_tensor_details()}
    for op, cost in zip(it._get_ops_details(), costs, strict=True):
        if op["op_name"] == "CONV_2D":
            out, w = tensors[op["outputs"][0]], tensors[op["inputs"][1]]
            assert cost.macs == int(np.prod(out)) * int(np.prod(w[1:]))
        elif op["op_name"] == "FULLY_CONNECTED":
            w = tensors[op["inputs"][1]]
            assert cost.macs == int(w[0] * w[1])
        else:
            assert cost.macs == 0 and cost.elements > 0


def test_rebuilt_mlperf_tiny_autoencoder_has_the_published_macs() -> None:
    """MLPerf Tiny AD (FC-AutoEncoder 640-128×4-8-128×4-640) rebuilt as int8: 264,192 MACs, 10 ops."""
    import tensorflow as tf

    from tinymlops.ml.quantize import to_int8_tflite

    layers = [tf.keras.Input((640,))]
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        layers.append(tf.keras.layers.Dense(units, activation="relu"))
    layers.append(tf.keras.layers.Dense(640))
    model = to_int8_tflite(tf.keras.Sequential(layers), np.random.default_rng(0).random((16, 640), np.float32))
    costs = op_costs(model)
    assert sum(c.macs for c in costs) == 264_192 == [r for r in _checks() if r.benchmark == "ad"][0].macs
    assert len(costs) == 10


def _checks():
    from tinymlops.device.estimate import CHECKS

    return CHECKS


def test_calibration_reproduces_its_own_result_and_reports_the_others() -> None:
    cpm = calibrated_cycles_per_mac()
    assert cpm == pytest.approx(8.207, abs=1e-3)
    cycles = CALIBRATION.macs * cpm + CALIBRATION.n_ops * 2000
    assert cycles / 120e6 * 1000 == pytest.approx(CALIBRATION.latency_ms)
    checks = {c.benchmark: c for c in calibration_check()}
    assert set(checks) == {"ic", "ad"}
    assert checks["ic"].published_ms == pytest.approx(704.2, abs=0.1)
    assert checks["ic"].error_pct == pytest.approx(21.4, abs=0.1)  # the figure quoted in the docs


def test_estimate_scales_with_clock_and_energy_per_cycle(int8_model: bytes, profiles) -> None:
    costs = op_costs(int8_model)
    l4 = profiles["stm32l4r5"]
    assert l4.cycles_per_mac == pytest.approx(calibrated_cycles_per_mac(), abs=0.01)  # the calibrated board
    base = estimate(costs, l4)
    assert base.macs == sum(c.macs for c in costs) and base.n_ops == len(costs)
    assert base.cycles == round((base.macs + base.elements) * l4.cycles_per_mac + base.n_ops * 2000)
    fast = estimate(costs, l4.model_copy(update={"clock_hz": 2 * l4.clock_hz}))
    assert fast.latency_ms == pytest.approx(base.latency_ms / 2)
    assert fast.energy_uj == pytest.approx(base.energy_uj)  # same cycles, same energy per cycle
    assert base.energy_uj == pytest.approx(base.cycles * l4.energy_pj_per_cycle * 1e-6)
    assert estimate(costs, profiles["stm32h7a3"]).latency_ms < base.latency_ms
