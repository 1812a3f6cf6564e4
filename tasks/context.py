"""What every task of one pipeline run shares: where things live and what was asked for."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tinymlops import settings
from tinymlops.settings import Environment, PipelineParams, TrackingConfig

# Where a run came from (MLflow tag `trigger`, Prefect tag `origin:<trigger>`): the terminal
# (`tinymlops run`), the Prefect UI's form, the nightly schedule, a git push, or any other API call.
Trigger = Literal["cli", "ui", "schedule", "webhook", "api", "drift"]
TRIGGERS: tuple[Trigger, ...] = ("cli", "ui", "schedule", "webhook", "api", "drift")


class PipelineRun(BaseModel):
    """What one pipeline run was asked for: the flow's parameters plus where the project lives."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field(".", description="project directory holding params.yaml, configs/, dvc.yaml")
    params_file: str = Field("params.yaml", description="parameters file, relative to root")
    epochs: int | None = Field(None, ge=1, description="override train.epochs")
    quantization_mode: Literal["ptq", "qat"] | None = Field(None, description="override quantize.mode")
    trigger: Trigger = Field("api", description="what started the run: cli, ui, schedule, webhook, api, drift")
    dataset: str | None = Field(None, description="override data.dataset (a registry name, e.g. digits)")
    dry_run: bool = Field(False, description="run and record everything, but do not move the candidate alias")
    rollout_devices: int = Field(
        400, ge=0, description="simulated fleet size for the staged rollout at the end (0: stop at candidate)"
    )
    fleet_url: str | None = Field(None, description="fleet server to roll out on (default TINYMLOPS_FLEET_URL)")
    git_ref: str | None = Field(None, description="git ref that started the run (webhook), e.g. refs/heads/main")
    git_sha: str | None = Field(None, description="commit the push pointed at (webhook)")
    repository: str | None = Field(None, description="repository that was pushed to (webhook), owner/name")
    alarm_id: str | None = Field(None, description="drift alarm that started the run (retrain-on-drift)")
    alarm_url: str | None = Field(None, description="that alarm on the fleet dashboard")


class Project(BaseModel):
    """Where the project lives for flow runs started in this process. Not a flow parameter: the
    Prefect form should not ask for a directory, and a deployment runs in its checkout anyway."""

    model_config = ConfigDict(frozen=True)

    root: str = "."
    params_file: str = "params.yaml"
    ephemeral_prefect: bool = False  # the CLI's own short-lived Prefect server: its URL dies with it


_HERE = Project()  # frozen: a safe shared default
_PROJECT: ContextVar[Project] = ContextVar("tinymlops_project", default=_HERE)  # noqa: B039


@contextmanager
def project(root: str | Path = ".", params_file: str | Path = "params.yaml", **kw: bool) -> Iterator[Project]:
    """Flow runs started inside this block work on the project at `root`, whatever the cwd."""
    token = _PROJECT.set(Project(root=str(root), params_file=str(params_file), **kw))
    try:
        yield _PROJECT.get()
    finally:
        _PROJECT.reset(token)


def current_project() -> Project:
    return _PROJECT.get()


class Context(BaseModel):
    model_config = ConfigDict(frozen=True)

    env: Environment
    params: PipelineParams
    tracking: TrackingConfig
    run_dir: Path
    request: PipelineRun = PipelineRun()  # what was asked for (trigger origin, dry run)

    @property
    def raw_dir(self) -> Path:
        return self.env.root / "data" / "raw"

    @property
    def prepared_dir(self) -> Path:
        return self.env.root / "data" / "prepared"


def load_context(run: PipelineRun, run_id: str) -> Context:
    env = Environment.from_env(run.root)
    params = settings.load_params(env.root / run.params_file)
    overrides: dict[str, settings.Strict] = {}
    if run.epochs is not None:
        overrides["train"] = params.train.model_copy(update={"epochs": run.epochs})
    if run.quantization_mode is not None:
        overrides["quantize"] = params.quantize.model_copy(update={"mode": run.quantization_mode})
    params = params.model_copy(update=overrides)
    if run.dataset is not None and run.dataset != params.data.dataset:  # re-validated: 'npz' needs data.path
        dumped = params.model_dump()
        dumped["data"]["dataset"] = run.dataset
        params = settings.parse(PipelineParams, dumped, f"{run.params_file} with dataset={run.dataset!r}")
    tracking = TrackingConfig.load_from(env.root)
    return Context(env=env, params=params, tracking=tracking, run_dir=env.runs_dir / run_id, request=run)
