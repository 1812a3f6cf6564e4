"""infra/ checked without Docker or Kubernetes: every command our image runs names an installed
console script and a subcommand (and options) that really exist, every environment variable is
one the code or the documented table knows, and every image is pinned to a version."""

from __future__ import annotations

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

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S = INFRA / "k8s" / "base"
OUR_IMAGE = "ghcr.io/tinymlops/tinymlops"
CODE_DIRS = ("tinymlops", "flows", "tasks")
# Variables that third-party images or Prefect itself define (not ours to document).
IMAGE_VARS = {"POSTGRES_USER", "POSTGRES_PASSWORD", "PGDATA", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
# Only in Kubernetes: the MLflow container expands it into its --backend-store-uri argument.
INDIRECTION_VARS = {"MLFLOW_BACKEND_STORE_URI"}
PENDING = {"TINYMLOPS_FLEET_DB_URL"}  # documented for the fleet server, which is being written


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
        for container in (pod or {}).get("containers", []):
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
        names += [(f"k8s/configmap/{generator['name']}", lit.split("=", 1)[0]) for lit in generator["literals"]]
    secrets = (K8S / "secrets.env.example").read_text().splitlines()
    names += [("k8s/secrets.env.example", line.split("=", 1)[0]) for line in secrets if "=" in line]
    return names


def images() -> list[tuple[str, str]]:
    found = [(f"compose/{n}", s["image"]) for n, s in compose_services()]
    found += [(f"k8s/{w}", c["image"]) for w, c in k8s_containers()]
    return found


# -- what exists -----------------------------------------------------------------------------------
@cache
def documented_vars() -> frozenset[str]:
    text = (REPO / "docs" / "operations.md").read_text()
    table = text.split("## Configuration by environment", 1)[1].split("\n## ", 1)[0]
    return frozenset(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))


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
    }
    k8s = {doc["metadata"]["name"] for doc in k8s_documents()}
    assert k8s >= {"postgres", "minio", "prefect-server", "prefect-worker", "mlflow", "webhook", "tinymlops-deploy"}
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
    }


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


@pytest.mark.parametrize(("where", "name"), env_names(), ids=[f"{w}:{n}" for w, n in env_names()])
def test_env_name_is_known(where: str, name: str) -> None:
    known = documented_vars() | IMAGE_VARS | INDIRECTION_VARS
    if name.startswith("PREFECT_") and name not in known:
        from prefect import settings

        assert hasattr(settings, name), f"{where}: {name} is not a Prefect setting"
        return
    assert name in known, f"{where}: {name} is neither in docs/operations.md's table nor an image's variable"


def test_documented_tinymlops_vars_are_read_by_the_code() -> None:
    ours = {v for v in documented_vars() if v.startswith("TINYMLOPS_")}
    assert {"TINYMLOPS_WEBHOOK_SECRET", "TINYMLOPS_DVC_REMOTE", "TINYMLOPS_TASK_RUNNER"} <= ours
    unread = {v for v in ours if f'"{v}"' not in code_text()}
    assert unread <= PENDING, f"documented but not read anywhere: {sorted(unread - PENDING)}"


def test_k8s_secret_keys_exist() -> None:
    keys = {line.split("=", 1)[0] for line in (K8S / "secrets.env.example").read_text().splitlines() if "=" in line}
    for where, container in k8s_containers():
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in keys, f"{where}: secret key {ref['key']} is not in secrets.env.example"
    assert "secrets.env" in (K8S / ".gitignore").read_text().split()


def test_prefect_yaml_deployments() -> None:
    from flows.deployments import read_specs

    specs = {s.name: s for s in read_specs(REPO)}
    assert set(specs) >= {"retrain-nightly", "manual"}
    [nightly] = specs["retrain-nightly"].schedules
    assert nightly.cron and nightly.timezone
    assert specs["manual"].schedules == []
    for spec in specs.values():
        path, _, func = spec.entrypoint.partition(":")
        assert re.search(rf"^def {func}\(", (REPO / path).read_text(), re.M), spec.entrypoint
        assert spec.work_pool.name == "tinymlops-process"
        assert spec.parameters["run"]["trigger"] in ("schedule", "manual")
