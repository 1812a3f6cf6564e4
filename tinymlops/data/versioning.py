"""DVC: record the data stages' outputs in dvc.lock, push them, and read the dataset version.

The dataset version is DVC's md5 of data/prepared (a `.dir` digest), the same string
`dvc status`, `dvc diff` and the remote know it by.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import yaml

from tinymlops.errors import VersioningError

DATA_STAGES = ("ingest", "prepare")
OVERRIDE_REMOTE = "tinymlops-override"


@contextlib.contextmanager
def _repo(root: Path) -> Iterator[object]:
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    # DVC resolves targets and outputs against the process's cwd, whatever repo it was given, so
    # its calls run from the repo root (the flow's DVC step is sequential; nothing else moves cwd).
    previous = os.getcwd()
    os.chdir(root)
    try:
        try:
            repo = Repo(".")
        except NotDvcRepoError:
            raise VersioningError(f"{root}: not a DVC repository (run `dvc init` there)") from None
        try:
            yield repo
        finally:
            repo.close()
    finally:
        os.chdir(previous)


def _target(stage: str) -> str:
    return f"dvc.yaml:{stage}"


def record(root: Path, stages: tuple[str, ...] = DATA_STAGES) -> None:
    """Hash the stages' current outputs into DVC's cache and dvc.lock, without re-running them
    (the flow ran the same library functions the stage commands call)."""
    from dvc.exceptions import DvcException

    with _repo(root) as repo:
        try:
            for stage in stages:
                repo.commit(_target(stage), force=True)
        except DvcException as exc:
            raise VersioningError(f"dvc commit failed: {exc}") from None


def push(root: Path, remote_url: str | None = None) -> int:
    """Push cached data to the default remote, or to `remote_url` when one is configured
    (TINYMLOPS_DVC_REMOTE); returns the number of files transferred."""
    from dvc.exceptions import DvcException

    with _repo(root) as repo:
        remote = None
        if remote_url:
            _set_local_remote(Path(root), remote_url)
            repo.config.load()
            remote = OVERRIDE_REMOTE
        try:
            return int(repo.push(targets=[_target(s) for s in DATA_STAGES], remote=remote) or 0)
        except DvcException as exc:
            raise VersioningError(f"dvc push failed: {exc}") from None


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
    for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
        for entry in stage.get("outs", []):
            if entry.get("path") == out:
                return str(entry["md5"])
    raise VersioningError(f"{lock}: no output '{out}' recorded")
