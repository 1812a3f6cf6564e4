"""Fixtures: every test gets its own home, MLflow store and git+DVC project; nothing touches the
developer's checkout. Expensive things (prepared digits, one trained model) are made once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tests.support.paths import REPO  # noqa: E402
from tests.support.project import make_project
from tests.support.wm_keys import fixed_key
from tinymlops.ml.watermark.key import write_key

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp git+DVC project with its own TINYMLOPS_HOME and default (SQLite) MLflow store."""
    root = make_project(tmp_path / "project")
    monkeypatch.setenv("TINYMLOPS_HOME", str(root / ".tinymlops"))
    # The owner key a first run would create at random, fixed: the mark's plan and cost depend on
    # the key's triggers, and a whole-pipeline test must not pass or fail with the key it drew.
    write_key(fixed_key("tinymlops-project-owner", 1, 1), root / ".tinymlops" / "keys" / "watermark-owner.key")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("TINYMLOPS_DVC_REMOTE", raising=False)
    monkeypatch.chdir(root)
    return root


@pytest.fixture(scope="session")
def params():
    from tinymlops.settings import load_params

    return load_params(REPO / "params.yaml")


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory: pytest.TempPathFactory, params) -> Path:
    """digits ingested, validated and split, once per session (read-only for tests)."""
    from tinymlops.pipeline import stages

    work = tmp_path_factory.mktemp("digits")
    stages.ingest(params, REPO, work / "raw")
    stages.prepare(params, work / "raw", work / "prepared")
    return work / "prepared"


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory, params, prepared_dir: Path) -> Path:
    """The default model trained once per session (read-only for tests)."""
    from tinymlops.pipeline import stages

    out = tmp_path_factory.mktemp("trained") / "keras"
    stages.train(params, prepared_dir, out)
    return out


@pytest.fixture(scope="session")
def tflite_dir(tmp_path_factory: pytest.TempPathFactory, params, prepared_dir: Path, trained_dir: Path) -> Path:
    """float + int8 (PTQ) .tflite of the session's model (read-only for tests)."""
    from tinymlops.pipeline import stages

    out = tmp_path_factory.mktemp("tflite") / "ptq"
    stages.quantize(params, prepared_dir, trained_dir, out)
    return out
