"""MLflow as its users meet it, read back through MLflow's own REST API (its server app, on the
test's store): the experiment opens as model training, runs carry MLflow's standard tags and a
description, and the registry keeps one version per distinct int8 file, tagged and described,
with the model's input/output signature."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tinymlops.settings import Environment, TrackingConfig
from tinymlops.tracking import Artifact, Registry, Tag, Tracker, VersionTag
from tinymlops.util.lineage import GitState


@dataclass
class Tensor:  # what log_signature reads of a tinymlops.ml.quantize.TensorInfo
    name: str
    dtype: str
    shape: list[int]


@pytest.fixture
def rest(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """MLflow's REST API on this project's store: the server app itself, in-process."""
    from mlflow.server import app, handlers
    from mlflow.server.constants import BACKEND_STORE_URI_ENV_VAR, SERVE_ARTIFACTS_ENV_VAR

    monkeypatch.setenv(BACKEND_STORE_URI_ENV_VAR, Environment.from_env(project).tracking_uri)
    monkeypatch.setenv(SERVE_ARTIFACTS_ENV_VAR, "false")
    monkeypatch.setattr(handlers, "_tracking_store", None)  # the app caches the store of its first request
    monkeypatch.setattr(handlers, "_model_registry_store", None)
    with app.test_client() as client:
        yield client


def pipeline_run(project: Path, model: bytes, name: str = "crimson-otter") -> Tracker:
    env, config = Environment.from_env(project), TrackingConfig()
    tracker = Tracker.start(env, config, run_name=name, tags={})
    tracker.log_lineage(GitState(sha="a" * 40, dirty=False), "flow-run-id", "pipeline", "cli")
    tracker.describe("Pipeline cli run (Prefect flow run `crimson-otter`): digits → cnn_small")
    int8 = project / "model_int8.tflite"
    int8.write_bytes(model)
    tracker.artifact(int8, Artifact.INT8_TFLITE)
    tracker.log_signature(
        [Tensor("serving_default_input:0", "int8", [1, 8, 8, 1])],
        [Tensor("StatefulPartitionedCall:0", "int8", [1, 10])],
        Artifact.INT8_TFLITE,
    )
    return tracker


def register(tracker: Tracker, sha: str, hil: str = "passed") -> str:
    tags = {VersionTag.ACCURACY: "0.9833", VersionTag.HIL + "nrf52840": hil, VersionTag.INSTANCE: "0000000100000001"}
    return tracker.register_candidate(TrackingConfig(), sha256=sha, tags=tags, description=f"int8 ptq, sha256 {sha}")


def test_experiment_opens_as_model_training_and_runs_carry_mlflows_own_tags(project: Path, rest) -> None:
    tracker = pipeline_run(project, b"model-a")
    experiment = rest.get("/api/2.0/mlflow/experiments/get-by-name", query_string={"experiment_name": "tinymlops"})
    tags = {t["key"]: t["value"] for t in experiment.json["experiment"]["tags"]}
    assert tags[Tag.EXPERIMENT_KIND] == "custom_model_development"  # not the GenAI view

    run = rest.get("/api/2.0/mlflow/runs/get", query_string={"run_id": tracker.run_id}).json["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["mlflow.source.git.commit"] == "a" * 40
    assert tags["mlflow.source.name"] == "flows/pipeline.py:pipeline"
    assert tags["mlflow.source.type"] == "JOB"
    assert tags["mlflow.note.content"].startswith("Pipeline cli run")  # the run page's description
    assert tags[Tag.TRIGGER] == "cli"

    tracker.finish("KILLED")  # Ctrl-C
    run = rest.get("/api/2.0/mlflow/runs/get", query_string={"run_id": tracker.run_id}).json["run"]
    assert run["info"]["status"] == "KILLED"


def test_an_older_experiment_is_switched_to_model_training(project: Path, rest) -> None:
    from mlflow import MlflowClient

    env = Environment.from_env(project)
    MlflowClient(env.tracking_uri, registry_uri=env.tracking_uri).create_experiment(
        "tinymlops"
    )  # as earlier versions made it: no kind
    pipeline_run(project, b"model-a")
    experiment = rest.get("/api/2.0/mlflow/experiments/get-by-name", query_string={"experiment_name": "tinymlops"})
    assert {"key": Tag.EXPERIMENT_KIND, "value": "custom_model_development"} in experiment.json["experiment"]["tags"]


def test_identical_bytes_are_one_version_and_versions_can_be_told_apart(project: Path, rest) -> None:
    first = register(pipeline_run(project, b"model-a"), "a" * 64)
    again = pipeline_run(project, b"model-a")
    assert register(again, "a" * 64, hil="failed") == first == "1"  # same bytes, same version
    other = register(pipeline_run(project, b"model-b"), "b" * 64)
    assert other == "2"

    def version(v: str) -> dict:
        got = rest.get("/api/2.0/mlflow/model-versions/get", query_string={"name": "tinymlops-int8", "version": v})
        return got.json["model_version"]

    v1, v2 = version("1"), version("2")
    tags1 = {t["key"]: t["value"] for t in v1["tags"]}
    assert tags1[VersionTag.SHA256] == "a" * 64 and tags1[VersionTag.ACCURACY] == "0.9833"
    assert tags1[VersionTag.HIL + "nrf52840"] == "failed"  # refreshed by the latest run of these bytes
    assert tags1[VersionTag.LAST_RUN] == again.run_id and tags1[VersionTag.INSTANCE] == "0000000100000001"
    assert v1["description"] == f"int8 ptq, sha256 {'a' * 64}"
    assert {t["key"]: t["value"] for t in v2["tags"]}[VersionTag.SHA256] == "b" * 64
    assert v2["aliases"] == ["candidate"] and not v1.get("aliases")

    # the version's signature, as the model version page reads it
    mlmodel = rest.get(
        "/model-versions/get-artifact", query_string={"name": "tinymlops-int8", "version": "2", "path": "MLmodel"}
    )
    assert mlmodel.status_code == 200, mlmodel.data
    import yaml

    signature = yaml.safe_load(mlmodel.data)["signature"]
    inputs, outputs = json.loads(signature["inputs"]), json.loads(signature["outputs"])
    assert inputs == [
        {"type": "tensor", "tensor-spec": {"dtype": "int8", "shape": [-1, 8, 8, 1]}, "name": "serving_default_input:0"}
    ]
    assert outputs[0]["tensor-spec"] == {"dtype": "int8", "shape": [-1, 10]}


def test_aliases_of_a_version(project: Path) -> None:
    register(pipeline_run(project, b"model-a"), "a" * 64)
    registry = Registry(Environment.from_env(project), TrackingConfig())
    registry.promote("1", "simulated-ok")
    assert registry.aliases("1") == ["candidate", "simulated-ok"]
    registry.promote("1")
    assert registry.aliases("1") == ["candidate", "production", "simulated-ok"]


def test_the_candidate_comes_from_this_projects_registry_whatever_mlflow_was_pointed_at(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two projects in one process (a test worker, the serve stack): downloading one's candidate
    neither reads the other's registry nor points MLflow (or MLFLOW_TRACKING_URI) anywhere."""
    import os

    import mlflow

    from tinymlops.tracking import download_candidate
    from tinymlops.util.io import sha256_bytes

    register(pipeline_run(project, b"ours"), sha256_bytes(b"ours"))
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("TINYMLOPS_HOME", str(other / ".tinymlops"))
    register(pipeline_run(other, b"theirs"), sha256_bytes(b"theirs"))
    theirs = Environment.from_env(other)
    monkeypatch.setenv("TINYMLOPS_HOME", str(project / ".tinymlops"))
    ours = Environment.from_env(project)
    assert ours.tracking_uri != theirs.tracking_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", theirs.tracking_uri)  # MLflow's process-wide URIs: the other's
    mlflow.set_tracking_uri(theirs.tracking_uri)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    try:
        got = download_candidate(ours, TrackingConfig(), tmp_path / "dl")
        assert got.read_bytes() == b"ours"
        assert mlflow.get_tracking_uri() == theirs.tracking_uri and "MLFLOW_TRACKING_URI" not in os.environ
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # back to unset


