"""User mistakes the CLI must answer with ONE line naming the option or file, exit 1, no traceback,
no pydantic URL, and nothing half-written: bundle build arguments, a corrupt device directory, a
float or out-of-set model given to evaluate, an npz of strings, non-finite floats in params.yaml."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.support.cli_helpers import run_cli
from tinymlops.errors import ConfigError


def edit_params(project: Path, **sections: dict[str, object]) -> None:
    data = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in sections.items():
        data[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def one_error_line(code: int, out: str, err: str, *words: str) -> str:
    assert code == 1, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in (out, err):
        assert "Traceback" not in text and 'File "' not in text
        assert "pydantic" not in text
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# -- 1. bundle build ------------------------------------------------------------------------------
BUNDLE_CASES = {
    "sequence_2_pow_63": (("--sequence", str(2**63)), "--sequence"),
    "empty_name": (("--name", ""), "--name"),
    "name_300_characters": (("--name", "n" * 300), "--name"),
    "ops_2000_entries": (("--ops", ",".join(f"OP{i}" for i in range(2000))), "--ops"),
    "out_is_a_directory": (("--out", "existing_dir"), "--out existing_dir"),
}


@pytest.mark.parametrize("case", list(BUNDLE_CASES))
def test_bundle_build_bad_argument(
    case: str, project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    extra, option = BUNDLE_CASES[case]
    (project / "model.tflite").write_bytes(b"TFL3 not really a model")
    (project / "existing_dir").mkdir()
    before = sorted(p.name for p in project.iterdir())
    args = ["bundle", "build", "model.tflite", "--class", "c", "--vendor", "example.com", "--arena-bytes", "1024"]
    args += ["--keys", str(project.parent / "keys")]
    if "--ops" not in extra:
        args += ["--ops", "CONV_2D"]
    code, out, err = run_cli(monkeypatch, capsys, *args, *extra)
    one_error_line(code, out, err, option)
    assert sorted(p.name for p in project.iterdir()) == before  # no bundle, no temp file
    assert list((project / "existing_dir").iterdir()) == []


# -- 2. a corrupt device directory ----------------------------------------------------------------
def emulated_profile(project: Path):
    from tinymlops.device.mcu import emulated
    from tinymlops.device.profiles import load_profiles

    return next(p for p in load_profiles(project) if emulated(p))


def identity(project: Path) -> dict:
    profile = emulated_profile(project)
    return {"profile": profile.model_dump(mode="json"), "device_id": "d", "root_kid": "r", "has_kek": False}


DEVICE_JSON_CASES = {
    "truncated": lambda good: good[: len(good) // 2],
    "garbled_bytes": lambda good: bytes(range(256)) * 4,
    "not_an_object": lambda good: b"[1, 2, 3]",
    "missing_device_id": lambda good: json.dumps({**json.loads(good), "device_id": None}).encode(),
    "bad_profile": lambda good: json.dumps({**json.loads(good), "profile": {"name": 5}}).encode(),
}


@pytest.mark.parametrize("case", list(DEVICE_JSON_CASES))
def test_device_corrupt_device_json(
    case: str, project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    device = project / "dev"
    device.mkdir()
    good = json.dumps(identity(project)).encode()
    (device / "device.json").write_bytes(DEVICE_JSON_CASES[case](good))
    before = (device / "device.json").read_bytes()
    code, out, err = run_cli(monkeypatch, capsys, "device", "status", "--dir", device)
    one_error_line(code, out, err, "dev/device.json", "corrupt device file")
    assert sorted(p.name for p in device.iterdir()) == ["device.json"]  # no flash.bin appears
    assert (device / "device.json").read_bytes() == before


def test_device_truncated_flash_bin(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    device = project / "dev"
    device.mkdir()
    (device / "device.json").write_text(json.dumps(identity(project)))
    (device / "flash.bin").write_bytes(b"\xff" * 1000)
    code, out, err = run_cli(monkeypatch, capsys, "device", "boot", "--dir", device)
    one_error_line(code, out, err, "dev/flash.bin", "1000 bytes")
    assert (device / "flash.bin").read_bytes() == b"\xff" * 1000  # not rewritten


# -- 3. evaluate: a float model, a model with an op outside the runtime's set ---------------------
@pytest.fixture(scope="module")
def odd_models() -> dict[str, bytes]:
    """Tiny TFLite models on digits' (8, 8, 1) input: float, and int8 with a (float) SIN inside."""
    from tinymlops.ml.tf import tf  # TF's native noise off, legacy Keras

    weights = tf.constant(np.random.default_rng(0).random((64, 10), dtype=np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.float32)])
    def dense(x):
        return tf.nn.softmax(tf.matmul(tf.reshape(x, [1, 64]), weights))

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.float32)])
    def sine(x):
        return tf.nn.softmax(tf.matmul(tf.reshape(tf.math.sin(x), [1, 64]), weights))

    def convert(fn, int8: bool) -> bytes:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
        if int8:
            rng = np.random.default_rng(1)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([rng.random((1, 8, 8, 1), dtype=np.float32)] for _ in range(8))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = converter.inference_output_type = tf.int8
        return converter.convert()

    return {"float": convert(dense, False), "sin_int8": convert(sine, True)}


