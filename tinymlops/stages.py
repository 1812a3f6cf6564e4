"""The pipeline's stages as plain functions over files.

`dvc repro` runs them through the CLI (dvc.yaml) and the Prefect flow runs them through tasks/:
one implementation, two drivers. Each stage reads its inputs from directories and writes its
outputs atomically into one directory.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from tinymlops.data import registry, split, validate
from tinymlops.errors import ModelError
from tinymlops.evaluate import EvaluationReport, plot_confusion, plot_history
from tinymlops.evaluate import evaluate as evaluate_model
from tinymlops.io import atomic_dir, write_bytes, write_json
from tinymlops.model import train as training
from tinymlops.model.train import EpochCallback, TrainResult
from tinymlops.quantize import ModelInfo, inspect, read_tflite
from tinymlops.quantize import quantize as quantize_model
from tinymlops.settings import PipelineParams

# Where `dvc repro` keeps stage outputs (the flow keeps models in its content-addressed cache).
RAW_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
MODEL_DIR = Path("models/keras")
TFLITE_DIR = Path("models/tflite")
REPORT_DIR = Path("reports")

TRAIN_REPORT = "train.json"
TRAINING_CURVES = "training_curves.png"
FLOAT_TFLITE = "model_float.tflite"
INT8_TFLITE = "model_int8.tflite"
QUANT_REPORT = "quantization.json"
EVAL_REPORT = "evaluation.json"
METRICS_FILE = "metrics.json"
CONFUSION_PNG = "confusion_matrix.png"


class QuantizeReport(BaseModel):
    mode: str
    float_model: ModelInfo
    int8_model: ModelInfo

    @property
    def size_ratio(self) -> float:
        return self.float_model.size_bytes / self.int8_model.size_bytes


def ingest(params: PipelineParams, root: Path, raw_dir: Path) -> Path:
    return registry.ingest(params.data, root, raw_dir)


def validate_raw(params: PipelineParams, raw_dir: Path) -> validate.ValidationReport:
    return validate.validate_dataset(registry.read_raw(raw_dir), params.data.min_class_share)


def prepare(params: PipelineParams, raw_dir: Path, prepared_dir: Path) -> split.PreparedMeta:
    """Validate raw data, then split it; raises DataError naming the first failed check."""
    ds = registry.read_raw(raw_dir)
    report = validate.validate_dataset(ds, params.data.min_class_share)
    return split.prepare(ds, report, params.data, params.seed, prepared_dir)


def train(
    params: PipelineParams, prepared_dir: Path, out_dir: Path, on_epoch: EpochCallback | None = None
) -> TrainResult:
    meta = split.load_meta(prepared_dir)
    model, result = training.train(
        split.load_split(prepared_dir, "train"),
        split.load_split(prepared_dir, "val"),
        len(meta.labels),
        params,
        on_epoch,
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
