"""Typed settings: params.yaml, configs/*.yaml and the environment, read in one place.

Every model is strict, frozen and forbids unknown keys, so a typo fails loudly with one line
naming the file, the key and the expected type.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from typing_extensions import Self

from tinymlops.errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class DataParams(Strict):
    dataset: str = Field("digits", description="dataset name from the registry (digits, npz)")
    path: str | None = Field(None, description="for dataset 'npz': the .npz file (x, y, optional labels)")
    test_size: float = Field(0.2, gt=0, lt=1, description="share of samples held out for test")
    val_size: float = Field(0.1, gt=0, lt=1, description="share of samples for validation")
    min_class_share: float = Field(
        0.5, ge=0, le=1, description="smallest class must hold at least this share of the mean class"
    )

    @model_validator(mode="after")
    def _sizes_leave_training_data(self) -> DataParams:
        if self.test_size + self.val_size >= 0.9:
            raise ValueError("test_size + val_size must leave at least 10 % for training")
        if self.dataset == "npz" and not self.path:
            raise ValueError("dataset 'npz' needs data.path")
        return self


class ModelParams(Strict):
    architecture: str = Field("cnn_small", description="architecture name (cnn_small, ds_cnn, mlp)")


class TrainParams(Strict):
    epochs: int = Field(40, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    early_stopping_patience: int = Field(5, ge=1)


class QuantizeParams(Strict):
    mode: Literal["ptq", "qat"] = Field("ptq", description="post-training or quantization-aware")
    representative_samples: int = Field(200, ge=1, description="calibration samples from train split")
    qat_epochs: int = Field(5, ge=1, description="fine-tune epochs in QAT mode")


class EvaluateParams(Strict):
    tflm_arena_bytes: int = Field(65536, ge=1024, description="tensor arena for the TFLM check")
    max_accuracy_drop: float = Field(0.01, ge=0, le=1, description="allowed float→int8 accuracy loss")
    min_float_accuracy: float = Field(0.0, ge=0, le=1, description="fail the run below this")


class PipelineParams(Strict):
    """params.yaml: everything that changes the model, and so the cache key."""

    seed: int = 42
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    quantize: QuantizeParams = QuantizeParams()
    evaluate: EvaluateParams = EvaluateParams()

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


class ConfigFile(Strict):
    """A model read from configs/<FILE>. Subclasses anywhere in the package are found by the
    settings test, so every shipped config file is loaded and checked without a central list."""

    FILE: ClassVar[str]

    @classmethod
    def load_from(cls, root: Path | str) -> Self:
        return load(cls, Path(root) / "configs" / cls.FILE)


class TrackingConfig(ConfigFile):
    """configs/tracking.yaml: where and under which names runs and models are recorded."""

    FILE: ClassVar[str] = "tracking.yaml"
    experiment: str = "tinymlops"
    registered_model: str = "tinymlops-int8"
    candidate_alias: str = "candidate"
    production_alias: str = "production"  # moves only when a rollout's last group passes


M = TypeVar("M", bound=BaseModel)

_TYPE_WORDS = {
    "int_type": "integer",
    "int_parsing": "integer",
    "float_type": "number",
    "float_parsing": "number",
    "string_type": "string",
    "bool_type": "boolean",
    "dict_type": "mapping",
    "model_type": "mapping",
    "list_type": "list",
    "literal_error": "one of",
}


def _one_line(source: str, error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{key}'"
    if kind == "missing":
        return f"{source}: missing key '{key}'"
    if kind in _TYPE_WORDS and kind != "literal_error":
        return f"{source}: {key}: expected {_TYPE_WORDS[kind]}, got {first['input']!r}"
    return f"{source}: {key}: {first['msg']} (got {first['input']!r})"


def parse(model: type[M], data: object, source: str) -> M:
    """Validate `data` against `model`, turning pydantic's report into one line."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(_one_line(source, exc)) from None


def load_yaml(path: Path | str) -> object:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML") from None


def load(model: type[M], path: Path | str) -> M:
    return parse(model, load_yaml(path), str(path))


def load_params(path: Path | str = "params.yaml") -> PipelineParams:
    return load(PipelineParams, path)


class Environment(Strict):
    """Machine-local locations, from the environment. Nothing here changes the model."""

    root: Path
    home: Path
    tracking_uri: str
    dvc_remote: str | None = None
    fleet_url: str | None = None  # a fleet server to roll out on; None: a simulated fleet per rollout
    fleet_admin_token: SecretStr | None = None  # its admin token (a secret: never printed)

    @classmethod
    def from_env(cls, root: Path | str = ".") -> Environment:
        root = Path(root).resolve()
        home = Path(os.environ.get("TINYMLOPS_HOME", root / ".tinymlops")).resolve()
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
        token = os.environ.get("TINYMLOPS_FLEET_ADMIN_TOKEN")
        return cls(
            root=root,
            home=home,
            tracking_uri=uri,
            dvc_remote=os.environ.get("TINYMLOPS_DVC_REMOTE"),
            fleet_url=os.environ.get("TINYMLOPS_FLEET_URL") or None,
            fleet_admin_token=SecretStr(token) if token else None,
        )

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"
