"""infra/ checked without Docker or Kubernetes: every command our image runs names an installed
console script and a subcommand (and options) that really exist, every environment variable is
one the code or the documented table knows, every image is pinned to a version, and the fleet
server gets its secrets from the git-ignored secrets files and its trust anchor read-only."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

import tinymlops
from tests.support.paths import REPO  # noqa: E402

INFRA = REPO / "infra"
K8S = INFRA / "k8s" / "base"
OUR_IMAGE = "ghcr.io/tinymlops/tinymlops"
CODE_DIRS = ("tinymlops", "flows", "tasks")
# Variables that third-party images or Prefect itself define (not ours to document).
IMAGE_VARS = {"POSTGRES_USER", "POSTGRES_PASSWORD", "PGDATA", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
# Only in Kubernetes: the MLflow container expands it into its --backend-store-uri argument.
INDIRECTION_VARS = {"MLFLOW_BACKEND_STORE_URI"}
FLEET_CODE = ("tinymlops/settings/fleet.py", "tinymlops/cli/fleet.py")
FLEET_SECRETS = ("TINYMLOPS_FLEET_DB_URL", "TINYMLOPS_FLEET_ADMIN_TOKENS", "TINYMLOPS_FLEET_PROVISIONING_TOKEN")
# Being written by the lead: its deployment is declared already; the file check skips until it lands.
PENDING_FLOW_FILES = {"flows/rollout.py"}


# -- what the manifests contain ------------------------------------------------------------------
def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def k8s_documents() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / resource).read_text()) if d]
    return docs


def k8s_containers() -> list[tuple[str, dict]]:
    found = []
    for doc in k8s_documents():
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get(
            "template", {}
        ).get("spec")
        for container in (pod or {}).get("initContainers", []) + (pod or {}).get("containers", []):
            found.append((f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}", container))
    return found


def compose_services() -> list[tuple[str, dict]]:
    return sorted(compose()["services"].items())


def commands() -> list[tuple[str, str, list[str]]]:
    """(where, image, argv) of every container command, compose and Kubernetes."""
    out = []
    for name, svc in compose_services():
        command = svc.get("command")
        if command is not None:
            out.append((f"compose/{name}", svc["image"], command if isinstance(command, list) else command.split()))
    for where, container in k8s_containers():
        argv = container.get("command", []) + container.get("args", [])
        if argv:
            out.append((f"k8s/{where}", container["image"], argv))
    return out


def env_names() -> list[tuple[str, str]]:
    names = []
    for name, svc in compose_services():
        env = svc.get("environment") or {}
        keys = env.keys() if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        names += [(f"compose/{name}", k) for k in keys]
    for where, container in k8s_containers():
        names += [(f"k8s/{where}", e["name"]) for e in container.get("env", [])]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for generator in kustomization.get("configMapGenerator", []):
        literals = generator.get("literals", [])
        names += [(f"k8s/configmap/{generator['name']}", lit.split("=", 1)[0]) for lit in literals]
    secrets = (K8S / "secrets.env.example").read_text().splitlines()
    names += [("k8s/secrets.env.example", line.split("=", 1)[0]) for line in secrets if "=" in line]
    return names


def images() -> list[tuple[str, str]]:
    found = [(f"compose/{n}", s["image"]) for n, s in compose_services()]
    found += [(f"k8s/{w}", c["image"]) for w, c in k8s_containers()]
    return found


# -- what exists -----------------------------------------------------------------------------------
def env_table(text: str, heading: str) -> dict[str, str]:
    """{variable: its table row} of the markdown table under `heading` (rows naming several, several)."""
    section = text.split(heading + "\n", 1)[1]
    section = re.split(r"\n#{1,3} ", section, maxsplit=1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {v: row for row in rows for v in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


@cache
def documented_vars() -> frozenset[str]:
    return frozenset(env_table((REPO / "docs" / "operations.md").read_text(), "## Configuration by environment"))


def readme_vars() -> dict[str, str]:
    return env_table((REPO / "README.md").read_text(), "### Environment")


def env_reads(path: str) -> set[str]:
    """Environment variables a module reads or sets (os.environ.get/[…], os.getenv)."""
    text = (REPO / path).read_text()
    read = set(re.findall(r"""(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]+)["']""", text))
    # names held in module constants: ADMIN_TOKENS = "TINYMLOPS_…" … os.environ.get(ADMIN_TOKENS
    for const, name in re.findall(r"""^([A-Z][A-Z0-9_]*)\s*=\s*["']([A-Z][A-Z0-9_]+)["']""", text, re.M):
        if re.search(rf"(?:environ\.get\(|environ\[|getenv\()\s*{const}\b", text):
            read.add(name)
    return read


