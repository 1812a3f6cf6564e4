"""The CLI's surfaces as a person meets them: `--help` at 80 columns, `tinymlops run`'s options
and their mistakes, secrets kept out of the repository, a bundle from just a model and a class,
the HIL matrix on a narrow terminal, the PTQ progress display, and `export --c-array` compiled."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer

from tests.support.cli_helpers import run_cli
from tinymlops import cli
from tinymlops.cli.device import hil_lines
from tinymlops.errors import ConfigError

COMMANDS = []


def _walk(group, prefix: tuple[str, ...]) -> None:
    for name, command in sorted(getattr(group, "commands", {}).items()):
        COMMANDS.append(((*prefix, name), command))
        _walk(command, (*prefix, name))


_walk(typer.main.get_command(cli.app), ())


def flat(text: str) -> str:
    """A usage error's words, without the box and the line breaks rich wraps it in."""
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").replace("─", " ").split())


def help_text(monkeypatch, capsys, path: tuple[str, ...], columns: int) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, err = run_cli(monkeypatch, capsys, *path, "--help")
    assert code == 0, err
    return out


def test_run_help_lists_every_option_at_80_columns(monkeypatch, capsys) -> None:
    text = help_text(monkeypatch, capsys, ("run",), 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    for option in (
        "--dataset",
        "--epochs",
        "--quantization",
        "--dry-run",
        "--rollout-devices",
        "--fleet-url",
        "--debug",
    ):
        assert option in text, option
    assert "<ptq|qat>" in text and "<digits|npz|wav|csv>" in text  # choices, not a free string
    assert "params.yaml" in text and "train.epochs" in text  # where a left-out option comes from


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=" ".join)
def test_help_fits_80_columns_and_keeps_paragraphs_whole(path: tuple[str, ...], monkeypatch, capsys) -> None:
    narrow = help_text(monkeypatch, capsys, path, 80)
    assert max(len(line) for line in narrow.splitlines()) <= 80, narrow
    wide = help_text(monkeypatch, capsys, path, 250)
    lines = [line.strip(" │") for line in wide.splitlines()]
    command = dict(COMMANDS)[path]
    for paragraph in (command.help or "").split("\n\n"):
        # a source line break inside a paragraph no longer shows up as a broken line
        if len(paragraph) < 200 and "\n" not in paragraph and "[" not in paragraph:
            assert any(paragraph in line for line in lines), (paragraph, wide)


def test_unknown_quantization_names_the_option_and_its_choices(project: Path, monkeypatch, capsys) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "run", "--quantization", "foo")
    assert code == 2
    words = flat(err)
    assert "--quantization" in words and "'foo'" in words and "ptq" in words and "qat" in words
    assert "pydantic" not in err and "https://" not in err


def test_a_fleet_too_small_to_stage_is_refused(project: Path, monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "run", "--rollout-devices", "5")
    assert code == 2 and "--rollout-devices" in flat(err) and "at least 10" in flat(err)


def test_debug_after_the_command(project: Path, monkeypatch, capsys) -> None:
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text.replace("train:", "trian:", 1))
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        run_cli(monkeypatch, capsys, "data", "ingest", "--debug")
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        run_cli(monkeypatch, capsys, "run", "--debug")  # fails on params.yaml before Prefect starts


# -- secrets ----------------------------------------------------------------------------------------
def test_kek_goes_under_the_keys_folder_not_into_the_repository(project: Path, monkeypatch, capsys) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "keys", "kek", "nrf52840-ble-sensor")
    assert code == 0, err
    kek = project / ".tinymlops" / "keys" / "kek" / "nrf52840-ble-sensor.kek"  # where the pipeline reads it
    assert kek.is_file() and len(kek.read_bytes()) == 32
    assert stat.S_IMODE(kek.stat().st_mode) == 0o600
    assert not (project / "nrf52840-ble-sensor").exists() and str(kek) in out
    tracked = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True).stdout
    assert ".kek" not in tracked  # git does not see it


def test_kek_refuses_a_path_git_would_track(project: Path, monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "keys", "kek", "node", "--out", project / "node.kek")
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"error: {project / 'node.kek'}: inside the git repository")
    assert not (project / "node.kek").exists()
    code, _, err = run_cli(monkeypatch, capsys, "keys", "kek", "../node")
    assert code == 2 and "a class name, not a path" in flat(err)


