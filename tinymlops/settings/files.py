"""Reading config files: strict models, one-line errors naming the file, the key and the type."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from typing_extensions import Self

from tinymlops.errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class ConfigFile(Strict):
    """A model read from configs/<FILE>. Subclasses anywhere in the package are found by the
    settings test, so every shipped config file is loaded and checked without a central list."""

    FILE: ClassVar[str]

    @classmethod
    def load_from(cls, root: Path | str) -> Self:
        return load(cls, Path(root) / "configs" / cls.FILE)


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
