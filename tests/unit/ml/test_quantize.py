"""The int8 model the pipeline ships: full-integer end to end, calibrated on the data's real range,
small, and made of ops TFLite Micro has; broken model files fail with one line naming them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinymlops.errors import ModelError
from tinymlops.ml.data.split import Split, load_split
from tinymlops.ml.data.validate import content_hashes
from tinymlops.ml.quantize import ModelInfo, inspect, interpreter, read_tflite, representative
from tinymlops.pipeline import stages
from tinymlops.util.io import sha256_file

# Ops the int8 digits model may use; all have int8 reference kernels in TFLite Micro.
INT8_OPS = {
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "MAX_POOL_2D",
    "AVERAGE_POOL_2D",
    "MEAN",
    "RESHAPE",
    "FULLY_CONNECTED",
    "SOFTMAX",
}


@pytest.fixture(scope="module")
def int8_info(tflite_dir: Path) -> ModelInfo:
    return inspect((tflite_dir / stages.INT8_TFLITE).read_bytes())


def test_int8_model_inputs_and_outputs_are_int8(int8_info: ModelInfo) -> None:
    (inp,) = int8_info.inputs
    (out,) = int8_info.outputs
    assert inp.dtype == "int8" and out.dtype == "int8"
    assert inp.shape == [1, 8, 8, 1]
    assert out.shape == [1, 10]


def test_int8_input_is_calibrated_on_unit_range(int8_info: ModelInfo) -> None:
    """Inputs are scaled to [0, 1], so 0 ↦ −128 and 1 ↦ 127: scale 1/255, zero point −128."""
    inp = int8_info.inputs[0]
    assert inp.scale == pytest.approx(1 / 255, rel=1e-5)
    assert inp.zero_point == -128


def test_int8_softmax_output_quantization(int8_info: ModelInfo) -> None:
    out = int8_info.outputs[0]
    assert out.scale == pytest.approx(1 / 256) and out.zero_point == -128  # TFLite's fixed int8 softmax


def test_int8_ops_are_micro_friendly(int8_info: ModelInfo) -> None:
    ops = set(int8_info.ops)
    assert ops <= INT8_OPS, f"unexpected ops {ops - INT8_OPS}"
    assert {"CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= ops
    assert not ops & {"QUANTIZE", "DEQUANTIZE"}  # no float island anywhere in the graph


def test_int8_model_has_no_float_tensors(tflite_dir: Path) -> None:
    it = interpreter((tflite_dir / stages.INT8_TFLITE).read_bytes())
    dtypes = {np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
    assert dtypes <= {"int8", "int32"}, dtypes  # int32 only for biases and shapes


def test_float_model_is_float(tflite_dir: Path) -> None:
    """The contrast case: inspect reports the float model's float32 input, so the int8 checks bite."""
    info = inspect((tflite_dir / stages.FLOAT_TFLITE).read_bytes())
    assert info.inputs[0].dtype == "float32" and info.outputs[0].dtype == "float32"


def test_int8_much_smaller_than_float(tflite_dir: Path, int8_info: ModelInfo) -> None:
    float_size = (tflite_dir / stages.FLOAT_TFLITE).stat().st_size
    int8_size = (tflite_dir / stages.INT8_TFLITE).stat().st_size
    assert int8_info.size_bytes == int8_size
    assert float_size / int8_size > 2.5


def test_inspect_identifies_the_file(tflite_dir: Path, int8_info: ModelInfo) -> None:
    assert int8_info.sha256 == sha256_file(tflite_dir / stages.INT8_TFLITE)
    assert inspect(read_tflite(tflite_dir / stages.INT8_TFLITE)) == int8_info  # read_tflite returns the bytes


def test_quantize_report_matches_files(tflite_dir: Path, int8_info: ModelInfo) -> None:
    report = stages.read_quantize_report(tflite_dir)
    assert report.mode == "ptq"
    assert report.int8_model == int8_info
    assert report.size_ratio > 2.5


# -- broken model files -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [b"garbage" * 20, b"", b"\x00" * 64, b"1234TFL3" + bytes(100)],
    ids=["garbage", "empty", "zeros", "bad_flatbuffer"],
)
def test_inspect_rejects_non_models(data: bytes) -> None:
    with pytest.raises(ModelError) as info:
        inspect(data, source="uploads/thing.tflite")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("uploads/thing.tflite: not a valid TFLite model")


def test_read_tflite_on_text_file(tmp_path: Path) -> None:
    path = tmp_path / "model.tflite"
    path.write_text("this is a README, not a model\n")
    with pytest.raises(ModelError) as info:
        read_tflite(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{path}: not a valid TFLite model")


def test_read_tflite_on_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.tflite"
    with pytest.raises(ModelError) as info:
        read_tflite(path)
    assert str(info.value) == f"{path}: file not found"


# -- representative (calibration) data ------------------------------------------------------------------
def toy_split(n: int = 50) -> Split:
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2, 1) / (n * 4)
    return Split(x=x, y=np.zeros(n, np.int32))


def test_representative_is_a_seeded_subset() -> None:
    train = toy_split()
    a = representative(train, 10, seed=42)
    assert a.shape == (10, 2, 2, 1)
    np.testing.assert_array_equal(a, representative(train, 10, seed=42))
    assert not np.array_equal(a, representative(train, 10, seed=43))
    rows = {r.tobytes() for r in train.x}
    assert all(r.tobytes() in rows for r in a)
    assert len({r.tobytes() for r in a}) == 10  # without replacement


def test_representative_caps_at_split_size() -> None:
    train = toy_split(12)
    np.testing.assert_array_equal(representative(train, 500, seed=0), train.x)


def test_representative_draws_only_from_train(prepared_dir: Path) -> None:
    """Calibration on the real split: every sample is a train sample and none is in val or test."""
    train = load_split(prepared_dir, "train")
    sample = representative(train, 200, seed=42)
    drawn = set(content_hashes(sample))
    assert len(drawn) == 200
    assert drawn <= set(content_hashes(train.x))
    for other in ("val", "test"):
        assert not drawn & set(content_hashes(load_split(prepared_dir, other).x))