def test_revoking_the_current_signing_key_needs_force(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TINYMLOPS_HOME", str(tmp_path / "home"))
    assert run_cli(monkeypatch, capsys, "keys", "init")[0] == 0
    kid = json.loads(run_cli(monkeypatch, capsys, "keys", "show", "--json")[1])["signing_keys"][0]["kid"]
    code, _, err = run_cli(monkeypatch, capsys, "keys", "revoke", kid)
    assert code == 1 and err.startswith(f"error: {kid} is the current signing key") and len(err.splitlines()) == 1
    assert json.loads(run_cli(monkeypatch, capsys, "keys", "show", "--json")[1])["revocation_sequence"] == 0
    code, _, err = run_cli(monkeypatch, capsys, "keys", "revoke", kid, "--force")
    assert code == 0 and err.startswith(f"warning: {kid} was the current signing key")


# -- bundle build derives what it can ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_int8() -> bytes:
    import tensorflow as tf

    from tinymlops.ml.quantize import to_int8_tflite

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(), tf.keras.layers.Dense(10, activation="softmax")]
    )
    return to_int8_tflite(model, np.random.default_rng(0).uniform(0, 1, (32, 8, 8, 1)).astype(np.float32))


def test_bundle_build_from_a_model_and_a_class(project: Path, tiny_int8: bytes, monkeypatch, capsys) -> None:
    from tinymlops.device.arena import min_arena

    (project / "m.tflite").write_bytes(tiny_int8)
    assert run_cli(monkeypatch, capsys, "keys", "init")[0] == 0
    code, out, err = run_cli(
        monkeypatch, capsys, "bundle", "build", "m.tflite", "--class", "nrf52840-ble-sensor", "--json"
    )
    assert code == 0, err
    manifest = json.loads(out)["manifest"]
    assert (project / "nrf52840-ble-sensor.bundle").is_file()
    assert manifest["arena_bytes"] == min_arena(tiny_int8) > 0  # measured, not 0
    assert manifest["ops"] == ["FULLY_CONNECTED", "SOFTMAX"] or "FULLY_CONNECTED" in manifest["ops"]
    assert manifest["model_name"] == "tinymlops-int8"
    from tinymlops.bundle import class_uuid

    assert manifest["class_id"] == str(class_uuid("tinymlops-devices", "nrf52840-ble-sensor"))  # vendor: devices.yaml

    code, _, err = run_cli(monkeypatch, capsys, "bundle", "build", "m.tflite", "--class", "toaster")
    assert code == 1 and err.startswith("error: configs/devices.yaml: no device class 'toaster'")


# -- the HIL matrix -----------------------------------------------------------------------------------
ROWS = [
    ["nrf52840", "passed", "24.3 KB / 240.0 KB (10 %)", "27.9 KB / 256.0 KB (11 %)", "0.9833",
     "1.0000 (max Δ 0)", "1.52 ms", "0.031 mJ"],
    ["stm32l072-lora", "excluded (arena)", "24.3 KB / 16.0 KB (152 %)", "27.9 KB / 64.0 KB (44 %)", "—", "—",
     "—", "—"],
]  # fmt: skip
HEADER = ["profile", "status", "arena need / budget", "flash / budget", "accuracy", "parity", "latency", "energy"]


@pytest.mark.parametrize("width", [80, 120])
def test_hil_matrix_is_readable_on_a_narrow_terminal(width: int) -> None:
    lines = hil_lines(HEADER, ROWS, width)
    assert max(len(line) for line in lines) <= width
    text = "\n".join(lines)
    for row in ROWS:
        for cell in row:
            assert cell in text  # no cell cut or wrapped
    assert "  arena need / budget  24.3 KB / 16.0 KB (152 %)" in lines


def test_hil_matrix_is_a_table_when_it_fits() -> None:
    lines = hil_lines(HEADER, ROWS, 200)
    assert lines[0].split("  ")[0] == "profile" and len(lines) == 2 + len(ROWS)


def test_ptq_shows_no_epoch_bar_stuck_at_zero(project: Path, tiny_int8: bytes, monkeypatch, capsys) -> None:
    import tensorflow as tf

    from tinymlops.ml.model import train as training

    for stage in ("ingest", "prepare"):
        assert run_cli(monkeypatch, capsys, "data", stage)[0] == 0
    model = tf.keras.Sequential(
        [tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(), tf.keras.layers.Dense(10, activation="softmax")]
    )
    (project / "models" / "keras").mkdir(parents=True)
    training.save(model, project / "models" / "keras")
    code, out, err = run_cli(monkeypatch, capsys, "quantize")
    assert code == 0, err
    assert "0/?" not in err and "int8" in out


