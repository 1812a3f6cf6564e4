"""Model tests: accuracy floors, int8 parity on TFLite Micro, determinism, the QAT path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinymlops.device.tflm import ArenaTooSmall, TFLMRuntime
from tinymlops.ml.data.split import load_split
from tinymlops.pipeline import stages
from tinymlops.settings import PipelineParams
from tinymlops.util.io import sha256_file


@pytest.fixture(scope="module")
def report(params, prepared_dir: Path, trained_dir: Path, tflite_dir: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    return stages.evaluate(params, prepared_dir, tflite_dir / stages.INT8_TFLITE, out, trained_dir)


def test_float_accuracy_floor(report) -> None:
    assert report.accuracy_float >= 0.95


def test_int8_within_one_point_of_float(report, params) -> None:
    assert report.accuracy_drop <= 0.01
    assert stages.quality_gates(params, report) == []


def test_tflm_agrees_with_tflite_on_whole_test_split(report) -> None:
    assert report.tflite_vs_tflm.n == report.n_test == 360
    assert report.tflite_vs_tflm.top1_agreement >= 0.99
    assert report.tflite_vs_tflm.max_abs_diff <= 2  # reference kernels on both sides: at most rounding
    assert report.accuracy_int8_tflm >= 0.95


def test_training_and_conversion_are_deterministic(params, prepared_dir, tflite_dir, tmp_path) -> None:
    """Same data, params and code → the same int8 bytes, not merely similar accuracy."""
    stages.train(params, prepared_dir, tmp_path / "keras")
    stages.quantize(params, prepared_dir, tmp_path / "keras", tmp_path / "tflite")
    assert sha256_file(tmp_path / "tflite" / stages.INT8_TFLITE) == sha256_file(tflite_dir / stages.INT8_TFLITE)


def test_quantization_aware_training_gives_a_working_int8_model(params, prepared_dir, trained_dir, tmp_path) -> None:
    qat = params.model_copy(update={"quantize": params.quantize.model_copy(update={"mode": "qat", "qat_epochs": 2})})
    quant = stages.quantize(qat, prepared_dir, trained_dir, tmp_path / "qat")
    assert quant.mode == "qat" and quant.int8_model.inputs[0].dtype == "int8"
    report = stages.evaluate(qat, prepared_dir, tmp_path / "qat" / stages.INT8_TFLITE, tmp_path / "eval", trained_dir)
    assert report.accuracy_int8_tflm >= 0.95
    assert report.tflite_vs_tflm.top1_agreement >= 0.99


def test_tflm_refuses_a_model_that_does_not_fit_its_arena(tflite_dir: Path) -> None:
    model = (tflite_dir / stages.INT8_TFLITE).read_bytes()
    with pytest.raises(ArenaTooSmall, match="2048-byte arena"):
        TFLMRuntime(model, 2048)
    TFLMRuntime(model, 16 * 1024)  # and fits a modest one


@pytest.mark.parametrize("architecture", ["ds_cnn", "mlp"])
def test_every_architecture_quantizes_and_runs_on_tflm(architecture, params, prepared_dir, tmp_path) -> None:
    """Architectures are chosen by name; each must survive int8 conversion and run on TFLM."""
    short = PipelineParams.model_validate(
        params.model_dump()
        | {"model": {"architecture": architecture}, "train": params.train.model_dump() | {"epochs": 10}}
    )
    stages.train(short, prepared_dir, tmp_path / "keras")
    stages.quantize(short, prepared_dir, tmp_path / "keras", tmp_path / "tflite")
    report = stages.evaluate(short, prepared_dir, tmp_path / "tflite" / stages.INT8_TFLITE, tmp_path / "e")
    assert report.accuracy_int8_tflm > 0.5  # 10 epochs: learning, not yet at its best
    assert report.tflite_vs_tflm.top1_agreement >= 0.98
    assert len(load_split(prepared_dir, "test").y) == report.n_test
