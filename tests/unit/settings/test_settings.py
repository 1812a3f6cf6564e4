"""Settings: every shipped YAML loads, and every kind of mistake fails with one line that names
the file and the key, so a user can fix it without reading a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from tests.support.paths import REPO  # noqa: E402
from tinymlops.errors import ConfigError
from tinymlops.settings import ConfigFile, PipelineParams, TrackingConfig, load, load_params


def _config_models() -> dict[str, type[BaseModel]]:
    """Every ConfigFile subclass in the package, by the file it reads. The modules that declare one
    are found in the source and only those are imported: importing every module at collection
    would start TensorFlow and its loggers inside pytest's collection capture."""
    import importlib
    import re

    package = REPO / "tinymlops"
    for path in sorted(package.rglob("*.py")):
        if re.search(r"^class \w+\((?:\w+\.)?ConfigFile\)", path.read_text(encoding="utf-8"), re.M):
            importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))

    def subclasses(cls: type) -> list[type]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    return {c.FILE: c for c in subclasses(ConfigFile) if "FILE" in vars(c)}


# Every configs/*.yaml and the model it is read through, found in the code, not listed here.
CONFIG_MODELS: dict[str, type[BaseModel]] = _config_models()


def shipped_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def write_params(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """The shipped params.yaml with one edit, written to tmp_path/params.yaml."""
    data = shipped_params()
    edit(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_params(path)
    message = str(info.value)
    assert "\n" not in message, f"ConfigError must be one line, got {message!r}"
    assert str(path) in message
    return message


# -- what ships -----------------------------------------------------------------------------------
def test_shipped_params_load() -> None:
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, PipelineParams)
    assert params.seed == 42
    assert params.data.dataset == "digits" and params.data.path is None
    assert params.quantize.mode in ("ptq", "qat")
    assert params.train.epochs >= 1


def test_every_config_file_has_a_model() -> None:
    """A new configs/*.yaml without an entry in CONFIG_MODELS fails here, so it cannot go untested."""
    shipped = {p.name for p in (REPO / "configs").glob("*.yaml")}
    assert shipped, "configs/ has no YAML files"
    assert shipped == set(CONFIG_MODELS)


@pytest.mark.parametrize("name", sorted(CONFIG_MODELS))
def test_shipped_config_loads(name: str) -> None:
    model = CONFIG_MODELS[name]
    config = load(model, REPO / "configs" / name)
    assert isinstance(config, model)
    # Every key in the file is a field of the model (extra="forbid" would have refused others).
    assert set(yaml.safe_load((REPO / "configs" / name).read_text()) or {}) <= set(model.model_fields)


def test_tracking_config_rejects_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "tracking.yaml"
    path.write_text("experiment: x\nregistred_model: y\n")
    with pytest.raises(ConfigError, match=r"tracking\.yaml: unknown key 'registred_model'"):
        load(TrackingConfig, path)


def test_params_round_trip(tmp_path: Path) -> None:
    """What load_params returns, dumped back to YAML, loads to the same params (no lossy coercion)."""
    params = load_params(REPO / "params.yaml")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params.model_dump()))
    assert load_params(path) == params


def test_empty_params_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("# nothing set\n")
    assert load_params(path) == PipelineParams()


def test_params_are_frozen() -> None:
    params = load_params(REPO / "params.yaml")
    with pytest.raises(ValidationError):
        params.seed = 7  # type: ignore[misc]


def test_npz_dataset_with_path_is_valid(tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["data"].update(dataset="npz", path="data/mine.npz")

    params = load_params(write_params(tmp_path, edit))
    assert params.data.dataset == "npz" and params.data.path == "data/mine.npz"


# -- each kind of mistake -------------------------------------------------------------------------
def test_unknown_top_level_key(tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["trian"] = d.pop("train")

    message = config_error(write_params(tmp_path, edit))
    assert "params.yaml" in message and "unknown key" in message and "'trian'" in message


def test_unknown_nested_key(tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["train"]["epoch"] = d["train"].pop("epochs")

    message = config_error(write_params(tmp_path, edit))
    assert "'train.epoch'" in message


@pytest.mark.parametrize(
    ("section", "key", "value", "word"),
    [
        ("train", "epochs", "ten", "integer"),
        ("train", "epochs", 40.5, "integer"),
        ("train", "learning_rate", "fast", "number"),
        ("data", "dataset", 3, "string"),
    ],
)
def test_wrong_type(tmp_path: Path, section: str, key: str, value: object, word: str) -> None:
    def edit(d: dict[str, Any]) -> None:
        d[section][key] = value

    message = config_error(write_params(tmp_path, edit))
    assert "params.yaml" in message
    assert f"{section}.{key}" in message
    assert f"expected {word}" in message
    assert repr(value) in message


def test_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["train"] = 5

    message = config_error(write_params(tmp_path, edit))
    assert "train" in message and "mapping" in message


def test_bad_literal(tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["quantize"]["mode"] = "fp16"

    message = config_error(write_params(tmp_path, edit))
    assert "quantize.mode" in message
    assert "'fp16'" in message
    assert "'ptq'" in message and "'qat'" in message  # tells the user what is allowed


def test_out_of_range_value(tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["train"]["epochs"] = 0

    message = config_error(write_params(tmp_path, edit))
    assert "train.epochs" in message and "(got 0)" in message


def test_npz_dataset_needs_path(tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["data"].update(dataset="npz", path=None)

    message = config_error(write_params(tmp_path, edit))
    assert "data.path" in message and "npz" in message


def test_test_and_val_sizes_must_leave_training_data(tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["data"].update(test_size=0.5, val_size=0.45)

    message = config_error(write_params(tmp_path, edit))
    assert "data" in message and "test_size + val_size" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    message = config_error(path)
    assert "not found" in message


@pytest.mark.parametrize(
    ("text", "line"),
    [("seed: [1, 2\n", None), ("seed: 1\ndata:\n  dataset: digits\n   path: x\n", 4), ("a: b: c\n", 1)],
)
def test_invalid_yaml(tmp_path: Path, text: str, line: int | None) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    message = config_error(path)
    assert "not valid YAML" in message
    if line is not None:
        assert f"line {line}" in message


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("- seed\n- data\n")
    message = config_error(path)
    assert "top level" in message and "mapping" in message


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(b"seed: \xff\xfe\n")
    config_error(path)
