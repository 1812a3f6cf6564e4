"""A fresh git + DVC project holding the checkout's shipped params and configs: what the tests and
the pipeline benchmarks run the flow in, so nothing touches the developer's checkout."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.paths import REPO

# dvc.yaml's code dependencies (tinymlops/ml/model, tinymlops/ml/quantize.py) must exist in the project too,
# and the firmware sources the HIL builds the update agent from (a deployment runs from the checkout).
PROJECT_FILES = (
    "params.yaml",
    "dvc.yaml",
    "configs",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
    "tinymlops",
    "firmware",
)


def make_project(dest: Path) -> Path:
    """A fresh git + DVC repository holding the project's shipped params and configs."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".gitignore").write_text("/.tinymlops/\n/data/raw\n/data/prepared\n/models/\n/reports/\n")
    git = ["git", "-c", "user.name=tinymlops-test", "-c", "user.email=test@tinymlops.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "project"], cwd=dest, check=True)
    return dest
