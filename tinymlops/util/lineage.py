"""Where a run came from: the git commit (and whether the tree had uncommitted changes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pydantic import BaseModel


class GitState(BaseModel):
    sha: str  # "unknown" outside a git checkout
    dirty: bool


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_state(root: Path) -> GitState:
    sha = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return GitState(sha=sha or "unknown", dirty=bool(status))