@cache
def code_text() -> str:
    return "\n".join(p.read_text() for d in CODE_DIRS for p in sorted((REPO / d).rglob("*.py")))


@cache
def console_scripts() -> frozenset[str]:
    return frozenset(ep.name for ep in entry_points(group="console_scripts"))


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """→ (script + subcommand words, --options used)."""
    words = []
    for token in argv:
        if token.startswith("-"):
            break
        words.append(token)
    options = [t.split("=", 1)[0] for t in argv if t.startswith("--")]
    return words, options


@cache
def help_text(words: tuple[str, ...]) -> str:
    script = Path(sys.executable).parent / words[0]
    done = subprocess.run(
        [str(script), *words[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": ""},
    )
    assert done.returncode == 0, f"`{' '.join(words)} --help` failed: {done.stderr.strip()[-300:]}"
    return done.stdout


OUR_COMMANDS = [c for c in commands() if c[1].split(":")[0] == OUR_IMAGE]


@pytest.fixture(scope="module", autouse=True)
def _warm_help() -> None:
    """Ask every distinct command for --help once, in parallel (each start costs ~1-2 s)."""
    distinct = {tuple(split_argv(argv)[0]) for _, _, argv in OUR_COMMANDS}
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda w: help_text(w) if w and w[0] in console_scripts() else None, distinct))


# -- the checks --------------------------------------------------------------------------------------
def test_manifests_define_every_service() -> None:
    assert {n for n, _ in compose_services()} >= {
        "postgres",
        "minio",
        "prefect-server",
        "prefect-worker",
        "mlflow",
        "webhook",
        "deploy",
        "fleet",
        "fleet-migrate",
    }
    k8s = {(doc["kind"], doc["metadata"]["name"]) for doc in k8s_documents()}
    assert {n for _, n in k8s} >= {
        "postgres",
        "minio",
        "prefect-server",
        "prefect-worker",
        "mlflow",
        "webhook",
        "tinymlops-deploy",
    }
    assert {("Deployment", "fleet"), ("Service", "fleet"), ("PersistentVolumeClaim", "fleet-bundles")} <= k8s
    assert (REPO / compose()["x-tinymlops"]["build"]["dockerfile"]).is_file()


@pytest.mark.parametrize(("where", "image", "argv"), OUR_COMMANDS, ids=[c[0] for c in OUR_COMMANDS])
def test_command_names_an_existing_entry_point(where: str, image: str, argv: list[str]) -> None:
    words, options = split_argv(argv)
    assert words[0] in console_scripts(), f"{where}: '{words[0]}' is not a console script of an installed package"
    assert (Path(sys.executable).parent / words[0]).is_file()
    text = help_text(tuple(words))
    for option in options:
        assert option in text, f"{where}: `{' '.join(words)}` has no option {option}"


def test_our_image_commands_cover_the_services() -> None:
    """The serving subcommands that infra relies on are among those checked above."""
    used = {" ".join(split_argv(argv)[0]) for _, _, argv in OUR_COMMANDS}
    assert used >= {
        "prefect server start",
        "prefect worker start",
        "mlflow server",
        "tinymlops webhook serve",
        "tinymlops deploy",
        "tinymlops fleet serve",
        "tinymlops fleet migrate",
    }


TINYMLOPS_COMMANDS = [c for c in OUR_COMMANDS if c[2][0] == "tinymlops"]


