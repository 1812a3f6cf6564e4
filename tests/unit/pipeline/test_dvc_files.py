"""dvc.yaml, params.yaml and .gitignore as DVC's users meet them (fast checks; the slow ones run
`dvc repro` and `dvc exp run` in tests/integration/test_dvc_repro.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.support.paths import REPO
from tinymlops.settings import load_params


def test_dvc_exp_run_set_param_keeps_params_yaml_valid_and_readable(tmp_path: Path) -> None:
    """`dvc exp run -S` rewrites params.yaml with DVC's own code (apply_overrides): nothing in the
    file turns into a bare `key:`, and both DVC and our settings read the result."""
    from dvc.utils.hydra import apply_overrides

    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = load_params(params)
    apply_overrides(str(params), ["train.epochs=7", "data.test_size=0.25"])
    text = params.read_text()
    after = load_params(params)
    assert after.train.epochs == 7 and after.data.test_size == 0.25
    assert after.model_copy(update={"train": before.train, "data": before.data}) == before
    assert after.data.path is None
    assert not [line for line in text.splitlines() if line.split("#")[0].rstrip().endswith(":") and _leaf(line, text)]
    assert "# the smallest class" in text  # comments survive
    assert yaml.safe_load(text)["train"]["epochs"] == 7
    apply_overrides(str(params), ["+data.path=mine.npz", "data.dataset=npz"])  # an npz dataset, as documented
    assert load_params(params).data.path == "mine.npz"


def _leaf(line: str, text: str) -> bool:
    """A `key:` line with nothing under it (YAML null): the next non-comment line is not deeper."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if line not in lines:
        return False
    i = lines.index(line)
    indent = len(line) - len(line.lstrip())
    if i + 1 == len(lines):
        return True
    nxt = lines[i + 1]
    deeper = len(nxt) - len(nxt.lstrip()) > indent
    return not deeper and not nxt.lstrip().startswith("- ")  # a block list at the same indent is its value


def test_metrics_and_plots_are_committed_with_dvc_lock(tmp_path: Path) -> None:
    """cache: false outputs live in git, so `dvc exp show` / `metrics diff` / `plots diff` can read
    them at any revision; the cached outputs stay out of git."""
    shutil.copy(REPO / ".gitignore", tmp_path / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    uncached = [
        next(iter(entry))
        for stage in dvc["stages"].values()
        for kind in ("metrics", "plots")
        for entry in stage.get(kind, [])
        if isinstance(entry, dict) and next(iter(entry.values())).get("cache") is False
    ]
    assert set(uncached) == {"reports/metrics.json", "reports/plots/training.csv", "reports/plots/confusion.csv"}
    for path in [*uncached, "dvc.lock"]:
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=tmp_path)
        assert ignored.returncode == 1, f"{path} is git-ignored"
    for path in ("reports/evaluation.json", "models/tflite/model_int8.tflite", "data/raw/x"):
        assert subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=tmp_path).returncode == 0, path


def test_stages_run_through_the_launcher_and_the_watermark_stage_is_there() -> None:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stages = dvc["stages"]
    assert all(stage["cmd"].startswith("bin/tinymlops ") for stage in stages.values())
    assert list(stages) == ["ingest", "prepare", "train", "watermark", "quantize", "evaluate"]
    assert "models/watermarked" in stages["quantize"]["deps"]
    assert (REPO / "bin" / "tinymlops").stat().st_mode & 0o111
    assert {"training curves", "loss", "confusion matrix (int8 on TFLite Micro)"} == {
        next(iter(p)) for p in dvc["plots"]
    }
