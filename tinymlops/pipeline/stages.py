"""The pipeline's stages as plain functions over files.

`dvc repro` runs them through the CLI (dvc.yaml) and the Prefect flow runs them through tasks/:
one implementation, two drivers. Each stage reads its inputs from directories and writes its
outputs atomically into one directory.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from tinymlops.errors import ModelError
from tinymlops.ml.data import split
from tinymlops.ml.evaluate import EvaluationReport, plot_confusion, plot_history
from tinymlops.ml.evaluate import evaluate as evaluate_model
from tinymlops.ml.model import train as training
from tinymlops.ml.model.train import EpochCallback, TrainResult
from tinymlops.ml.quantize import ModelInfo, inspect, read_tflite
from tinymlops.ml.quantize import quantize as quantize_model
from tinymlops.pipeline.data import ingest, prepare, validate_raw  # noqa: F401  (the data stages, re-exported)
from tinymlops.settings import PipelineParams
from tinymlops.util.io import atomic_dir, write_bytes, write_json
from tinymlops.util.layout import (  # noqa: F401  (re-exported: the stages' file names)
    CONFUSION_PNG,
    EVAL_REPORT,
    FLOAT_TFLITE,
    INT8_TFLITE,
    METRICS_FILE,
    MODEL_DIR,
    PREPARED_DIR,
    QUANT_REPORT,
    RAW_DIR,
    REPORT_DIR,
    TFLITE_DIR,
    TRAIN_REPORT,
    TRAINING_CURVES,
)


class QuantizeReport(BaseModel):
    mode: str
    float_model: ModelInfo
    int8_model: ModelInfo

    @property
    def size_ratio(self) -> float:
        return self.float_model.size_bytes / self.int8_model.size_bytes


def train(
    params: PipelineParams,
    prepared_dir: Path,
    out_dir: Path,
    on_epoch: EpochCallback | None = None,
    *,
    root: Path | None = None,
    architecture: str | None = None,
    options: dict[str, float | int] | None = None,
) -> TrainResult:
    """Train (the main model, or a variant: `architecture` scaled by `options`); `root` is the
    project, where a `module:function` builder's module is looked for."""
    meta = split.load_meta(prepared_dir)
    model, result = training.train(
        split.load_split(prepared_dir, "train"),
        split.load_split(prepared_dir, "val"),
        len(meta.labels),
        params,
        on_epoch,
        architecture=architecture,
        options=options,
        search_path=root,
    )
    with atomic_dir(out_dir) as tmp:
        training.save(model, tmp)
        write_json(tmp / TRAIN_REPORT, result.model_dump())
        plot_history(result.history, tmp / TRAINING_CURVES)
    return result


def read_train_report(model_dir: Path) -> TrainResult:
    return TrainResult.model_validate_json((Path(model_dir) / TRAIN_REPORT).read_text())


def quantize(
    params: PipelineParams, prepared_dir: Path, model_dir: Path, out_dir: Path, on_epoch: EpochCallback | None = None
) -> QuantizeReport:
    model = training.load(model_dir)
    train_split, val_split = split.load_split(prepared_dir, "train"), split.load_split(prepared_dir, "val")
    float_bytes, int8_bytes = quantize_model(model, train_split, val_split, params, on_epoch)
    report = QuantizeReport(mode=params.quantize.mode, float_model=inspect(float_bytes), int8_model=inspect(int8_bytes))
    with atomic_dir(out_dir) as tmp:
        write_bytes(tmp / FLOAT_TFLITE, float_bytes)
        write_bytes(tmp / INT8_TFLITE, int8_bytes)
        write_json(tmp / QUANT_REPORT, report.model_dump())
    return report


def read_quantize_report(tflite_dir: Path) -> QuantizeReport:
    return QuantizeReport.model_validate_json((Path(tflite_dir) / QUANT_REPORT).read_text())


def evaluate(
    params: PipelineParams, prepared_dir: Path, int8_path: Path, out_dir: Path, model_dir: Path | None = None
) -> EvaluationReport:
    """Evaluate an int8 .tflite (and, given its float Keras model, the float baseline) on the
    test split; writes evaluation.json, metrics.json and the confusion-matrix PNG to out_dir."""
    meta = split.load_meta(prepared_dir)
    report = evaluate_model(
        read_tflite(int8_path),
        split.load_split(prepared_dir, "test"),
        meta.labels,
        params.evaluate.tflm_arena_bytes,
        training.load(model_dir) if model_dir else None,
        source=str(int8_path),
    )
    out_dir = Path(out_dir)
    write_json(out_dir / EVAL_REPORT, report.model_dump())
    write_json(out_dir / METRICS_FILE, metrics(report, Path(int8_path).stat().st_size))
    plot_confusion(report, out_dir / CONFUSION_PNG)
    return report


def quality_gates(params: PipelineParams, report: EvaluationReport) -> list[str]:
    """Reasons the model must not become a candidate; empty when it may."""
    failures = []
    if report.accuracy_float is None or report.accuracy_drop is None:
        return ["no float baseline to compare the int8 model with"]
    if report.accuracy_float < params.evaluate.min_float_accuracy:
        floor = params.evaluate.min_float_accuracy
        failures.append(f"float accuracy {report.accuracy_float:.4f} < evaluate.min_float_accuracy {floor}")
    if report.accuracy_drop > params.evaluate.max_accuracy_drop:
        limit = params.evaluate.max_accuracy_drop
        failures.append(f"int8 accuracy drop {report.accuracy_drop:.4f} > evaluate.max_accuracy_drop {limit}")
    return failures


def enforce_gates(params: PipelineParams, report: EvaluationReport) -> None:
    failures = quality_gates(params, report)
    if failures:
        raise ModelError("quality gate failed: " + "; ".join(failures))


def metrics(report: EvaluationReport, int8_size: int) -> dict[str, float | None]:
    """The figures `dvc metrics show` reads."""
    return {
        "accuracy_float": report.accuracy_float,
        "accuracy_int8_tflite": report.accuracy_int8_tflite,
        "accuracy_int8_tflm": report.accuracy_int8_tflm,
        "tflm_top1_agreement": report.tflite_vs_tflm.top1_agreement,
        "tflm_max_abs_diff": report.tflite_vs_tflm.max_abs_diff,
        "size_int8_bytes": int8_size,
    }