def test_a_nested_run_cut_short_by_ctrl_c_ends_killed_not_failed(project: Path) -> None:
    """Ctrl-C during the variant search: the variant's nested run did not fail, its user stopped it."""
    import os
    import signal

    from tinymlops.util.interrupt import sigint_latch

    parent = pipeline_run(project, b"model")
    failed, stopped = parent.child("variant-a", {}), parent.child("variant-b", {})
    failed.finish(False)
    with sigint_latch():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000_000):  # the handler runs between bytecodes
                pass
        stopped.finish(False)
    status = {r: parent.client.get_run(r).info.status for r in (failed.run_id, stopped.run_id)}
    assert status == {failed.run_id: "FAILED", stopped.run_id: "KILLED"}


def _plan_report(accepted: bool) -> dict:
    def attempt(n: int, epochs: int, cost: float, owned: bool) -> dict:
        plan = {"n_triggers": n, "trigger_share": 0.2, "clean_repeats": 5, "epochs": epochs}
        return {
            "plan": plan, "val_accuracy_before": 1.0, "val_accuracy_after": 1.0 - cost, "accuracy_cost": cost,
            "matches": n, "p_value": 1e-39, "p_int8_margin": 1e-23, "owned": owned, "seconds": 2.0,
        }  # fmt: skip

    attempts = [attempt(64, 12, 0.0, False), attempt(64, 24, 0.0625, True)]
    if accepted:
        attempts.append(attempt(64, 18, 0.0, True))
    reason = "plan 3: 64 triggers, cost +0.0 pt" if accepted else "watermark refused: 56 training samples, 4 classes"
    return {
        "accepted": accepted,
        "reason": reason,
        "attempts": attempts,
        "chosen": 2 if accepted else None,
        "min_triggers": 64,
    }


