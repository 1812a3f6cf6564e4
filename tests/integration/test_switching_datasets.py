"""Switching datasets back and forth in one project (one state folder): digits → a signed time
series → digits. Every run trains, signs, verifies on HIL and rolls out with its own data's
golden vectors and input transform; the rollback to a release with other inputs is skipped, not
tried ("Dimension mismatch" in the rollout before)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow


def _run(project: Path, **overrides):
    from flows.pipeline import pipeline
    from tasks.context import project as in_project

    with in_project(project):
        return pipeline(rollout_devices=60, **overrides)


def _series(n: int = 240, t: int = 16, c: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    time = np.linspace(0, 4 * np.pi, t)
    base = np.stack([np.sin(time), np.sign(np.sin(time)), np.cos(2 * time)])
    x = base[y][:, :, None] * np.array([200.0, 50.0, 5.0]) - 40 + rng.normal(0, 5, (n, t, c))
    return x.astype(np.float32), y.astype(np.int64)


def test_digits_then_time_series_then_digits(project: Path, prefect_server) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["variants"]["enabled"] = False  # the data paths are under test here, not the search
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    first = _run(project)
    assert first.rollout.startswith("succeeded"), first.rollout

    x, y = _series()
    np.savez(project / "imu.npz", x=x, y=y, layout=np.array("time_series"))
    params["data"] |= {"dataset": "npz", "path": "imu.npz"}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    second = _run(project)
    assert second.data_md5 != first.data_md5 and not second.train_cache_hit
    assert second.rollout.startswith("succeeded"), second.rollout  # no rollback to 8×8 inputs tried

    params["data"] |= {"dataset": "digits", "path": None}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    third = _run(project)
    assert third.data_md5 == first.data_md5 and third.train_cache_hit  # same data, same model
    assert third.int8_sha256 == first.int8_sha256
    assert third.rollout.startswith("succeeded"), third.rollout
