"""Identity and usage: the admin CLI (`tinymlops fleet tokens …`, `tinymlops fleet usage`) against a
served fleet, and the evidence format: the Python encoder writes the C agent's bytes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.integration.test_fleet_server import Clock
from tinymlops.bundle import cbor, cose
from tinymlops.bundle.evidence import verify_evidence
from tinymlops.fleet.api import create_app
from tinymlops.fleet.api.serving import serve_in_thread
from tinymlops.fleet.config import FleetSettings

ADMIN = "admin-identity-cli"


def _cli(*args: str) -> tuple[int, str, str]:
    """`tinymlops ARGS` in its own process (the server under test runs in this one's thread)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "from tinymlops.cli import main; main()", *args], capture_output=True, text=True
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_tokens_and_usage_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = FleetSettings(
        db_url=f"sqlite:///{tmp_path / 'fleet.db'}", bundle_dir=tmp_path / "b", admin_tokens={"ops": ADMIN},
        tick_seconds=None, attestation=True,
    )  # fmt: skip
    clock = Clock()
    from datetime import datetime, timezone

    clock.now = datetime.now(timezone.utc)
    monkeypatch.setenv("TINYMLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TINYMLOPS_FLEET_ADMIN_TOKEN", ADMIN)
    with serve_in_thread(create_app(settings, clock=clock)) as url:
        code, out, _ = _cli("fleet", "tokens", "create", "--batch", "lot-7", "--class", "m4",
                            "--max-uses", "3", "--customer", "acme", "--url", url)  # fmt: skip
        assert code == 0
        token = out.strip()
        assert len(token) > 30
        code, out, _ = _cli("fleet", "tokens", "list", "--url", url)
        assert code == 0 and "lot-7\tm4\tacme" in out and "0/3 used" in out and token not in out
        import httpx

        key = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
        body = {"device_id": "d1", "device_class": "m4", "public_key": key, "ueid": uuid.uuid4().hex}
        assert httpx.post(f"{url}/v1/enrol", json=body, headers={"Authorization": f"Bearer {token}"}).status_code == 201
        code, out, _ = _cli("fleet", "usage", "--url", url)
        assert code == 0 and "d1\tacme" in out and "customer acme\t0" in out
        assert _cli("fleet", "tokens", "revoke", "lot-7", "--url", url)[0] == 0
        body["device_id"] = "d2"
        assert httpx.post(f"{url}/v1/enrol", json=body, headers={"Authorization": f"Bearer {token}"}).status_code == 403


def test_python_evidence_encoder_writes_the_c_agents_bytes() -> None:
    from tinymlops.device.agent.driver import AgentLibrary, Layout, SimDevice

    dev = SimDevice(AgentLibrary.load(), Layout.for_slot(16 * 1024))
    public = dev.provision(Ed25519PrivateKey.generate().public_key().public_bytes_raw(), uuid.uuid4(), uuid.uuid4())
    assert public is not None
    dev.consume()
    dev.boot(), dev.boot()
    signed = dev.evidence(b"\x01" * 32)
    ev = verify_evidence(signed, public)
    assert ev.boot_count == 2 and ev.inference_count == 1
    message = cose.decode_sign1(signed, "evidence", "application/eat+cwt")
    assert cbor.dumps(ev.to_claims()) == message.payload