@pytest.mark.parametrize(("where", "image", "argv"), TINYMLOPS_COMMANDS, ids=[c[0] for c in TINYMLOPS_COMMANDS])
def test_tinymlops_command_exists_in_the_typer_app(where: str, image: str, argv: list[str]) -> None:
    """Stricter than --help text: the words resolve to a command of tinymlops.cli.app, and the
    command's own parser accepts the arguments (known options, values that convert)."""
    import typer

    from tinymlops.cli import app

    words, _ = split_argv(argv)
    command = typer.main.get_command(app)  # typer's click (it vendors its own): duck-typed below
    for word in words[1:]:
        assert word in getattr(command, "commands", {}), f"{where}: no command {words}"
        command = command.commands[word]
    assert not hasattr(command, "commands"), f"{where}: `{' '.join(words)}` is a group, not a command"
    try:
        ctx = command.make_context(" ".join(words), argv[len(words) :])  # parses; does not run
    except Exception as exc:  # typer's UsageError family
        pytest.fail(f"{where}: `{' '.join(argv)}` is refused by its parser: {exc}")
    given = {o.lstrip("-").replace("-", "_") for o in split_argv(argv)[1]}
    assert given <= set(ctx.params), f"{where}: {sorted(given - set(ctx.params))}"


@pytest.mark.parametrize(("where", "image"), images(), ids=[f"{w}={i}" for w, i in images()])
def test_image_is_pinned(where: str, image: str) -> None:
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"{where}: image '{image}' has no tag"
    assert tag != "latest" and "latest" not in tag and not tag.startswith(("main", "master")), f"{where}: {image}"
    assert re.search(r"\d", tag), f"{where}: tag '{tag}' is not a version"
    if name == OUR_IMAGE:
        assert tag == tinymlops.__version__, f"{where}: our image must carry the package version"


def test_kustomize_image_tag_matches_the_package() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert {i["name"]: i["newTag"] for i in kustomization["images"]} == {OUR_IMAGE: tinymlops.__version__}


@cache
def kubernetes_worker_settings() -> frozenset[str]:
    """The PREFECT_INTEGRATIONS_KUBERNETES_* variables prefect-kubernetes's worker and observer read."""
    from prefect_kubernetes.settings import KubernetesSettings
    from pydantic_settings import BaseSettings

    def names(model: type[BaseSettings]) -> set[str]:
        prefix = model.model_config.get("env_prefix", "")
        nested = lambda t: isinstance(t, type) and issubclass(t, BaseSettings)  # noqa: E731
        fields = model.model_fields.items()
        return set().union(
            *(names(f.annotation) if nested(f.annotation) else {(prefix + n).upper()} for n, f in fields)
        )

    return frozenset(names(KubernetesSettings))


@pytest.mark.parametrize(("where", "name"), env_names(), ids=[f"{w}:{n}" for w, n in env_names()])
def test_env_name_is_known(where: str, name: str) -> None:
    known = documented_vars() | IMAGE_VARS | INDIRECTION_VARS
    if name.startswith("PREFECT_INTEGRATIONS_KUBERNETES_"):
        assert name in kubernetes_worker_settings(), f"{where}: {name} is not a prefect-kubernetes setting"
        return
    if name.startswith("PREFECT_") and name not in known:
        from prefect import settings

        assert hasattr(settings, name), f"{where}: {name} is not a Prefect setting"
        return
    assert name in known, f"{where}: {name} is neither in docs/operations.md's table nor an image's variable"


def test_documented_tinymlops_vars_are_read_by_the_code() -> None:
    ours = {v for v in documented_vars() if v.startswith("TINYMLOPS_")}
    assert {"TINYMLOPS_WEBHOOK_SECRET", "TINYMLOPS_DVC_REMOTE", "TINYMLOPS_TASK_RUNNER", *FLEET_SECRETS} <= ours
    unread = {v for v in ours if f'"{v}"' not in code_text()}
    assert not unread, f"documented but not read anywhere: {sorted(unread)}"


def test_every_variable_the_fleet_server_reads_is_documented() -> None:
    read = set().union(*(env_reads(path) for path in FLEET_CODE))
    assert set(FLEET_SECRETS) | {"TINYMLOPS_FLEET_TRUST"} <= read  # the scan sees FleetSettings.from_env
    assert read <= documented_vars(), f"not in docs/operations.md's table: {sorted(read - documented_vars())}"
    assert read <= set(readme_vars()), f"not in README.md's environment table: {sorted(read - set(readme_vars()))}"


