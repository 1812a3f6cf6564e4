"""DVC: record the data stages' outputs in dvc.lock, push them, and read the dataset version.

The dataset version is DVC's md5 of data/prepared (a `.dir` digest), the same string
`dvc status`, `dvc diff` and the remote know it by.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tinymlops.errors import VersioningError
from tinymlops.settings import load_yaml

DATA_STAGES = ("ingest", "prepare")
OVERRIDE_REMOTE = "tinymlops-override"


def _dvc(root: Path, *args: str) -> str:
    """Run DVC's own CLI in the project, as `dvc repro` users do: DVC resolves targets against the
    working directory, so it gets the project as its own cwd and this process's never moves."""
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith("ERROR")), lines[-1] if lines else "no output")
        if "not inside of a DVC repository" in detail:
            raise VersioningError(f"{root}: not a DVC repository (run `dvc init` there)")
        raise VersioningError(f"dvc {args[0]} failed: {detail.removeprefix('ERROR: ')}")
    return proc.stdout


def _target(stage: str) -> str:
    return f"dvc.yaml:{stage}"


def record(root: Path, stages: tuple[str, ...] = DATA_STAGES) -> None:
    """Hash the stages' current outputs into DVC's cache and dvc.lock, without re-running them
    (the flow ran the same library functions the stage commands call)."""
    _dvc(Path(root), "commit", "--force", "--quiet", *(_target(s) for s in stages))


def push(root: Path, remote_url: str | None = None) -> int:
    """Push cached data to the default remote, or to `remote_url` when one is configured
    (TINYMLOPS_DVC_REMOTE); returns the number of files transferred."""
    remote: list[str] = []
    if remote_url:
        _set_local_remote(Path(root), remote_url)
        remote = ["--remote", OVERRIDE_REMOTE]
    out = _dvc(Path(root), "push", *remote, *(_target(s) for s in DATA_STAGES))
    pushed = re.search(r"(\d+) files? pushed", out)
    return int(pushed.group(1)) if pushed else 0


def _set_local_remote(root: Path, url: str) -> None:
    """Machine-local remote in .dvc/config.local (git-ignored), never in the shared config."""
    path = root / ".dvc" / "config.local"
    text = path.read_text() if path.exists() else ""
    section = f"['remote \"{OVERRIDE_REMOTE}\"']"
    if section not in text:
        text += f"{section}\n    url = {url}\n"
        path.write_text(text)
        os.chmod(path, 0o600)


def output_md5(root: Path, out: str = "data/prepared") -> str:
    """The md5 dvc.lock records for `out`."""
    lock = Path(root) / "dvc.lock"
    if not lock.is_file():
        raise VersioningError(f"{lock}: not found; the data stages have not been recorded yet")
    lock_data = load_yaml(lock)
    stages = lock_data.get("stages", {}) if isinstance(lock_data, dict) else {}
    for stage in stages.values():
        for entry in stage.get("outs", []):
            if entry.get("path") == out:
                return str(entry["md5"])
    raise VersioningError(f"{lock}: no output '{out}' recorded")
