"""The deployments on the Kubernetes work pool, without a cluster: registered to a real temporary
Prefect server, read back, and the Job a Kubernetes worker would submit for a flow run rendered by
prefect-kubernetes's own code (`KubernetesWorkerJobConfiguration.resolve_for_flow_run`, the call
the worker makes), then checked as a Kubernetes Job by the Kubernetes client's models. What needs a
cluster (the worker creating the Job, the pod running the flow) is left to it; the manifests that
set it up are checked against prefect.yaml here and by tests/infra/test_static.py."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from tests.support.paths import REPO  # noqa: E402

K8S = REPO / "infra" / "k8s" / "base"
OUR_IMAGE = "ghcr.io/tinymlops/tinymlops"
DEPLOYMENTS = {"pipeline/retrain-nightly", "pipeline/manual", "rollout/manual", "pipeline/retrain-on-drift"}


def kubernetes_pool():
    from deploy.deployments import read_spec_file

    return read_spec_file(REPO).definitions.work_pools["kubernetes"]


def k8s_docs(file: str) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all((K8S / file).read_text()) if d}


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def dropped(before: Any, after: Any, path: str = "") -> set[str]:
    """Dotted paths of `before` that are missing from `after`."""
    if isinstance(before, dict):
        return set().union(
            *(
                dropped(v, after.get(k), f"{path}.{k}".lstrip(".")) if k in after else {f"{path}.{k}".lstrip(".")}
                for k, v in before.items()
            )
        )
    if isinstance(before, list):
        return set().union(*(dropped(b, a, f"{path}[{i}]") for i, (b, a) in enumerate(zip(before, after, strict=True))))
    return set()


def as_k8s_model(doc: dict[str, Any], model: str, tolerated: frozenset[str] = frozenset()):
    """`doc` through the Kubernetes client's models (the API's schema) and back: a field the schema
    does not have is dropped on the way, so only the `tolerated` ones may be missing afterwards."""
    from kubernetes_asyncio.client import ApiClient

    async def round_trip():
        async with ApiClient() as client:  # never connects: it only (de)serialises here
            obj = client.deserialize(SimpleNamespace(data=json.dumps(doc)), model)
            return obj, client.sanitize_for_serialization(obj)

    obj, back = asyncio.run(round_trip())
    outside = dropped(doc, back)
    assert outside == tolerated, f"{model}: fields outside its schema: {sorted(outside - tolerated)}"
    return obj


@pytest.fixture(scope="module")
def deployed(prefect_server):
    """The three deployments registered on the Kubernetes pool; removed afterwards, so modules that
    register them on the process pool (same names) find the session server as they left it."""
    from prefect.client.orchestration import get_client

    from deploy.deployments import register

    ids = register(REPO, pool="kubernetes")
    yield ids
    with get_client(sync_client=True) as client:
        for deployment_id in ids.values():
            client.delete_deployment(deployment_id)


def test_deployments_are_registered_on_the_kubernetes_pool(deployed: dict) -> None:
    from prefect.client.orchestration import get_client

    pool = kubernetes_pool()
    assert set(deployed) == DEPLOYMENTS
    with get_client(sync_client=True) as client:
        work_pool = client.read_work_pool(pool.name)
        deployments = {name: client.read_deployment(i) for name, i in deployed.items()}
    assert work_pool.type == "kubernetes"
    [container] = work_pool.base_job_template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["env"] == [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": "tinymlops-secrets", "key": name}}}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "TINYMLOPS_FLEET_ADMIN_TOKEN")
    ]
    for name, deployment in deployments.items():
        assert deployment.work_pool_name == pool.name, name
        assert deployment.job_variables == pool.job_variables, name
        # the flow run loads the flows from the image, not from the checkout they were registered from
        assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": "/app"}}], (
            name
        )
    assert deployments["pipeline/manual"].entrypoint == "flows/pipeline.py:pipeline"
    assert deployments["rollout/manual"].entrypoint == "flows/rollout.py:rollout"
    [nightly] = deployments["pipeline/retrain-nightly"].schedules
    assert (nightly.schedule.cron, nightly.schedule.timezone) == ("0 3 * * *", "Europe/Berlin")
    assert deployments["pipeline/manual"].parameters == {"trigger": "ui"}


def render_job(deployment_id) -> tuple[Any, dict]:
    """A flow run of the deployment and the Job manifest a Kubernetes worker would submit for it."""
    from prefect.client.orchestration import get_client
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    async def render():
        async with get_client() as client:
            flow_run = await client.create_flow_run_from_deployment(deployment_id)
            deployment = await client.read_deployment(deployment_id)
            work_pool = await client.read_work_pool(deployment.work_pool_name)
            configuration = await KubernetesWorkerJobConfiguration.resolve_for_flow_run(
                flow_run, client=client, work_pool=work_pool, worker_name="render-only", deployment=deployment
            )
            await client.delete_flow_run(flow_run.id)  # no worker polls this pool here; leave nothing queued
            return flow_run, configuration

    flow_run, configuration = asyncio.run(render())
    return flow_run, configuration.job_manifest


def test_the_pipeline_job_a_worker_would_submit(deployed: dict) -> None:
    pool = kubernetes_pool()
    flow_run, manifest = render_job(deployed["pipeline/manual"])
    # Prefect's default template sets these two on the pod, where the API server drops them (a warning)
    job = as_k8s_model(
        manifest, "V1Job", frozenset({"spec.template.spec.completions", "spec.template.spec.parallelism"})
    )
    assert (job.api_version, job.kind) == ("batch/v1", "Job")
    assert job.metadata.namespace == pool.job_variables["namespace"] == "tinymlops"
    assert job.metadata.labels["prefect.io/flow-run-id"] == str(flow_run.id)
    assert job.spec.template.metadata.labels["prefect.io/flow-run-id"] == str(flow_run.id)
    assert job.spec.ttl_seconds_after_finished == 86400
    pod = job.spec.template.spec
    assert pod.restart_policy == "Never"
    [container] = pod.containers
    assert container.image == f"{OUR_IMAGE}:{kustomization()['images'][0]['newTag']}"
    assert container.image_pull_policy == "IfNotPresent"
    assert container.args == ["prefect", "flow-run", "execute"]  # Prefect's own runner: pull steps, then the flow
    assert container.resources.requests == {"cpu": "2", "memory": "4Gi"}
    values = {e.name: e.value for e in container.env if e.value_from is None}
    assert values["PREFECT__FLOW_RUN_ID"] == str(flow_run.id)
    assert values["PREFECT_API_URL"] == "http://prefect-server:4200/api"  # the cluster's server, not this test's
    assert {k: values[k] for k in pool.job_variables["env"]} == pool.job_variables["env"]
    secret_refs = {e.name: e.value_from.secret_key_ref for e in container.env if e.value_from is not None}
    assert {n: (r.name, r.key) for n, r in secret_refs.items()} == {n: (s, n) for n, s in pool.secret_env.items()}
    assert not set(secret_refs) & set(values), "a secret must come from the cluster only"


def test_a_pool_the_worker_created_first_gets_the_declared_template(prefect_server) -> None:
    """In the cluster the worker may start before the deploy Job: it creates the pool with the plain
    default template, which registering then brings to prefect.yaml's (the Secret references)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect_kubernetes.worker import KubernetesWorker

    from deploy.deployments import base_job_template, ensure_pool
    from tinymlops.errors import ConfigError

    pool = kubernetes_pool().model_copy(update={"name": "tinymlops-kubernetes-worker-first"})
    default = KubernetesWorker.get_default_base_job_template()
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool.name, type="kubernetes", base_job_template=default))
        ensure_pool(pool)
        assert client.read_work_pool(pool.name).base_job_template == base_job_template(pool) != default
        with pytest.raises(
            ConfigError, match=rf"^prefect.yaml: work pool {pool.name} exists with type kubernetes, not process$"
        ):
            ensure_pool(pool.model_copy(update={"type": "process"}))
        client.delete_work_pool(pool.name)


