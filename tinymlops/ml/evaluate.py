"""Accuracy of float, int8-TFLite and int8-TFLM on the test split, their parity, and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from tinymlops.device.image.format import OPS as RUNTIME_OPS
from tinymlops.errors import ModelError, UnsupportedModel
from tinymlops.ml.data.split import Split
from tinymlops.ml.inference import quantize_input, run_tflite, run_tflm
from tinymlops.ml.quantize import ModelInfo, inspect
from tinymlops.util.plotting import png


class Parity(BaseModel):
    """How closely two int8 runtimes agree, on raw int8 outputs."""

    top1_agreement: float
    max_abs_diff: int
    n: int


class EvaluationReport(BaseModel):
    n_test: int
    labels: list[str]
    accuracy_float: float | None  # None when only the .tflite was given
    accuracy_int8_tflite: float
    accuracy_int8_tflm: float
    accuracy_drop: float | None  # float − int8 (TFLM), in accuracy units (0.01 = 1 point)
    tflite_vs_tflm: Parity
    confusion_int8: list[list[int]]  # rows: true class, columns: predicted (TFLM)


def parity(a: np.ndarray, b: np.ndarray) -> Parity:
    if a.shape != b.shape:
        raise ValueError(f"parity needs equal shapes, got {a.shape} and {b.shape}")
    diff = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return Parity(
        top1_agreement=float(np.mean(a.argmax(1) == b.argmax(1))) if len(a) else 1.0,
        max_abs_diff=int(diff.max()) if diff.size else 0,
        n=int(len(a)),
    )


def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(y == pred)) if len(y) else 0.0


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y.astype(int), pred.astype(int)), 1)
    return cm


def runnable_int8(info: ModelInfo, source: str = "model") -> None:
    """Refuse, in one line naming `source`, a model the device runtime cannot run: float input or
    output tensors, or an op outside the runtime's op set (device/image/format.py)."""
    for tensor in (*info.inputs, *info.outputs):
        if tensor.dtype != "int8":
            raise UnsupportedModel(
                f"{source}: tensor {tensor.name!r} is {tensor.dtype}, not int8: a float model; "
                "evaluate takes the full-integer int8 .tflite (quantize first)"
            )
    outside = [op for op in info.ops if op not in RUNTIME_OPS]
    if outside:
        raise UnsupportedModel(
            f"{source}: op {', '.join(outside)} is not in the device runtime's op set "
            f"({', '.join(sorted(RUNTIME_OPS))})"
        )


def evaluate(
    int8_model: bytes, test: Split, labels: list[str], arena_bytes: int, keras_model=None, source: str = "model"
) -> EvaluationReport:
    info = inspect(int8_model, source)
    runnable_int8(info, source)
    if list(test.x.shape[1:]) != info.inputs[0].shape[1:]:
        raise ModelError(f"model expects inputs {info.inputs[0].shape[1:]}, test data has {list(test.x.shape[1:])}")
    xq = quantize_input(test.x, info.inputs[0])
    tflite_out = run_tflite(int8_model, xq)
    tflm_out = run_tflm(int8_model, xq, arena_bytes)
    acc_tflm = accuracy(test.y, tflm_out.argmax(1))
    acc_float = None if keras_model is None else accuracy(test.y, keras_model.predict(test.x, verbose=0).argmax(1))
    return EvaluationReport(
        n_test=int(len(test.y)),
        labels=labels,
        accuracy_float=acc_float,
        accuracy_int8_tflite=accuracy(test.y, tflite_out.argmax(1)),
        accuracy_int8_tflm=acc_tflm,
        accuracy_drop=None if acc_float is None else acc_float - acc_tflm,
        tflite_vs_tflm=parity(tflite_out, tflm_out),
        confusion_int8=confusion_matrix(test.y, tflm_out.argmax(1), len(labels)).tolist(),
    )


def plot_confusion(report: EvaluationReport, path: Path) -> Path:
    cm = np.array(report.confusion_int8)
    with png(path, figsize=(5.5, 4.8)) as (fig, ax):
        _draw_confusion(fig, ax, cm, report)
    return Path(path)


def _draw_confusion(fig: Any, ax: Any, cm: np.ndarray, report: EvaluationReport) -> None:
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ticks = range(len(report.labels))
    ax.set_xticks(ticks, report.labels)
    ax.set_yticks(ticks, report.labels)
    ax.set_xlabel("predicted (int8, TFLite Micro)")
    ax.set_ylabel("true class")
    ax.set_title(f"int8 accuracy {report.accuracy_int8_tflm:.3f} on {report.n_test} test samples")
    for (i, j), v in np.ndenumerate(cm):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > cm.max() / 2 else "black")


def plot_history(history: dict[str, list[float]], path: Path) -> Path:
    with png(path, 1, 2, figsize=(8, 3.2)) as (_, (loss, acc)):
        for key, ax in (("loss", loss), ("accuracy", acc)):
            for prefix in ("", "val_"):
                if prefix + key in history:
                    ax.plot(range(1, len(history[prefix + key]) + 1), history[prefix + key], label=prefix + key)
            ax.set_xlabel("epoch")
            ax.set_title(key)
            ax.legend()
    return Path(path)
