"""The CLI in-process, as a user meets it: a mistake is one `error:` line on stderr and exit 1 (no
traceback, nothing half-written); `--debug` shows the exception; help always works."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml

from tests.support.cli_helpers import run_cli
from tinymlops import cli
from tinymlops.errors import ConfigError


def edit_params(project: Path, **sections: dict[str, object]) -> None:
    data = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in sections.items():
        data[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def assert_no_traceback(*streams: str) -> None:
    for text in streams:
        assert "Traceback" not in text and 'File "' not in text


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


# -- params.yaml mistakes -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("find", "replace", "expected"),
    [
        ("train:", "trian:", ["unknown key", "'trian'"]),
        ("epochs: 40", "epochs: ten", ["train.epochs", "integer", "'ten'"]),
        ("mode: ptq", "mode: fp16", ["quantize.mode", "'fp16'"]),
    ],
    ids=["typo", "wrong_type", "bad_literal"],
)
def test_params_mistake_is_one_error_line(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    find: str,
    replace: str,
    expected: list[str],
) -> None:
    text = (project / "params.yaml").read_text()
    assert find in text
    (project / "params.yaml").write_text(text.replace(find, replace, 1))

    code, out, err = run_cli(monkeypatch, capsys, "data", "ingest")

    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: params.yaml")
    for word in expected:
        assert word in lines[0]
    assert_no_traceback(out, err)
    assert not (project / "data" / "raw").exists()  # failed before doing anything


def test_debug_shows_the_exception(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text.replace("train:", "trian:", 1))
    with pytest.raises(ConfigError, match="params.yaml: unknown key 'trian'"):
        run_cli(monkeypatch, capsys, "--debug", "data", "ingest")
    assert "error:" not in capsys.readouterr().err  # the exception itself, not the one-liner


# -- bad data and bad models --------------------------------------------------------------------
def corrupt_npz_project(project: Path) -> None:
    (project / "corrupt.npz").write_bytes(bytes(range(256)) * 8)
    edit_params(project, data={"dataset": "npz", "path": "corrupt.npz"})


def prepared_project(project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # `evaluate` without --report-dir makes a tinymlops-eval-* dir in the temp dir: keep it in ours.
    monkeypatch.setattr(tempfile, "tempdir", str(project.parent))
    for stage in ("ingest", "prepare"):
        code, _, err = run_cli(monkeypatch, capsys, "data", stage)
        assert code == 0, err
    assert (project / "data" / "prepared" / "test.npz").is_file()
    (project / "not_a_model.tflite").write_text("I am a text file, not a flatbuffer.\n")


def test_corrupt_npz_fails_cleanly_and_writes_nothing(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt_npz_project(project)
    code, out, err = run_cli(monkeypatch, capsys, "data", "ingest")
    assert code == 1
    assert err.startswith("error: corrupt.npz: not a readable .npz file")
    assert err.count("error:") == 1
    assert_no_traceback(out, err)
    assert files_under(project / "data" / "raw") == []  # not even a hidden temp file


def test_evaluate_non_model_names_the_file(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prepared_project(project, monkeypatch, capsys)
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", "not_a_model.tflite")
    assert code == 1
    assert err.startswith("error: not_a_model.tflite: not a valid TFLite model")
    assert err.count("error:") == 1
    assert_no_traceback(out, err)


def test_evaluate_missing_model_names_the_file(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prepared_project(project, monkeypatch, capsys)
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", "models/nowhere.tflite")
    assert code == 1
    assert err.splitlines() == ["error: models/nowhere.tflite: file not found"]
    assert_no_traceback(out, err)


@pytest.mark.parametrize("case", ["corrupt_npz", "evaluate_non_model"])
def test_long_error_stays_on_one_line(
    case: str, project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if case == "corrupt_npz":
        corrupt_npz_project(project)
        args: tuple[str, ...] = ("data", "ingest")
    else:
        prepared_project(project, monkeypatch, capsys)
        args = ("evaluate", "not_a_model.tflite")
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 1
    assert len(err.splitlines()) == 1, err


# -- happy paths ------------------------------------------------------------------------------------
def test_validate_json_on_good_data(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "data", "ingest")
    assert code == 0, err
    assert files_under(project / "data" / "raw") == [project / "data" / "raw" / "dataset.npz"]

    code, out, err = run_cli(monkeypatch, capsys, "data", "validate", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["dataset"] == "digits" and report["n_samples"] == 1797
    assert report["checks"] and all(c["passed"] for c in report["checks"])
    assert "error" not in err


def test_validate_fails_on_bad_raw_data(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A raw dataset that ingests but fails a check: the report is printed, then exit 1 naming it."""
    rng = np.random.default_rng(0)
    np.savez(
        project / "skewed.npz",
        x=rng.integers(0, 256, (40, 4, 4), dtype=np.uint8),
        y=np.r_[np.zeros(36), np.ones(4)].astype(int),  # 4 of 40: big enough to split, too skewed
    )
    edit_params(project, data={"dataset": "npz", "path": "skewed.npz"})
    assert run_cli(monkeypatch, capsys, "data", "ingest")[0] == 0
    code, out, err = run_cli(monkeypatch, capsys, "data", "validate", "--json")
    assert code == 1
    assert json.loads(out)["n_samples"] == 40
    assert err.startswith("error: data/raw: data check 'class_balance' failed")
    assert_no_traceback(err)


def _command_paths() -> list[tuple[str, ...]]:
    """Every command and group of the app, so a new subcommand is covered without editing this file."""
    paths: list[tuple[str, ...]] = [()]

    def walk(group, prefix: tuple[str, ...]) -> None:
        for name, command in sorted(getattr(group, "commands", {}).items()):
            paths.append((*prefix, name))
            walk(command, (*prefix, name))

    walk(typer.main.get_command(cli.app), ())
    return paths


COMMANDS = _command_paths()


def test_the_expected_commands_exist() -> None:
    assert {("run",), ("data",), ("data", "ingest"), ("data", "validate"), ("data", "prepare")} <= set(COMMANDS)
    assert {("train",), ("quantize",), ("evaluate",)} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "tinymlops")
def test_help(path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(monkeypatch, capsys, *path, "--help")
    assert code == 0, err
    (usage,) = [line for line in out.splitlines() if "Usage:" in line]
    # click names the program after pytest's __main__ here, so check the part after it
    assert " ".join((*path, "[OPTIONS]")) in usage
    assert_no_traceback(out, err)


def test_unknown_option_is_a_usage_error(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "data", "ingest", "--bogus")
    assert code == 2
    assert "No such option" in err
    assert_no_traceback(out, err)
