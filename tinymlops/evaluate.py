"""Accuracy of float, int8-TFLite and int8-TFLM on the test split, their parity, and plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from tinymlops.data.split import Split
from tinymlops.errors import ModelError
from tinymlops.inference import quantize_input, run_tflite, run_tflm
from tinymlops.io import atomic_path
from tinymlops.quantize import inspect


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


def evaluate(int8_model: bytes, test: Split, labels: list[str], arena_bytes: int, keras_model=None) -> EvaluationReport:
    info = inspect(int8_model)
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


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(report: EvaluationReport, path: Path) -> Path:
    plt = _figure()
    cm = np.array(report.confusion_int8)
    fig, ax = plt.subplots(figsize=(5.5, 4.8), dpi=110)
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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def plot_history(history: dict[str, list[float]], path: Path) -> Path:
    plt = _figure()
    fig, (loss, acc) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=110)
    for key, ax in (("loss", loss), ("accuracy", acc)):
        for prefix in ("", "val_"):
            if prefix + key in history:
                ax.plot(range(1, len(history[prefix + key]) + 1), history[prefix + key], label=prefix + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
