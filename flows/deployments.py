"""Register the deployments declared in prefect.yaml through Prefect's Python API.

prefect.yaml stays the one description (it also works with `prefect deploy --all`); this module
reads it, makes sure the process work pool exists and deploys each entry from a local checkout,
which needs no network, image or registry. Deployments are named like Prefect names them,
"<flow>/<deployment>" (pipeline/manual, rollout/manual), the flow being the entrypoint's function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from pydantic import BaseModel, ConfigDict, Field

from tinymlops.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SPEC_FILE = "prefect.yaml"


class ScheduleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cron: str
    timezone: str = "UTC"
    active: bool = True


class WorkPoolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    work_queue_name: str | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)


class DeploymentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    entrypoint: str
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    work_pool: WorkPoolSpec
    schedules: list[ScheduleSpec] = Field(default_factory=list)

    @property
    def flow_name(self) -> str:
        # Prefect's own convention (`prefect deploy -n flow/deployment` matches the function name)
        return self.entrypoint.rpartition(":")[2]

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"

    @property
    def entrypoint_file(self) -> str:
        return self.entrypoint.partition(":")[0]


def read_specs(root: Path = REPO) -> list[DeploymentSpec]:
    data = yaml.safe_load((Path(root) / SPEC_FILE).read_text(encoding="utf-8"))
    return [DeploymentSpec.model_validate(d) for d in data["deployments"]]


def ensure_process_pool(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template()
                )
            )
        except ObjectAlreadyExists:
            pass


def selected(specs: list[DeploymentSpec], only: set[str] | None) -> list[DeploymentSpec]:
    """`only` holds full names ("rollout/manual") or bare deployment names ("manual": every flow's)."""
    return [s for s in specs if only is None or s.full_name in only or s.name in only]


def register(root: Path = REPO, only: set[str] | None = None) -> dict[str, UUID]:
    """Deploy every entry of prefect.yaml (or those selected by `only`, see `selected`) from the
    checkout at `root`; → {"pipeline/manual": deployment id, …}."""
    from prefect import Flow
    from prefect.schedules import Cron

    root = Path(root).resolve()
    specs = selected(read_specs(root), only)
    # Check every entrypoint first, so a missing flow file registers nothing rather than half.
    for spec in specs:
        if not (root / spec.entrypoint_file).is_file():
            raise ConfigError(f"{SPEC_FILE}: {spec.full_name}: entrypoint file {spec.entrypoint_file} not found")
    ids: dict[str, UUID] = {}
    for spec in specs:
        ensure_process_pool(spec.work_pool.name)
        flow = Flow.from_source(source=str(root), entrypoint=spec.entrypoint)
        deployment_id = flow.deploy(
            name=spec.name,
            work_pool_name=spec.work_pool.name,
            work_queue_name=spec.work_pool.work_queue_name,
            job_variables=spec.work_pool.job_variables,
            schedules=[Cron(s.cron, timezone=s.timezone, active=s.active) for s in spec.schedules],
            parameters=spec.parameters,
            description=spec.description,
            tags=spec.tags,
            build=False,
            push=False,
            print_next_steps=False,
            ignore_warnings=True,
        )
        ids[f"{flow.name}/{spec.name}"] = deployment_id
    return ids