# -- export --------------------------------------------------------------------------------------------
def _compile_and_run(tmp_path: Path, include: Path, headers: list[tuple[str, str]]) -> bytes:
    """A C11 program that includes the headers, checks alignment and size, and writes the bytes
    (then their digests on stderr): built with the registry's clang (ziglang) for this host."""
    program = tmp_path / "main.c"
    body = "".join(
        f"  if ((uintptr_t){sym} % {sym.upper()}_ALIGNMENT || sizeof {sym} != {sym.upper()}_SIZE) return 2;\n"
        f"  fwrite({sym}, 1, {sym.upper()}_SIZE, stdout);\n  fputs({sym.upper()}_SHA256, stderr);\n"
        for _, sym in headers
    )
    includes = "".join(f'#include "{h}"\n' for h, _ in headers)
    program.write_text(f"#include <stdio.h>\n#include <stdint.h>\n{includes}int main(void) {{\n{body}  return 0;\n}}\n")
    exe = tmp_path / "main"
    cc = [sys.executable, "-m", "ziglang", "cc", "-std=c11", "-Wall", "-Werror", "-I", str(include)]
    built = subprocess.run([*cc, str(program), "-o", str(exe)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    ran = subprocess.run([str(exe)], capture_output=True, timeout=60)
    assert ran.returncode == 0
    return ran.stdout + b"|" + ran.stderr


def test_export_c_array_of_the_model_and_its_image(tmp_path: Path, tiny_int8: bytes, monkeypatch, capsys) -> None:
    import hashlib

    from tinymlops.device.image import compile_model

    (tmp_path / "model_int8.tflite").write_bytes(tiny_int8)
    code, out, err = run_cli(
        monkeypatch, capsys, "export", tmp_path / "model_int8.tflite", "--c-array", "--out", tmp_path / "inc"
    )
    assert code == 0, err
    inc = tmp_path / "inc"
    assert f"wrote {inc / 'g_model_int8.h'}" in out and f"wrote {inc / 'g_model_int8_image.h'}" in out
    compiled = compile_model(tiny_int8)
    assert (
        f"#define G_MODEL_INT8_IMAGE_ARENA_BYTES {compiled.image.arena_bytes}u"
        in (inc / "g_model_int8_image.h").read_text()
    )
    got = _compile_and_run(
        tmp_path, inc, [("g_model_int8.h", "g_model_int8"), ("g_model_int8_image.h", "g_model_int8_image")]
    )
    digests = hashlib.sha256(tiny_int8).hexdigest() + hashlib.sha256(compiled.data).hexdigest()
    assert got == tiny_int8 + compiled.data + b"|" + digests.encode()


def test_export_without_the_image(tmp_path: Path, monkeypatch, capsys) -> None:
    model = b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 3 + b"\x07"  # bytes only: not compiled
    (tmp_path / "m.tflite").write_bytes(model)
    args = ("export", tmp_path / "m.tflite", "--c-array", "--no-image", "--name", "kws", "--out", tmp_path / "inc")
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "inc").iterdir()) == ["kws.h"]
    import hashlib

    assert _compile_and_run(tmp_path, tmp_path / "inc", [("kws.h", "kws")]) == (
        model + b"|" + hashlib.sha256(model).hexdigest().encode()
    )


def test_export_refuses_what_is_not_a_model(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run_cli(monkeypatch, capsys, "export", tmp_path / "notes.txt", "--c-array", "--out", tmp_path / "o")
    assert code == 1 and err.startswith(f"error: {tmp_path / 'notes.txt'}: not a .tflite flatbuffer")
    assert not (tmp_path / "o").exists()


# -- the Prefect form -----------------------------------------------------------------------------------
def test_flow_form_is_flat_described_with_effective_defaults_and_choices() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.pipeline import pipeline
    from tests.support.paths import REPO
    from tinymlops.ml.data.registry import REGISTRY
    from tinymlops.settings import load_params

    schema = parameter_schema(pipeline.fn).model_dump()
    form = schema["properties"]
    assert set(form) == {
        "dataset", "epochs", "quantization", "dry_run", "rollout_devices", "fleet_url", "trigger",
        "git_ref", "git_sha", "repository", "alarm_id", "alarm_url",
    }  # fmt: skip  # no root, no params file, no nested `run` object
    assert all(field.get("description") for field in form.values())
    assert not any("anyOf" in field for field in form.values())  # no `int | None` toggles
    params = load_params(REPO / "params.yaml")
    assert form["epochs"]["default"] == params.train.epochs and form["epochs"]["type"] == "integer"
    assert form["quantization"]["enum"] == ["ptq", "qat"] and form["quantization"]["default"] == params.quantize.mode
    assert sorted(form["dataset"]["enum"]) == sorted(REGISTRY)
    assert form["trigger"]["enum"] == ["cli", "ui", "schedule", "webhook", "api", "drift"]
    assert not schema.get("required")


def test_cli_choices_match_the_flow() -> None:
    from tinymlops.cli.pipeline import Dataset, Quantization
    from tinymlops.ml.data.registry import REGISTRY

    assert sorted(d.value for d in Dataset) == sorted(REGISTRY)
    assert [q.value for q in Quantization] == ["ptq", "qat"]
    assert os.sep not in Dataset.digits.value
