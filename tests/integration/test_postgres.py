"""The at-scale column on the PostgreSQL at 127.0.0.1:5432: an MLflow server (backend store in
PostgreSQL, artifacts proxied to a directory) and a Prefect server (database in PostgreSQL), each
a real process with its own fresh database — and the fleet server on PostgreSQL too, with a
simulated fleet polling it on the real clock. The pipeline runs against all three, as a webhook
run, ending with a staged rollout on that fleet server; what landed is read back through the APIs
and straight from the databases."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ADMIN_URL = os.environ.get("TINYMLOPS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _reachable() -> str | None:
    """None when usable, else why not (the skip reason)."""
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError as exc:
        return f"no PostgreSQL on 127.0.0.1:5432 ({exc.strerror or exc}); set up one or TINYMLOPS_TEST_POSTGRES_URL"
    import psycopg

    try:
        psycopg.connect(ADMIN_URL, connect_timeout=5).close()
    except psycopg.Error as exc:
        return f"PostgreSQL on 127.0.0.1:5432 refused {ADMIN_URL.split('@')[0]}@…: {str(exc).splitlines()[0]}"
    return None


_WHY_NOT = _reachable()
if _WHY_NOT:
    pytest.skip(_WHY_NOT, allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url(name: str, driver: str) -> str:
    from sqlalchemy.engine import make_url

    return (
        make_url(ADMIN_URL).set(drivername=f"postgresql+{driver}", database=name).render_as_string(hide_password=False)
    )


@pytest.fixture
def database() -> Iterator:
    """Makes fresh databases named after the test; drops them afterwards."""
    import psycopg

    made: list[str] = []

    def make(purpose: str) -> str:
        name = f"tinymlops_test_{purpose}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return name

    yield make
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def launch(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(proc: subprocess.Popen, cmd: list[str], log: Path, health: str, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"{cmd[0]} exited: {log.read_text()[-2000:]}"
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{health} did not answer: {log.read_text()[-2000:]}"
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_pipeline_on_mlflow_and_prefect_servers_backed_by_postgres(project: Path, tmp_path: Path, database) -> None:
    import psycopg
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import pipeline
    from flows.rollout import RolloutRun, rollout
    from tasks.context import PipelineRun
    from tasks.context import project as in_project
    from tinymlops.settings import TrackingConfig
    from tinymlops.tracking import Metric, Tag

    mlflow_db, prefect_db, fleet_db = database("mlflow"), database("prefect"), database("fleet")
    bin_dir = Path(sys.executable).parent
    base_env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    base_env.pop("PREFECT_API_URL", None)
    base_env.pop("MLFLOW_TRACKING_URI", None)

    artifacts = tmp_path / "mlflow-artifacts"
    mlflow_port, prefect_port = free_port(), free_port()
    mlflow_cmd = [
        str(bin_dir / "mlflow"), "server",
        "--backend-store-uri", database_url(mlflow_db, "psycopg"),
        "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
    ]  # fmt: skip
    prefect_env = {
        **base_env,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url(prefect_db, "asyncpg"),
    }
    prefect_cmd = [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)]
    # both start (and migrate their databases) at once
    mlflow_proc = launch(mlflow_cmd, base_env, tmp_path / "mlflow.log")
    fleet = FleetOnPostgres(project, database_url(fleet_db, "psycopg"), base_env)
    try:
        prefect_proc = launch(prefect_cmd, prefect_env, tmp_path / "prefect.log")
        try:
            wait_healthy(mlflow_proc, mlflow_cmd, tmp_path / "mlflow.log", f"http://127.0.0.1:{mlflow_port}/health")
            wait_healthy(
                prefect_proc, prefect_cmd, tmp_path / "prefect.log", f"http://127.0.0.1:{prefect_port}/api/health"
            )
            tracking_uri = f"http://127.0.0.1:{mlflow_port}"
            os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
            fleet.start()
            run = PipelineRun(
                root=str(project),
                trigger="webhook",
                git_ref="refs/heads/main",
                git_sha="0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
                repository="octo-org/tinyml-app",
            )
            with (
                temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{prefect_port}/api"}),
                in_project(run.root),
            ):
                origin = run.model_dump(include={"trigger", "git_ref", "git_sha", "repository"})
                summary = pipeline(**origin)
                # the rollout flow run again finds the finished rollout on the server: it resumes it
                again = rollout(RolloutRun(root=str(project)))
                with get_client(sync_client=True) as client:
                    flow_run = client.read_flow_run(uuid.UUID(summary.prefect_flow_run_id))
                APILogHandler().flush()  # send the run's logs before the server goes away
        finally:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            fleet.stop()
            stop(prefect_proc)

        # MLflow, through its API: the run, its metrics, its trigger tags, the registered model
        mlflow_run = MlflowClient(tracking_uri, registry_uri=tracking_uri).get_run(summary.mlflow_run_id)
        assert mlflow_run.info.status == "FINISHED"
        assert mlflow_run.data.metrics[Metric.ACCURACY_INT8_TFLM] == pytest.approx(summary.accuracy_int8_tflm)
        assert mlflow_run.data.metrics[Metric.ACCURACY_FLOAT] >= 0.9
        tags = mlflow_run.data.tags
        assert tags[Tag.TRIGGER] == "webhook"
        assert tags[Tag.TRIGGER_SHA] == run.git_sha and tags[Tag.GIT_REF] == run.git_ref
        assert tags[Tag.REPOSITORY] == run.repository
        assert tags[Tag.FLOW_RUN_ID] == summary.prefect_flow_run_id
        assert summary.mlflow_run_url.startswith(tracking_uri)
        # … in PostgreSQL itself, with the artifacts in the proxied store
        with psycopg.connect(ADMIN_URL.rsplit("/", 1)[0] + f"/{mlflow_db}") as conn:
            status = conn.execute("SELECT status FROM runs WHERE run_uuid = %s", (summary.mlflow_run_id,)).fetchone()
            accuracy = conn.execute(
                "SELECT value FROM latest_metrics WHERE run_uuid = %s AND key = %s",
                (summary.mlflow_run_id, Metric.ACCURACY_INT8_TFLM),
            ).fetchone()
        assert status == ("FINISHED",) and accuracy[0] == pytest.approx(summary.accuracy_int8_tflm)
        assert any(p.name == "model_int8.tflite" for p in artifacts.rglob("*.tflite"))

        # Prefect: the flow run completed, and its row is in PostgreSQL
        assert flow_run.state.is_completed()
        with psycopg.connect(ADMIN_URL.rsplit("/", 1)[0] + f"/{prefect_db}") as conn:
            row = conn.execute("SELECT state_type, name FROM flow_run WHERE id = %s", (flow_run.id,)).fetchone()
        assert row[0] == "COMPLETED"

        # the fleet server on PostgreSQL: the release rolled out to every device of the classes it
        # targets, each once; `production` moved; the second flow run resumed instead of starting over
        assert summary.rollout.startswith("succeeded on the fleet at"), summary.rollout
        assert again.resumed and again.uploaded == [] and again.status == "succeeded"
        config = TrackingConfig.load_from(project)
        production = MlflowClient(tracking_uri, registry_uri=tracking_uri).get_model_version_by_alias(
            config.registered_model, config.production_alias
        )
        assert str(production.version) == summary.model_version
        with psycopg.connect(ADMIN_URL.rsplit("/", 1)[0] + f"/{fleet_db}") as conn:
            status = conn.execute("SELECT status FROM rollouts WHERE id = %s", (again.rollout_id,)).fetchone()
            classes = {r[0] for r in conn.execute("SELECT device_class FROM release_bundles").fetchall()}
            members = conn.execute("SELECT device_id FROM rollout_members").fetchall()
            on_release = conn.execute(
                "SELECT count(*) FROM devices WHERE current_sequence = (SELECT max(sequence) FROM releases)"
            ).fetchone()
        assert status == ("succeeded",)
        targeted = [d for d in fleet.farm.devices if d.device_class in classes]
        assert len(members) == len(set(members)) == len(targeted) > 0
        assert on_release[0] == len(targeted)
    finally:
        fleet.stop()
        stop(mlflow_proc)


class FleetOnPostgres:
    """`tinymlops fleet serve` on a PostgreSQL database, trusting the project's signing root, with
    a simulated fleet of every device class polling it; the pipeline finds it via TINYMLOPS_FLEET_URL."""

    DEVICES = 50

    def __init__(self, project: Path, db_url: str, env: dict[str, str]) -> None:
        import secrets

        self.project, self.db_url, self.env = project, db_url, env
        self.admin, self.provisioning = secrets.token_hex(16), secrets.token_hex(16)
        self.stack = contextlib.ExitStack()
        self.farm = None

    def start(self) -> None:
        from tinymlops.bundle import BundleConfig, ensure_dev_keys
        from tinymlops.device.profiles import load_profiles
        from tinymlops.fleet.api.serving import serve_in_process
        from tinymlops.fleetsim.farm import DeviceFarm
        from tinymlops.fleetsim.simulator import SimulationConfig
        from tinymlops.settings import Environment

        home = Environment.from_env(self.project).home
        trust = ensure_dev_keys(BundleConfig.load_from(self.project).keys_path(home)).root_public
        (self.project / "configs" / "rollout.yaml").write_text(FAST_POLICY)  # seconds, not hours
        env = {
            **self.env,
            "TINYMLOPS_HOME": str(home),
            "TINYMLOPS_FLEET_DB_URL": self.db_url,
            "TINYMLOPS_FLEET_ADMIN_TOKENS": f"pipeline:{self.admin}",
            "TINYMLOPS_FLEET_PROVISIONING_TOKEN": self.provisioning,
            "TINYMLOPS_FLEET_TRUST": str(trust),
        }
        url, _ = self.stack.enter_context(serve_in_process(env, args=("--root", str(self.project))))
        profiles = load_profiles(self.project)
        classes = sorted({p.device_class for p in profiles})
        config = SimulationConfig(devices=self.DEVICES, classes=classes, window_seconds=1, inferences_per_window=200)
        farm = DeviceFarm(url, self.provisioning, config, trust, vendor=profiles[0].vendor, interval_seconds=0.3)
        self.farm = self.stack.enter_context(farm)
        os.environ["TINYMLOPS_FLEET_URL"], os.environ["TINYMLOPS_FLEET_ADMIN_TOKEN"] = url, self.admin

    def stop(self) -> None:
        os.environ.pop("TINYMLOPS_FLEET_URL", None)
        os.environ.pop("TINYMLOPS_FLEET_ADMIN_TOKEN", None)
        self.stack.close()


FAST_POLICY = """\
groups:
  - {name: canary, percent: 10, min_soak_seconds: 1, min_devices: 2}
  - {name: half, percent: 50, min_soak_seconds: 1, min_devices: 2}
  - {name: all, percent: 100, min_soak_seconds: 1, min_devices: 2}
health: {min_inferences: 300}
"""
