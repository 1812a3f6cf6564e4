"""`dvc repro` reproduces every stage standalone through the same library functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinymlops import stages
from tinymlops.io import sha256_file

pytestmark = pytest.mark.slow


def _dvc(cwd: Path, *args: str) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_dvc_repro_in_a_clone_reproduces_the_same_int8_bytes(project: Path, tmp_path: Path, tflite_dir: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)

    _dvc(clone, "repro")
    metrics = json.loads((clone / "reports" / "metrics.json").read_text())
    assert metrics["accuracy_float"] >= 0.95
    assert metrics["accuracy_float"] - metrics["accuracy_int8_tflm"] <= 0.01
    # Same library functions, data and params as the test session's own model: the same bytes.
    assert sha256_file(clone / stages.TFLITE_DIR / stages.INT8_TFLITE) == sha256_file(tflite_dir / stages.INT8_TFLITE)

    second = _dvc(clone, "repro")
    assert "didn't change" in second or "up to date" in second
    assert "Running stage" not in second
