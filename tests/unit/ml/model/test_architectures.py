"""Architectures: a user's builder by module:function, the built-ins through the same registry,
shapes a built-in must take (W=1 time series, vectors), and one-line errors for bad builders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinymlops.errors import ConfigError, ModelError
from tinymlops.ml.data.split import Split
from tinymlops.ml.model import architectures
from tinymlops.ml.model.train import train
from tinymlops.settings import PipelineParams
from tinymlops.settings.params import TrainParams

USER_MODULE = """
from tinymlops.ml.tf import tf


def tiny(input_shape, num_classes):
    return tf.keras.Sequential([
        tf.keras.Input(input_shape),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(12, activation="relu"),
        tf.keras.layers.Dense(num_classes, activation="softmax"),
    ])


def scalable(input_shape, num_classes, width=1.0, depth=1):
    return tiny(input_shape, num_classes)


def wrong_output(input_shape, num_classes):
    return tiny(input_shape, num_classes + 1)


def broken(input_shape, num_classes):
    raise RuntimeError("no such layer")
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "my_arch_mod.py").write_text(USER_MODULE)
    return tmp_path


def data(shape: tuple[int, ...], n: int = 60, k: int = 3) -> tuple[Split, Split]:
    rng = np.random.default_rng(0)
    y = (np.arange(n) % k).astype(np.int32)
    x = rng.normal(0, 0.1, (n, *shape)).astype(np.float32) + y.reshape(-1, *([1] * len(shape))) / k
    return Split(x=x, y=y), Split(x=x[:15], y=y[:15])


QUICK = PipelineParams(train=TrainParams(epochs=3, batch_size=16))


def test_user_builder_by_module_function(project: Path) -> None:
    tr, va = data((6, 1, 2))
    model, result = train(tr, va, 3, QUICK, architecture="my_arch_mod:tiny", search_path=project)
    assert result.architecture == "my_arch_mod:tiny" and model.output_shape == (None, 3)
    assert architectures.is_family(architectures.resolve("my_arch_mod:scalable", project))
    assert not architectures.is_family(architectures.resolve("my_arch_mod:tiny", project))


def test_builtins_resolve_through_the_same_mechanism() -> None:
    for name, target in architectures.REGISTRY.items():
        assert target.startswith("tinymlops.ml.model.architectures:")
        assert architectures.resolve(name) is architectures.resolve(target)
        assert architectures.is_family(architectures.resolve(name))


@pytest.mark.parametrize(
    ("name", "error", "expected"),
    [
        ("nope", ConfigError, "unknown name"),
        ("not_a_module_xyz:f", ConfigError, "cannot import 'not_a_module_xyz'"),
        ("my_arch_mod:missing", ConfigError, "has no function 'missing'"),
        ("my_arch_mod:wrong_output", ModelError, "expected (None, 3) class scores"),
        ("my_arch_mod:broken", ModelError, "RuntimeError: no such layer"),
    ],
)
def test_bad_builders_are_one_line_errors(project: Path, name: str, error: type, expected: str) -> None:
    with pytest.raises(error) as info:
        architectures.build(name, (6, 1, 2), 3, search_path=project)
    assert expected in str(info.value) and "\n" not in str(info.value) and "model.architecture" in str(info.value)


@pytest.mark.parametrize("name", ["cnn_small", "ds_cnn", "mlp"])
@pytest.mark.parametrize("shape", [(24, 1, 3), (72, 1, 1), (1, 1, 4)])
def test_builtins_take_w1_time_series_and_vectors(name: str, shape: tuple[int, ...]) -> None:
    model = architectures.build(name, shape, 3, width=0.25, depth=1)
    assert model.output_shape == (None, 3)
    assert model.predict(np.zeros((2, *shape), np.float32), verbose=0).shape == (2, 3)


def test_ds_cnn_meets_the_float_gate_on_digits(prepared_dir: Path, params) -> None:
    from tinymlops.ml.data.split import load_split

    tr, va, te = (load_split(prepared_dir, s) for s in ("train", "val", "test"))
    model, _ = train(tr, va, 10, params, architecture="ds_cnn")
    accuracy = float(np.mean(model.predict(te.x, verbose=0).argmax(1) == te.y))
    assert accuracy >= params.evaluate.min_float_accuracy, accuracy
