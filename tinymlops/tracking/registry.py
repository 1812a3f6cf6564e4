"""The model registry: versions of the int8 model and the aliases that say where each stands."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tinymlops.settings import Environment, TrackingConfig
from tinymlops.tracking.tracker import _client, _local_store


def ui_command(env: Environment, port: int = 5000) -> str:
    """The command that serves the UI for a local store; "" for a server (its UI is up already)."""
    if _local_store(env.tracking_uri):
        mlflow_bin = Path(sys.executable).parent / "mlflow"  # the one installed beside us
        return f"{mlflow_bin} ui --backend-store-uri {env.tracking_uri} --port {port}"
    return ""


def run_url(env: Environment, experiment_id: str, run_id: str, port: int = 5000) -> str:
    base = f"http://127.0.0.1:{port}" if _local_store(env.tracking_uri) else env.tracking_uri.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def download_candidate(env: Environment, config: TrackingConfig, dst: Path | None = None) -> Path:
    """The int8 file behind the `candidate` alias (what later stages sign and ship)."""
    return download_alias(env, config, config.candidate_alias, dst)


def download_alias(env: Environment, config: TrackingConfig, alias: str, dst: Path | None = None) -> Path:
    """The int8 file behind `alias`, from this environment's registry. Resolved with a client bound
    to its URIs: a `models:/` URI would resolve through MLflow's process-wide URIs, which another
    project in the same process may have set (and setting them leaks into MLFLOW_TRACKING_URI)."""
    import mlflow

    dst = Path(dst or tempfile.mkdtemp(prefix=f"tinymlops-{alias}-"))
    client = _client(env.tracking_uri)
    version = client.get_model_version_by_alias(config.registered_model, alias)
    source = client.get_model_version_download_uri(config.registered_model, version.version)
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=env.tracking_uri)
    )
    return next(iter(sorted(local.rglob("*.tflite"))), local)


class Registry:
    """The registered model's aliases: candidate (passed the pipeline), simulated-ok (passed a
    rollout on a simulated fleet) and production (passed a rollout on a fleet server)."""

    def __init__(self, env: Environment, config: TrackingConfig) -> None:
        self.env, self.config, self.client = env, config, _client(env.tracking_uri)

    def version(self, alias: str):  # → ModelVersion | None
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.config.registered_model, alias)
        except MlflowException:
            return None

    def production_model(self, dst: Path) -> Path | None:
        """The int8 file now in production, or None before the first successful rollout."""
        if self.version(self.config.production_alias) is None:
            return None
        return download_alias(self.env, self.config, self.config.production_alias, dst)

    def promote(self, version: str, alias: str | None = None) -> None:
        """Point `alias` (default: production) at `version`."""
        alias = alias or self.config.production_alias
        self.client.set_registered_model_alias(self.config.registered_model, alias, version)

    def aliases(self, version: str) -> list[str]:
        """Every alias now on `version`, the configured ones first (candidate, production)."""
        found = list(self.client.get_model_version(self.config.registered_model, version).aliases)
        order = [self.config.candidate_alias, self.config.production_alias]
        return sorted(found, key=lambda a: (order.index(a) if a in order else len(order), a))

    def tag_version(self, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.config.registered_model, version, key, value)