def test_readme_and_operations_tables_agree() -> None:
    """One table, shown twice: the same variables in README.md and docs/operations.md."""
    assert set(readme_vars()) == documented_vars()
    for name in FLEET_SECRETS:
        assert "coming" not in readme_vars()[name] and "fleet server" in readme_vars()[name]


def test_compose_variables_are_in_the_env_example_and_the_env_file_is_ignored() -> None:
    text = (INFRA / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)(?::\?[^}]*)?\}", text))
    example = {line.split("=", 1)[0] for line in (INFRA / ".env.example").read_text().splitlines() if "=" in line}
    assert required and required <= example, f"missing in infra/.env.example: {sorted(required - example)}"
    assert ".env" in (INFRA / ".gitignore").read_text().split()


def test_k8s_secret_keys_exist() -> None:
    keys = {line.split("=", 1)[0] for line in (K8S / "secrets.env.example").read_text().splitlines() if "=" in line}
    for where, container in k8s_containers():
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in keys, f"{where}: secret key {ref['key']} is not in secrets.env.example"
    assert "secrets.env" in (K8S / ".gitignore").read_text().split()


def test_kustomize_generator_files_are_per_installation() -> None:
    """Generated from files an operator provides: each is git-ignored here (secrets.env has an example)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    ignored = (K8S / ".gitignore").read_text().split()
    generators = kustomization.get("configMapGenerator", []) + kustomization.get("secretGenerator", [])
    files = [f for g in generators for f in g.get("files", []) + g.get("envs", [])]
    assert "root.pub" in files and "secrets.env" in files
    for name in files:
        assert name in ignored, f"{name} is generated into the cluster but not git-ignored in infra/k8s/base"


# -- the fleet server ------------------------------------------------------------------------------
def option_value(argv: list[str], option: str) -> str:
    assert option in argv, f"{argv[:3]}: no {option}"
    return argv[argv.index(option) + 1]


def test_fleet_compose_secrets_trust_and_storage() -> None:
    services = compose()["services"]
    fleet = services["fleet"]
    trust = option_value(fleet["command"], "--trust")
    env = fleet["environment"]
    assert set(env) == set(FLEET_SECRETS)
    for name in ("TINYMLOPS_FLEET_ADMIN_TOKENS", "TINYMLOPS_FLEET_PROVISIONING_TOKEN"):
        assert env[name] == f"${{{name}:?set in infra/.env}}", f"compose/fleet: {name} must come from infra/.env"
    assert (
        env["TINYMLOPS_FLEET_DB_URL"].endswith("@postgres:5432/fleet")
        and "${POSTGRES_PASSWORD}" in env["TINYMLOPS_FLEET_DB_URL"]
    )
    [key] = [v for v in fleet["volumes"] if isinstance(v, dict) and v["target"] == trust]
    assert key["type"] == "bind" and key["read_only"] is True and key["bind"]["create_host_path"] is False
    assert "fleet-home:/var/lib/tinymlops" in fleet["volumes"]  # $TINYMLOPS_HOME/fleet/bundles survives restarts
    assert fleet["depends_on"]["fleet-migrate"]["condition"] == "service_completed_successfully"
    assert services["fleet-migrate"]["environment"]["TINYMLOPS_FLEET_DB_URL"] == env["TINYMLOPS_FLEET_DB_URL"]
    assert services["fleet-migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/var/lib/postgresql" not in str(fleet)  # only through the network
    assert "CREATE DATABASE fleet;" in (INFRA / "postgres" / "init.sql").read_text()


def test_fleet_k8s_secrets_trust_and_storage() -> None:
    [deployment] = [d for d in k8s_documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == "fleet"]
    pod = deployment["spec"]["template"]["spec"]
    [migrate] = pod["initContainers"]
    [serve] = pod["containers"]
    assert split_argv(migrate["command"])[0] == ["tinymlops", "fleet", "migrate"]
    assert split_argv(serve["command"])[0] == ["tinymlops", "fleet", "serve"]
    for container, names in ((serve, FLEET_SECRETS), (migrate, ("TINYMLOPS_FLEET_DB_URL",))):
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
        assert set(refs) == set(names)
        assert all(r == {"name": "tinymlops-secrets", "key": n} for n, r in refs.items()), refs
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in serve["volumeMounts"]}
    trust = Path(option_value(serve["command"], "--trust"))
    assert str(trust.parent) == mounts["trust"]["mountPath"] and mounts["trust"]["readOnly"] is True
    assert volumes["trust"]["configMap"]["name"] == "tinymlops-trust"
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    [generator] = [g for g in kustomization["configMapGenerator"] if g["name"] == "tinymlops-trust"]
    assert generator["files"] == [trust.name]
    assert volumes["bundles"]["persistentVolumeClaim"]["claimName"] == "fleet-bundles"
    assert mounts["bundles"]["mountPath"] == "/var/lib/tinymlops/fleet"  # $TINYMLOPS_HOME/fleet/bundles
    # one pod owns the ReadWriteOnce volume and the in-process rollout ticker
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    [service] = [d for d in k8s_documents() if d["kind"] == "Service" and d["metadata"]["name"] == "fleet"]
    assert service["spec"]["ports"][0]["port"] == int(option_value(serve["command"], "--port"))
    assert serve["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_prefect_yaml_deployments() -> None:
    from deploy.deployments import read_specs, selected

    specs = {s.full_name: s for s in read_specs(REPO)}
    assert set(specs) == {"pipeline/retrain-nightly", "pipeline/manual", "rollout/manual", "pipeline/retrain-on-drift"}
    [nightly] = specs["pipeline/retrain-nightly"].schedules
    assert nightly.cron and nightly.timezone
    assert specs["pipeline/manual"].schedules == [] and specs["rollout/manual"].schedules == []
    for spec in specs.values():
        assert spec.work_pool.name == "tinymlops-process"
    assert specs["pipeline/retrain-nightly"].parameters["trigger"] == "schedule"
    assert specs["pipeline/manual"].parameters["trigger"] == "ui"
    assert specs["rollout/manual"].entrypoint == "flows/rollout.py:rollout"
    picked = lambda only: [s.full_name for s in selected(list(specs.values()), only)]  # noqa: E731
    assert picked({"rollout/manual"}) == ["rollout/manual"]
    assert picked({"manual"}) == ["pipeline/manual", "rollout/manual"]


SPEC_NAMES = ["pipeline/retrain-nightly", "pipeline/manual", "rollout/manual", "pipeline/retrain-on-drift"]


@pytest.mark.parametrize("full_name", SPEC_NAMES)
def test_deployment_entrypoint_defines_its_flow(full_name: str) -> None:
    """The entrypoint file exists and defines that @flow function; register() deploys it as
    <flow name>/<deployment>, the flow name being the decorator's `name=` or the function's."""
    from deploy.deployments import read_specs

    [spec] = [s for s in read_specs(REPO) if s.full_name == full_name]
    path = REPO / spec.entrypoint_file
    if not path.is_file() and spec.entrypoint_file in PENDING_FLOW_FILES:
        pytest.skip(f"{spec.entrypoint_file} is not written yet (the lead's rollout flow); {full_name} is declared")
    [func] = [n for n in ast.parse(path.read_text()).body if getattr(n, "name", None) == spec.function]
    flows = [d for d in func.decorator_list if _decorator_name(d) == "flow"]
    assert flows, f"{spec.entrypoint}: {spec.function} is not a @flow"
    names = [k.value.value for d in flows if isinstance(d, ast.Call) for k in d.keywords if k.arg == "name"]
    assert names in ([], [spec.flow_name]), f"{spec.entrypoint}: flow named {names}, deployed as {spec.full_name}"
    assert names or spec.flow_name == spec.function


def _decorator_name(node: ast.expr) -> str | None:
    node = node.func if isinstance(node, ast.Call) else node
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)


def test_register_refuses_a_missing_entrypoint_before_registering_anything(tmp_path: Path) -> None:
    from deploy.deployments import register
    from tinymlops.errors import TinyMLOpsError

    (tmp_path / "prefect.yaml").write_text((REPO / "prefect.yaml").read_text())
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "pipeline.py").write_text((REPO / "flows" / "pipeline.py").read_text())
    # no flows/rollout.py here: no Prefect server is needed, because nothing may be registered
    with pytest.raises(
        TinyMLOpsError, match=r"^prefect.yaml: rollout/manual: entrypoint file flows/rollout.py not found$"
    ):
        register(tmp_path, only={"manual"})
