"""`dvc repro` as DVC's users run it: from a git clone, as `.venv/bin/dvc repro` with no venv
activated; it builds the model the flow ships (watermarked with the owner key from outside git,
bit for bit the in-process stages' bytes); metrics and plots are committed with dvc.lock, so
`dvc metrics diff`, `dvc exp run -S` / `dvc exp show` and `dvc plots show` work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tinymlops.pipeline import protect, stages
from tinymlops.util.io import sha256_file

pytestmark = pytest.mark.slow
GIT = ["git", "-c", "user.name=tinymlops-test", "-c", "user.email=test@tinymlops.invalid"]


def _dvc(cwd: Path, *args: str) -> str:
    """DVC as `.venv/bin/dvc …` with no venv activated: its bin directory is not on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"PATH": path}
    done = subprocess.run(
        [str(cwd / ".venv" / "bin" / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_dvc_repro_in_a_clone_builds_the_model_the_flow_ships(
    project: Path, tmp_path: Path, params, prepared_dir: Path, trained_dir: Path
) -> None:
    from tinymlops.ml.watermark import WatermarkConfig, load_key, verify_tflite
    from tinymlops.settings import Environment

    # the project as the repository ships it: the launcher and the .gitignore that commits metrics
    shutil.copytree(REPO / "bin", project / "bin")
    shutil.copy(REPO / ".gitignore", project / ".gitignore")
    subprocess.run([*GIT, "add", "-A"], cwd=project, check=True)
    subprocess.run([*GIT, "commit", "-qm", "launcher"], cwd=project, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    (clone / ".venv").symlink_to(Path(sys.prefix))  # `make install` made .venv in the checkout

    _dvc(clone, "repro")
    int8 = clone / stages.TFLITE_DIR / stages.INT8_TFLITE
    metrics = json.loads((clone / "reports" / "metrics.json").read_text())
    assert metrics["accuracy_float"] >= 0.95
    assert metrics["accuracy_float"] - metrics["accuracy_int8_tflm"] <= 0.01

    # The flow's bytes: the same library stages (train → watermark → quantize), the same key.
    home = Environment.from_env(project).home
    config = WatermarkConfig.load_from(project)
    key = load_key(config.key_path(home))  # the stage made it there, outside git
    assert not any(clone.rglob("*.key"))
    marked = tmp_path / "marked"
    marked.mkdir()
    protect.embed_watermark(params, prepared_dir, trained_dir, marked, key, config)
    stages.quantize(params, prepared_dir, marked, tmp_path / "tflite")
    assert sha256_file(int8) == sha256_file(tmp_path / "tflite" / stages.INT8_TFLITE)
    report = verify_tflite(int8.read_bytes(), key, config, int8.name)
    assert report.owned, report.line()

    second = _dvc(clone, "repro")
    assert "Running stage" not in second

    # metrics, plots and dvc.lock go to git; other revisions can be compared
    subprocess.run([*GIT, "add", "dvc.lock", "reports/metrics.json", "reports/plots"], cwd=clone, check=True)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout
    assert "models/" not in status and "data/" not in status  # the cached outputs stay out of git
    subprocess.run([*GIT, "commit", "-qm", "baseline"], cwd=clone, check=True)
    diff = json.loads(_dvc(clone, "metrics", "diff", "HEAD", "--all", "--json"))
    old = diff["reports/metrics.json"]["accuracy_int8_tflm"]["old"]
    assert old == pytest.approx(metrics["accuracy_int8_tflm"])  # a number, not `!`

    _dvc(clone, "exp", "run", "-S", "evaluate.max_accuracy_drop=0.02", "--name", "looser-gate")
    shown = _dvc(clone, "exp", "show", "--json")
    values = [r for r in _metric_values(json.loads(shown)) if r is not None]
    assert len(values) >= 2 and all(v == pytest.approx(metrics["accuracy_int8_tflm"]) for v in values), shown

    plots = json.loads(_dvc(clone, "plots", "show", "--json"))  # {"data": {plot: [...]}, "errors": [...]}
    shown = plots.get("data", {})
    assert {"training curves", "loss", "confusion matrix (int8 on TFLite Micro)"} <= set(shown), list(shown)
    assert all(shown[name] for name in shown) and not plots.get("errors"), plots.get("errors")


def _metric_values(node: object) -> list[float | None]:
    """Every accuracy_int8_tflm value in `dvc exp show --json` (baseline, experiments)."""
    found: list[float | None] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "accuracy_int8_tflm" and not isinstance(value, dict | list):
                found.append(value)
            else:
                found += _metric_values(value)
    elif isinstance(node, list):
        for item in node:
            found += _metric_values(item)
    return found
