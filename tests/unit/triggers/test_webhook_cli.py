"""`tinymlops webhook serve` / `tinymlops deploy` user errors, the receiver's env, and the typed
run parameters (PipelineRun) that UI and webhook runs fill in."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli_helpers import run_cli
from tinymlops.errors import ConfigError
from tinymlops.triggers import WebhookEnv
from tinymlops.triggers.config import WebhookError


def test_webhook_serve_without_secret_is_one_line(project: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("TINYMLOPS_WEBHOOK_SECRET", raising=False)
    code, _, err = run_cli(monkeypatch, capsys, "webhook", "serve", "--root", str(project))
    assert code == 1
    assert err.strip() == "error: TINYMLOPS_WEBHOOK_SECRET is not set: the receiver refuses unsigned deliveries"


def test_webhook_serve_with_bad_config_names_the_key(project: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TINYMLOPS_WEBHOOK_SECRET", "s3cret")
    (project / "configs" / "webhook.yaml").write_text("branchs: [main]\n")
    code, _, err = run_cli(monkeypatch, capsys, "webhook", "serve", "--root", str(project))
    assert code == 1 and "webhook.yaml: unknown key 'branchs'" in err and "s3cret" not in err


def test_deploy_without_prefect_yaml_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "deploy", "--root", str(tmp_path))
    assert code == 1 and err.count("\n") == 1 and "prefect.yaml: file not found" in err


def test_env_keeps_the_secret_out_of_reprs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TINYMLOPS_WEBHOOK_SECRET", "very-secret-value")
    monkeypatch.setenv("TINYMLOPS_HOME", str(tmp_path))
    monkeypatch.delenv("TINYMLOPS_WEBHOOK_DB_URL", raising=False)
    env = WebhookEnv.from_env()
    assert "very-secret-value" not in repr(env) and "very-secret-value" not in str(env.model_dump())
    assert env.secret.get_secret_value() == "very-secret-value"
    assert env.db_url == f"sqlite:///{tmp_path / 'webhook.db'}"
    monkeypatch.setenv("TINYMLOPS_WEBHOOK_SECRET", "   ")
    with pytest.raises(WebhookError):
        WebhookEnv.from_env()


def test_dataset_override_is_applied_and_validated(project: Path) -> None:
    from tasks.context import PipelineRun, load_context

    ctx = load_context(PipelineRun(root=str(project), dataset="digits", git_sha="abc", trigger="webhook"), "r1")
    assert ctx.params.data.dataset == "digits"
    assert ctx.request.git_sha == "abc" and ctx.request.trigger == "webhook"
    with pytest.raises(ConfigError, match="dataset='npz'.*needs data.path"):
        load_context(PipelineRun(root=str(project), dataset="npz"), "r2")


def test_run_parameters_of_a_push() -> None:
    from flows.webhook import run_parameters
    from tasks.context import PipelineRun
    from tinymlops.triggers import PushEvent

    event = PushEvent(provider="gitlab", delivery_id="d", repository="g/p", ref="refs/heads/main", sha="f" * 40)
    params = run_parameters(event)
    run = PipelineRun.model_validate(params)  # the flow's flat parameters name PipelineRun's fields
    assert (run.trigger, run.git_ref, run.git_sha, run.repository) == ("webhook", "refs/heads/main", "f" * 40, "g/p")
    assert run.root == "." and not run.dry_run
