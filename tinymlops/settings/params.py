"""params.yaml: what changes the model. Every key is validated and logged to MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from tinymlops.settings.files import ConfigFile, Strict, load


class Params(Strict):
    """A params.yaml section: strict, and no float may be inf or NaN (a NaN learning rate trains a
    NaN model that nothing downstream would notice)."""

    model_config = ConfigDict(allow_inf_nan=False)


class AudioParams(Params):
    """The log-mel front end of the `wav` dataset (tinymlops/ml/data/audio.py), which a device
    runs too: every figure here is part of the data, and so of its version."""

    sample_rate: int = Field(16000, ge=1000, le=192000, description="clips are resampled to this rate")
    clip_seconds: float = Field(1.0, gt=0, le=60, description="clips are cut or zero-padded to this length")
    frame_ms: float = Field(32.0, gt=0, description="analysis window (Hann), milliseconds")
    hop_ms: float = Field(16.0, gt=0, description="step between frames, milliseconds")
    n_mels: int = Field(16, ge=2, le=128, description="mel bands")
    fmin: float = Field(20.0, ge=0)
    fmax: float | None = Field(None, gt=0, description="upper band edge; null: sample_rate / 2")


class CsvParams(Params):
    """The `csv` dataset: one row per time step, windows identified by a column."""

    window_column: str = Field("window", min_length=1, description="rows with one value form one window")
    label_column: str = Field("label", min_length=1, description="class name (or id) of the row's window")
    channels: list[str] | None = Field(None, description="channel columns; null: every other numeric column")


class DataParams(Params):
    dataset: str = Field("digits", description="dataset name from the registry (digits, npz, wav, csv)")
    path: str | None = Field(
        None, description="npz: the .npz file (x, y, optional labels); wav: folder of class folders; csv: the file"
    )
    layout: Literal["auto", "image", "time_series", "vector"] = Field(
        "auto",
        description="how x is laid out: image (N,H,W[,C]), time_series (N,T,C), vector (N,F); "
        "auto: 2-D → vector, 3-D and 4-D → image (a 3-D time series needs time_series)",
    )
    preprocess: Literal["minmax", "standardize"] = Field(
        "minmax",
        description="fitted on the train split, per channel: minmax → [0, 1] (a declared range such as "
        "uint8's is used as is), standardize → zero mean, unit variance",
    )
    test_size: float = Field(0.2, gt=0, lt=1, description="share of samples held out for test")
    val_size: float = Field(0.1, gt=0, lt=1, description="share of samples for validation")
    min_class_share: float = Field(
        0.5, ge=0, le=1, description="smallest class must hold at least this share of the mean class"
    )
    audio: AudioParams = AudioParams()
    csv: CsvParams = CsvParams()

    @model_validator(mode="after")
    def _sizes_leave_training_data(self) -> DataParams:
        if self.test_size + self.val_size >= 0.9:
            raise ValueError("test_size + val_size must leave at least 10 % for training")
        if self.dataset in ("npz", "wav", "csv") and not self.path:
            raise ValueError(f"dataset '{self.dataset}' needs data.path")
        return self


class ModelParams(Params):
    architecture: str = Field("cnn_small", description="architecture name (cnn_small, ds_cnn, mlp)")


class TrainParams(Params):
    epochs: int = Field(40, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    early_stopping_patience: int = Field(5, ge=1)


class QuantizeParams(Params):
    mode: Literal["ptq", "qat"] = Field("ptq", description="post-training or quantization-aware")
    representative_samples: int = Field(200, ge=1, description="calibration samples from train split")
    qat_epochs: int = Field(5, ge=1, description="fine-tune epochs in QAT mode")


class EvaluateParams(Params):
    tflm_arena_bytes: int = Field(65536, ge=1024, description="tensor arena for the TFLM check")
    max_accuracy_drop: float = Field(0.01, ge=0, le=1, description="allowed float→int8 accuracy loss")
    min_float_accuracy: float = Field(0.0, ge=0, le=1, description="fail the run below this")


class VariantParams(Params):
    """The per-device-class variant search (docs/variants.md)."""

    enabled: bool = Field(True, description="derive a variant for each targeted class the main model misses")
    families: list[str] = Field(
        ["cnn_small", "mlp"], description="architectures searched besides the main one's own family"
    )
    widths: list[float] = Field([0.5, 0.25], min_length=1, description="width multipliers tried")
    depths: list[int] = Field([1, 2], min_length=1, description="depths (blocks) tried")
    per_class: int = Field(2, ge=1, le=8, description="feasible candidates trained per missed class")
    max_trained: int = Field(4, ge=1, le=32, description="at most this many candidates trained per run")

    @model_validator(mode="after")
    def _positive(self) -> VariantParams:
        if any(w <= 0 for w in self.widths) or any(d < 1 for d in self.depths):
            raise ValueError("widths must be > 0 and depths ≥ 1")
        return self


class PipelineParams(Params):
    """params.yaml: everything that changes the model, and so the cache key."""

    seed: int = 42
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    quantize: QuantizeParams = QuantizeParams()
    evaluate: EvaluateParams = EvaluateParams()
    variants: VariantParams = VariantParams()

    def flat(self) -> dict[str, object]:
        """`data.test_size`-style keys, for MLflow params."""
        out: dict[str, object] = {}

        def walk(prefix: str, value: object) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.model_dump())
        return out


class TrackingConfig(ConfigFile):
    """configs/tracking.yaml: where and under which names runs and models are recorded."""

    FILE: ClassVar[str] = "tracking.yaml"
    experiment: str = "tinymlops"
    registered_model: str = "tinymlops-int8"
    candidate_alias: str = "candidate"
    production_alias: str = "production"  # moves only when a rollout's last group passes


def load_params(path: Path | str = "params.yaml") -> PipelineParams:
    return load(PipelineParams, path)