@pytest.mark.parametrize(
    ("case", "words"),
    [("float", ["float.tflite", "float32, not int8"]), ("sin_int8", ["sin_int8.tflite", "op SIN", "op set"])],
    ids=["float_model", "sin_op"],
)
def test_evaluate_unrunnable_model(
    case: str,
    words: list[str],
    odd_models: dict[str, bytes],
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(project.parent))
    for stage in ("ingest", "prepare"):
        code, _, err = run_cli(monkeypatch, capsys, "data", stage)
        assert code == 0, err
    (project / f"{case}.tflite").write_bytes(odd_models[case])
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", f"{case}.tflite", "--report-dir", "reports/eval")
    one_error_line(code, out, err, *words)
    assert not (project / "reports").exists()


# -- 4. an npz dataset whose x holds strings --------------------------------------------------------
def test_npz_x_of_strings(project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(project / "strings.npz", x=np.array([["a", "b"], ["c", "d"]] * 20), y=np.arange(40) % 2)
    edit_params(project, data={"dataset": "npz", "path": "strings.npz"})
    code, out, err = run_cli(monkeypatch, capsys, "data", "ingest")
    one_error_line(code, out, err, "strings.npz", "x has dtype <U1")
    assert not (project / "data" / "raw").exists() or list((project / "data" / "raw").rglob("*")) == []


# -- 5. non-finite floats in params.yaml ----------------------------------------------------------
@pytest.mark.parametrize("value", [".inf", ".nan"], ids=["inf", "nan"])
def test_params_learning_rate_not_finite(
    value: str, project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (project / "params.yaml").read_text()
    assert "learning_rate:" in text
    lines = [f"  learning_rate: {value}" if ln.strip().startswith("learning_rate:") else ln for ln in text.splitlines()]
    (project / "params.yaml").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(monkeypatch, capsys, "data", "ingest")
    line = one_error_line(code, out, err, "params.yaml", "train.learning_rate", "finite")
    assert line.count("error:") == 1
    assert not (project / "data" / "raw").exists()


def float_params() -> list[str]:
    """Every float-typed key of params.yaml (dotted), found from the models, not listed by hand."""
    from tinymlops.settings.params import PipelineParams

    found: list[str] = []

    def walk(model: type, prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                walk(annotation, f"{prefix}{name}.")
            elif "float" in str(annotation):
                found.append(f"{prefix}{name}")

    walk(PipelineParams, "")
    return found


@pytest.mark.parametrize("key", float_params())
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_params_every_float_refuses_non_finite(key: str, value: float) -> None:
    from tinymlops.settings.files import parse
    from tinymlops.settings.params import PipelineParams

    data: dict = {}
    *sections, leaf = key.split(".")
    node = data
    for section in sections:
        node = node.setdefault(section, {})
    default = PipelineParams().model_dump()
    for section in sections:
        default = default[section]
    node[leaf] = [value] if isinstance(default[leaf], list) else value
    with pytest.raises(ConfigError, match=rf"^params\.yaml: {key}(\.0)?: "):
        parse(PipelineParams, data, "params.yaml")
