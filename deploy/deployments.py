"""Register the deployments declared in prefect.yaml through Prefect's Python API.

prefect.yaml stays the one description (it also works with `prefect deploy --all`); this module
reads it, makes sure the work pool exists and deploys each entry. By default every deployment goes
to its own pool, the process pool, deployed from a local checkout: no network, image or registry.
`register(..., pool="kubernetes")` sends the same deployments to another pool of
`definitions.work_pools` instead, e.g. the Kubernetes pool whose flow runs execute in the image's
copy of the code. Deployments are named like Prefect names them, "<flow>/<deployment>"
(pipeline/manual, rollout/manual, pipeline/retrain-on-drift), the flow being the name its @flow
declares (the function's name when it declares none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from tinymlops.errors import ConfigError
from tinymlops.settings import load_yaml, parse

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
    type: Literal["process", "kubernetes"] = "process"
    work_queue_name: str | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)
    # Where flow runs find the code (a container image's copy of the checkout); None: the checkout
    # the deployments are registered from, which is where a process worker runs them.
    working_directory: str | None = None
    # Kubernetes only: variable -> Secret that holds it under the same key. The job's container reads
    # them from the cluster, so no secret value passes through Prefect's API or database.
    secret_env: dict[str, str] = Field(default_factory=dict)


class DeploymentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    entrypoint: str
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    work_pool: WorkPoolSpec
    schedules: list[ScheduleSpec] = Field(default_factory=list)
    # Prefect deployment triggers as prefect.yaml writes them (e.g. an event trigger whose match
    # and parameters start the deployment on an event); validated by Prefect's own model.
    triggers: list[dict[str, Any]] = Field(default_factory=list)

    # The flow's name as Prefect records it: @flow(name=...) in the entrypoint file, else the
    # function's name. read_specs fills it in from the checkout without importing the flow.
    _flow_name: str | None = PrivateAttr(None)

    @property
    def function(self) -> str:
        return self.entrypoint.rpartition(":")[2]

    @property
    def flow_name(self) -> str:
        return self._flow_name or self.function

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"

    @property
    def entrypoint_file(self) -> str:
        return self.entrypoint.partition(":")[0]


class Definitions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    work_pools: dict[str, WorkPoolSpec] = Field(default_factory=dict)


class PrefectYaml(BaseModel):
    """The parts of prefect.yaml this module reads (build/push/pull are Prefect's own)."""

    model_config = ConfigDict(extra="ignore")
    deployments: list[DeploymentSpec]
    definitions: Definitions = Field(default_factory=Definitions)


def read_spec_file(root: Path = REPO) -> PrefectYaml:
    return parse(PrefectYaml, load_yaml(Path(root) / SPEC_FILE), SPEC_FILE)


def read_specs(root: Path = REPO) -> list[DeploymentSpec]:
    specs = read_spec_file(root).deployments
    for spec in specs:
        spec._flow_name = declared_flow_name(Path(root) / spec.entrypoint_file, spec.function)
    return specs


def declared_flow_name(path: Path, function: str) -> str | None:
    """The `name=` of the @flow decorating `function` in `path` (read, not imported); None if absent."""
    import ast

    if not path.is_file():
        return None
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            for d in node.decorator_list:
                if isinstance(d, ast.Call) and getattr(d.func, "id", getattr(d.func, "attr", None)) == "flow":
                    names = [k.value.value for k in d.keywords if k.arg == "name" and isinstance(k.value, ast.Constant)]
                    return str(names[0]) if names else None
    return None


def base_job_template(pool: WorkPoolSpec) -> dict[str, Any]:
    """The worker type's default template; a Kubernetes job's container also gets `secret_env`."""
    if pool.type == "process":
        from prefect.workers.process import ProcessWorker

        return ProcessWorker.get_default_base_job_template()
    from prefect_kubernetes.worker import KubernetesWorker

    template = KubernetesWorker.get_default_base_job_template()
    if pool.secret_env:
        # A fixed list in place of the "{{ env }}" placeholder: the worker puts the job's own
        # variables (PREFECT_API_URL, the flow run id, the deployment's env) in front of it.
        [container] = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"]
        container["env"] = [
            {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}}
            for name, secret in sorted(pool.secret_env.items())
        ]
    return template


