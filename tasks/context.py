"""What every task of one pipeline run shares: where things live and what was asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tinymlops import settings
from tinymlops.settings import Environment, PipelineParams, TrackingConfig


class PipelineRun(BaseModel):
    """The flow's parameters (the Prefect UI renders this as a form)."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field(".", description="project directory holding params.yaml, configs/, dvc.yaml")
    params_file: str = Field("params.yaml", description="parameters file, relative to root")
    epochs: int | None = Field(None, ge=1, description="override train.epochs")
    quantization_mode: Literal["ptq", "qat"] | None = Field(None, description="override quantize.mode")
    trigger: str = Field("manual", description="what started the run: manual, schedule, webhook")
    dataset: str | None = Field(None, description="override data.dataset (a registry name, e.g. digits)")
    dry_run: bool = Field(False, description="run and record everything, but do not move the candidate alias")
    rollout_devices: int = Field(
        400, ge=0, description="simulated fleet size for the staged rollout at the end (0: stop at candidate)"
    )
    git_ref: str | None = Field(None, description="git ref that started the run (webhook), e.g. refs/heads/main")
    git_sha: str | None = Field(None, description="commit the push pointed at (webhook)")
    repository: str | None = Field(None, description="repository that was pushed to (webhook), owner/name")


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
    overrides = {}
    if run.epochs is not None:
        overrides["train"] = params.train.model_copy(update={"epochs": run.epochs})
    if run.quantization_mode is not None:
        overrides["quantize"] = params.quantize.model_copy(update={"mode": run.quantization_mode})
    params = params.model_copy(update=overrides)
    if run.dataset is not None:  # re-validated: e.g. 'npz' needs data.path
        dumped = params.model_dump()
        dumped["data"]["dataset"] = run.dataset
        params = settings.parse(PipelineParams, dumped, f"{run.params_file} with dataset={run.dataset!r}")
    tracking = TrackingConfig.load_from(env.root)
    return Context(env=env, params=params, tracking=tracking, run_dir=env.runs_dir / run_id, request=run)