# -- the manifests that run it, against prefect.yaml (no server) ---------------------------------------
def test_worker_manifests_match_the_pool() -> None:
    pool = kubernetes_pool()
    docs = k8s_docs("prefect-worker.yaml")
    assert "prefect-worker.yaml" in kustomization()["resources"]
    deployment = as_k8s_model(docs["Deployment", "prefect-worker"], "V1Deployment")
    [worker] = deployment.spec.template.spec.containers
    argv = worker.command
    assert argv[:3] == ["prefect", "worker", "start"]
    assert argv[argv.index("--pool") + 1] == pool.name and argv[argv.index("--type") + 1] == pool.type
    namespace = kustomization()["namespace"]
    assert pool.job_variables["namespace"] == namespace
    assert {e.name: e.value for e in worker.env}["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == namespace
    # the worker's identity may do what the worker does, in its namespace
    account = deployment.spec.template.spec.service_account_name
    as_k8s_model(docs["ServiceAccount", account], "V1ServiceAccount")
    binding = as_k8s_model(docs["RoleBinding", account], "V1RoleBinding")
    assert [(s.kind, s.name) for s in binding.subjects] == [("ServiceAccount", account)]
    role = as_k8s_model(docs[binding.role_ref.kind, binding.role_ref.name], "V1Role")
    allowed = {(g, r, v) for rule in role.rules for g in rule.api_groups for r in rule.resources for v in rule.verbs}
    needed = {("batch", "jobs", v) for v in ("create", "get", "list", "watch", "delete")}
    needed |= {("", r, v) for r in ("pods", "pods/log", "events") for v in ("get", "list", "watch")}
    needed |= {("", "events", "create")}
    assert needed <= allowed, sorted(needed - allowed)


def test_deploy_job_registers_on_the_kubernetes_pool() -> None:
    [container] = k8s_docs("deploy-job.yaml")["Job", "tinymlops-deploy"]["spec"]["template"]["spec"]["containers"]
    argv = container["command"]
    assert argv[:2] == ["tinymlops", "deploy"] and argv[argv.index("--pool") + 1] == "kubernetes"
    assert argv[argv.index("--root") + 1] == kubernetes_pool().working_directory


def test_flow_run_pods_see_what_the_other_pods_see() -> None:
    """Same image tag, same client settings as the tinymlops-clients ConfigMap, the code where the
    image has it, and secrets by reference to a Secret the cluster holds under that plain name."""
    pool = kubernetes_pool()
    k = kustomization()
    assert pool.job_variables["image"] == f"{OUR_IMAGE}:{k['images'][0]['newTag']}"
    [clients] = [g for g in k["configMapGenerator"] if g["name"] == "tinymlops-clients"]
    assert pool.job_variables["env"] == dict(lit.split("=", 1) for lit in clients["literals"])
    workdir = [
        line.split()[1]
        for line in (REPO / "infra" / "Dockerfile").read_text().splitlines()
        if line.startswith("WORKDIR")
    ]
    assert workdir == [pool.working_directory]
    example = {line.split("=", 1)[0] for line in (K8S / "secrets.env.example").read_text().splitlines() if "=" in line}
    generated = {g["name"]: g for g in k["secretGenerator"]}
    for name, secret in pool.secret_env.items():
        assert name in example, f"{name} is not in secrets.env.example"
        # a hash suffix would be invisible to the template stored in Prefect
        assert generated[secret].get("options", {}).get("disableNameSuffixHash") is True, secret


def test_an_unknown_pool_is_refused_before_anything_is_registered() -> None:
    from deploy.deployments import register
    from tinymlops.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"^prefect.yaml: definitions.work_pools has no 'k8s' \(there: kubernetes, process\)$"
    ):
        register(REPO, pool="k8s")  # no server needed: nothing may be registered
