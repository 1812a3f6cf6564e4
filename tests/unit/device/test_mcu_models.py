"""End-to-end bit-exactness of the firmware on every emulated core: the default model (trained on
digits), every architecture in the registry, and networks shaped like MLPerf Tiny's (random
weights). Where a part's real memory cannot hold a network, the same core runs it in a copy of the
profile with more flash and RAM (the refusal itself is tested in test_mcu_faults.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.mlperf_models import MLPERF, int8_model, roomy
from tinymlops.device import tflm
from tinymlops.device.image import compile_model
from tinymlops.device.mcu import emulated, run_model


@pytest.fixture(scope="module")
def cores(profiles):
    chosen = {}
    for p in profiles.values():
        if emulated(p) and p.core not in chosen:
            chosen[p.core] = p
    return list(chosen.values())


def assert_exact(model: bytes, xs: np.ndarray, cores) -> dict[str, float]:
    ref = tflm.run(model, xs, 4 << 20).reshape(len(xs), -1)
    image = compile_model(model).data
    cycles = {}
    for p in cores:
        run = run_model(roomy(p, image), image, xs)
        assert run.outputs.shape == ref.shape
        diff = np.abs(run.outputs.astype(np.int32) - ref.astype(np.int32))
        assert diff.max() == 0, f"{p.name}: {np.count_nonzero(diff)} bytes differ, max |d| {diff.max()}"
        assert run.cycles_mean > 0 and run.instructions > 0 and run.stack_bytes > 0
        cycles[p.core] = run.cycles_mean
    return cycles


def test_default_model_is_bit_exact_on_every_core(int8_model, test_xq, cores):
    cycles = assert_exact(int8_model, test_xq[:24], cores)
    assert cycles["cortex-m7"] < cycles["cortex-m4f"] < cycles["cortex-m0plus"]  # dual issue; SIMD vs none


@pytest.mark.parametrize("arch", ["cnn_small", "ds_cnn", "mlp"])
def test_registry_architecture_is_bit_exact(arch, cores):
    import tensorflow as tf

    from tinymlops.ml.model.architectures import ARCHITECTURES, build
    from tinymlops.ml.quantize import to_int8_tflite

    assert arch in ARCHITECTURES
    tf.keras.utils.set_random_seed(1)
    model = build(arch, (8, 8, 1), 10)
    rng = np.random.default_rng(1)
    tfl = to_int8_tflite(model, rng.uniform(0, 16, (32, 8, 8, 1)).astype(np.float32))
    xs = rng.integers(-128, 128, (6, 8, 8, 1), dtype=np.int8)
    assert_exact(tfl, xs, cores)


def test_registry_is_covered():
    from tinymlops.ml.model.architectures import ARCHITECTURES

    assert set(ARCHITECTURES) == {"cnn_small", "ds_cnn", "mlp"}, "a new architecture needs its firmware test"


@pytest.mark.parametrize(
    "name", ["ds_cnn_kws", "fc_autoencoder_ad", pytest.param("resnet8_ic", marks=pytest.mark.slow)]
)
def test_mlperf_shaped_network_is_bit_exact(name, cores):
    model, shape = int8_model(MLPERF[name])
    xs = np.random.default_rng(2).integers(-128, 128, (1, *shape), dtype=np.int8)
    assert_exact(model, xs, cores)
