"""schemathesis against the fleet server's and the webhook receiver's own OpenAPI descriptions,
with and without valid credentials, bounded in time: no 5xx, and every answer matches the
description (status code, content type, headers, body schema)."""

from __future__ import annotations

from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import checks  # noqa: E402

from tests.support.webhook_payloads import SECRET, RecordingTrigger  # noqa: E402

# Signed telemetry and attestation evidence travel as application/cose (a COSE_Sign1 the device
# signs): arbitrary bytes, and bytes that start like a tagged COSE_Sign1 array.
schemathesis.openapi.media_type(
    "application/cose", st.one_of(st.binary(max_size=512), st.binary(max_size=256).map(lambda b: b"\xd2\x84" + b))
)

ADMIN, PROVISION = "admin-schemathesis-token", "prov-schemathesis-token"
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
BOUNDED = settings(
    max_examples=25,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


def _fleet_app(tmp: Path):  # type: ignore[no-untyped-def]
    from tests.support.bundle_keys import NOW
    from tinymlops.bundle import init_keys
    from tinymlops.fleet.api import create_app
    from tinymlops.fleet.config import FleetSettings

    keys = init_keys(tmp / "keys", None)
    settings_ = FleetSettings(
        db_url=f"sqlite:///{tmp / 'fleet.db'}",
        bundle_dir=tmp / "bundles",
        admin_tokens={"alice": ADMIN},
        provisioning_token=PROVISION,
        trust_anchor=keys.root_public,
        max_bundle_bytes=64 * 1024,
        tick_seconds=None,
    )
    app = create_app(settings_, clock=lambda: NOW)
    credential = app.state.service.enrol("dev-1", "m4")
    return app, credential


_TMP = Path(__import__("tempfile").mkdtemp(prefix="tinymlops-schemathesis-"))
FLEET_APP, DEVICE_CREDENTIAL = _fleet_app(_TMP)
fleet_schema = schemathesis.openapi.from_asgi("/openapi.json", FLEET_APP)


def _webhook_app():  # type: ignore[no-untyped-def]
    from tinymlops.triggers import DeliveryStore, WebhookConfig, create_app

    config = WebhookConfig(repositories=[], branches=["main"])
    return create_app(config, SECRET, DeliveryStore(f"sqlite:///{_TMP / 'webhook.db'}"), RecordingTrigger())


WEBHOOK_APP = _webhook_app()
webhook_schema = schemathesis.openapi.from_asgi("/openapi.json", WEBHOOK_APP)


def _token_for(path: str) -> str:
    if path == "/v1/enrol":
        return PROVISION
    return DEVICE_CREDENTIAL if path.startswith("/v1/devices/") else ADMIN


@fleet_schema.parametrize()
@BOUNDED
def test_fleet_api_without_credentials(case) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(checks=CHECKS)


@fleet_schema.parametrize()
@BOUNDED
def test_fleet_api_with_valid_credentials(case) -> None:  # type: ignore[no-untyped-def]
    if case.path_parameters and "device_id" in case.path_parameters:
        case.path_parameters["device_id"] = "dev-1"  # the enrolled device whose credential we hold
    case.call_and_validate(headers={"Authorization": f"Bearer {_token_for(case.path)}"}, checks=CHECKS)


@webhook_schema.parametrize()
@BOUNDED
def test_webhook_without_credentials(case) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(checks=CHECKS)


@webhook_schema.parametrize()
@BOUNDED
def test_webhook_with_valid_credentials(case) -> None:  # type: ignore[no-untyped-def]
    headers = {"X-Gitlab-Token": SECRET, "X-Gitlab-Event": "Push Hook"} if case.path.endswith("gitlab") else {}
    case.call_and_validate(headers=headers, checks=CHECKS)