@pytest.mark.parametrize("accepted", [True, False])
def test_the_watermark_plan_is_recorded_chosen_or_refused(project: Path, accepted: bool) -> None:
    from tinymlops.tracking import Metric, Param

    tracker = pipeline_run(project, b"model")
    report = _plan_report(accepted)
    path = project / "watermark_plan.json"
    path.write_text(json.dumps(report))
    tracker.log_watermark_plan(report, path)
    run = tracker.client.get_run(tracker.run_id)
    # accepted: the chosen plan; refused: the best owned attempt (the one the reason quotes)
    assert run.data.params[Param.WATERMARK_TRIGGERS] == "64" and run.data.params[Param.WATERMARK_CLEAN_REPEATS] == "5"
    assert run.data.params[Param.WATERMARK_EPOCHS] == ("18" if accepted else "24")
    assert run.data.metrics[Metric.WATERMARK_COST_PT] == pytest.approx(0.0 if accepted else 6.25)
    assert run.data.metrics[Metric.WATERMARK_PLAN_ATTEMPTS] == len(report["attempts"])
    assert run.data.metrics[Metric.WATERMARK_MIN_TRIGGERS] == 64
    assert run.data.tags[Tag.WATERMARK_PLAN] == (report["reason"] if accepted else "refused")
    assert (Tag.WATERMARK_REFUSED in run.data.tags) is not accepted
    if not accepted:
        assert (
            run.data.tags[Tag.WATERMARK_REFUSED] == report["reason"] and run.data.tags[Tag.WATERMARK_OWNED] == "False"
        )
    arts = {a.path for a in tracker.client.list_artifacts(tracker.run_id, Artifact.WATERMARK)}
    assert f"{Artifact.WATERMARK}/watermark_plan.json" in arts