def ensure_pool(pool: WorkPoolSpec) -> None:
    """Create the pool, or bring an existing one's base job template to prefect.yaml's: a worker
    that starts first creates its pool with the plain default template."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists

    template = base_job_template(pool)
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool.name, type=pool.type, base_job_template=template))
        except ObjectAlreadyExists:
            existing = client.read_work_pool(pool.name)
            if existing.type != pool.type:
                raise ConfigError(
                    f"{SPEC_FILE}: work pool {pool.name} exists with type {existing.type}, not {pool.type}"
                ) from None
            if existing.base_job_template != template:
                client.update_work_pool(pool.name, WorkPoolUpdate(base_job_template=template))


def selected(specs: list[DeploymentSpec], only: set[str] | None) -> list[DeploymentSpec]:
    """`only` holds full names ("rollout/manual") or bare deployment names ("manual": every flow's)."""
    return [s for s in specs if only is None or s.full_name in only or s.name in only]


def on_pool(spec_file: PrefectYaml, specs: list[DeploymentSpec], pool: str | None) -> list[DeploymentSpec]:
    """The specs as declared (pool None), or all moved to `definitions.work_pools[pool]`."""
    if pool is None:
        return specs
    pools = spec_file.definitions.work_pools
    if pool not in pools:
        raise ConfigError(f"{SPEC_FILE}: definitions.work_pools has no '{pool}' (there: {', '.join(sorted(pools))})")
    return [s.model_copy(update={"work_pool": pools[pool]}) for s in specs]


def register(root: Path = REPO, only: set[str] | None = None, pool: str | None = None) -> dict[str, UUID]:
    """Deploy every entry of prefect.yaml (or those selected by `only`, see `selected`) from the
    checkout at `root`, each to its own work pool or all to `pool` (a key of definitions.work_pools,
    e.g. "kubernetes"); → {"pipeline/manual": deployment id, …}."""
    from prefect import Flow
    from prefect.deployments.runner import deploy
    from prefect.events import DeploymentEventTrigger
    from prefect.runner.storage import LocalStorage
    from prefect.schedules import Cron

    root = Path(root).resolve()
    spec_file = read_spec_file(root)
    specs = on_pool(spec_file, selected(spec_file.deployments, only), pool)
    # Check every entrypoint first, so a missing flow file registers nothing rather than half.
    for spec in specs:
        if not (root / spec.entrypoint_file).is_file():
            raise ConfigError(f"{SPEC_FILE}: {spec.full_name}: entrypoint file {spec.entrypoint_file} not found")
    for work_pool in {s.work_pool.name: s.work_pool for s in specs}.values():
        ensure_pool(work_pool)
    ids: dict[str, UUID] = {}
    for spec in specs:
        # loaded from the checkout at hand: its parameters become the deployment's typed form
        flow = Flow.from_source(source=str(root), entrypoint=spec.entrypoint)
        deployment = flow.to_deployment(
            name=spec.name,
            work_queue_name=spec.work_pool.work_queue_name,
            job_variables=spec.work_pool.job_variables,
            schedules=[Cron(s.cron, timezone=s.timezone, active=s.active) for s in spec.schedules],
            parameters=spec.parameters,
            description=spec.description,
            tags=spec.tags,
            triggers=[DeploymentEventTrigger(**t) for t in spec.triggers],
        )
        if spec.work_pool.working_directory:  # flow runs pull from there, not from this checkout
            deployment.storage = LocalStorage(spec.work_pool.working_directory)
        [deployment_id] = deploy(
            deployment,
            work_pool_name=spec.work_pool.name,
            build=False,
            push=False,
            print_next_steps_message=False,
            ignore_warnings=True,
        )
        ids[f"{flow.name}/{spec.name}"] = deployment_id
    return ids
