"""The fleet server with attestation on, one test per attack, named after it: the app in-process
(FastAPI's TestClient, real HTTP semantics), real signed bundles, devices that sign their evidence
and telemetry with their own Ed25519 keys (the Python signer; the C agent's bytes are the same
format, tests/security/test_attestation_agent.py)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from tests.integration.test_fleet_server import T0, Clock, telemetry
from tests.support.bundle_keys import sign_releases
from tinymlops import bundle as bundle_lib
from tinymlops.bundle import class_uuid
from tinymlops.bundle.evidence import CONTENT_TELEMETRY, Evidence, SlotClaim, sign_evidence, sign_payload
from tinymlops.fleet.api import create_app
from tinymlops.fleet.config import FleetSettings
from tinymlops.fleet.policy import GroupPolicy, HealthPolicy, RolloutPolicy
from tinymlops.fleet.store import Store

ADMIN = "admin-" + secrets.token_hex(8)
CLASS = "m4"
COSE = {"Content-Type": "application/cose"}


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory):
    keydir = tmp_path_factory.mktemp("keys")
    paths = bundle_lib.init_keys(keydir, None, now=T0 - timedelta(days=1))
    signer = bundle_lib.load_signer(keydir, None, now=T0)
    made = sign_releases(signer, tmp_path_factory.mktemp("bundles"), {"r2": 2, "r3": 3}, (CLASS, "m7"), now=T0)
    return paths, made


class Device:
    def __init__(self, client: TestClient, name: str, device_class: str = CLASS) -> None:
        self.client, self.name, self.device_class = client, name, device_class
        self.key = Ed25519PrivateKey.generate()
        self.ueid = uuid.uuid4()
        self.credential = ""
        self.count = 0

    @property
    def public(self) -> str:
        return self.key.public_key().public_bytes_raw().hex()

    def enrol(self, token: str, device_class: str | None = None):  # type: ignore[no-untyped-def]
        body = {"device_id": self.name, "device_class": device_class or self.device_class}
        body |= {"public_key": self.public, "ueid": self.ueid.hex}
        r = self.client.post("/v1/enrol", json=body, headers={"Authorization": f"Bearer {token}"})
        if r.status_code == 201:
            self.credential = r.json()["credential"]
        return r

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}

    def evidence(self, nonce: bytes, digest: str, sequence: int, *, key=None, ueid=None, count=None) -> str:  # type: ignore[no-untyped-def]
        ev = Evidence(
            nonce=nonce,
            device_id=ueid or self.ueid,
            class_id=class_uuid("tinymlops", self.device_class),
            running_slot=0,
            slots=(SlotClaim(state="active", sequence=sequence, digest=digest), SlotClaim(state="empty", sequence=0)),
            floor=sequence,
            revocation_version=0,
            inference_count=self.count if count is None else count,
            running_sequence=sequence,
            state_record=3,
            quota_serial=0,
            quota_limit=0,
            boot_count=1,
        )
        return base64.b64encode(sign_evidence(ev, key or self.key)).decode()

    def poll(self) -> dict:
        r = self.client.get(f"/v1/devices/{self.name}/assignment", headers=self.auth)
        assert r.status_code == 200, r.text
        return r.json()

    def report(self, release: str, stage: str, evidence: str | None = None):  # type: ignore[no-untyped-def]
        body = {"idempotency_key": secrets.token_hex(8), "release_id": release, "stage": stage, "evidence": evidence}
        return self.client.post(f"/v1/devices/{self.name}/reports", json=body, headers=self.auth)


def digest_of(release: str) -> str:
    return hashlib.sha256(release.encode() * 4000).hexdigest()  # sign_releases' payload


@pytest.fixture
def server(tmp_path: Path, material):  # type: ignore[no-untyped-def]
    paths, made = material
    policy = RolloutPolicy(
        groups=[
            GroupPolicy(
                name="all", percent=100, error_action="pause", min_soak_seconds=60, min_devices=1,
                success_threshold=0.9, error_threshold=0.1,
            )
        ],
        health=HealthPolicy(min_inferences=200),
    )  # fmt: skip
    settings = FleetSettings(
        db_url=f"sqlite:///{tmp_path / 'fleet.db'}",
        bundle_dir=tmp_path / "bundles",
        admin_tokens={"alice": ADMIN},
        provisioning_token="legacy-" + secrets.token_hex(8),
        trust_anchor=paths.root_public,
        tick_seconds=None,
        policy=policy,
        attestation=True,
    )
    clock = Clock()
    store = Store.open(settings.db_url)
    app = create_app(settings, clock=clock, store=store)
    with TestClient(app) as client:
        client.headers["X-Test"] = "1"
        service = app.state.service
        for (release, device_class), path in made.items():
            data = path.read_bytes()
            tmp = tmp_path / f"{release}-{device_class}.up"
            tmp.write_bytes(data)
            service.accept_bundle(tmp, hashlib.sha256(data).hexdigest(), len(data), release, device_class, "alice")
        yield client, service, clock


def admin(client: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def token(
    client: TestClient, batch: str = "b1", classes=(CLASS,), uses: int = 10, ttl=timedelta(days=1), customer="acme"
) -> str:  # type: ignore[no-untyped-def]
    body = {
        "batch": batch, "classes": list(classes), "max_uses": uses,
        "expires_at": (T0 + ttl).isoformat(), "customer": customer,
    }  # fmt: skip
    r = client.post("/v1/admin/provisioning-tokens", json=body, headers=admin(client))
    assert r.status_code == 201, r.text
    return r.json()["token"]


def rollout(service, release: str = "r2", rollout_id: str = "ro") -> None:  # type: ignore[no-untyped-def]
    service.rollouts.create(rollout_id, release, None, service.settings.policy, "alice")
    service.rollouts.verb(rollout_id, "start", "alice")


def enrolled(client: TestClient, n: int = 2) -> list[Device]:
    tok = token(client)
    devices = [Device(client, f"dev-{i}") for i in range(n)]
    for d in devices:
        assert d.enrol(tok).status_code == 201
    return devices


def confirmed(service, rollout_id: str = "ro") -> int:  # type: ignore[no-untyped-def]
    _, report = service.rollouts.status(rollout_id)
    return report.counts.confirmed


# -- identity: tokens and enrolment ---------------------------------------------------------------
def test_enrolment_with_expired_token_refused(server) -> None:  # type: ignore[no-untyped-def]
    client, _, clock = server
    tok = token(client, ttl=timedelta(minutes=1))
    clock.advance(120)
    r = Device(client, "late").enrol(tok)
    assert r.status_code == 403 and "expired" in r.json()["detail"] and tok not in r.text


def test_enrolment_with_exhausted_token_refused(server) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = server
    tok = token(client, uses=1)
    assert Device(client, "first").enrol(tok).status_code == 201
    r = Device(client, "second").enrol(tok)
    assert r.status_code == 403 and "exhausted" in r.json()["detail"]


def test_enrolment_with_wrong_class_token_refused(server) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = server
    r = Device(client, "m7-dev", "m7").enrol(token(client))
    assert r.status_code == 403 and "class m7" in r.json()["detail"]


def test_enrolment_with_revoked_token_or_the_shared_token_refused(server) -> None:  # type: ignore[no-untyped-def]
    client, service, _ = server
    tok = token(client)
    assert client.delete("/v1/admin/provisioning-tokens/b1", headers=admin(client)).status_code == 204
    assert Device(client, "x").enrol(tok).status_code == 403
    legacy = service.settings.provisioning_token.get_secret_value()
    assert Device(client, "y").enrol(legacy).status_code == 403  # attestation on: batch tokens only
    listed = client.get("/v1/admin/provisioning-tokens", headers=admin(client)).json()
    assert listed[0]["revoked_at"] is not None and "token" not in listed[0] and "token_hash" not in listed[0]


def test_one_key_enrolled_by_two_devices_refused(server) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = server
    tok = token(client)
    a, b = Device(client, "a"), Device(client, "b")
    b.key = a.key  # a cloned part
    assert a.enrol(tok).status_code == 201
    assert b.enrol(tok).status_code == 409


def test_download_of_unassigned_release_refused(server) -> None:  # type: ignore[no-untyped-def]
    client, service, _ = server
    (d,) = enrolled(client, 1)
    assert client.get(f"/v1/devices/{d.name}/bundles/r3", headers=d.auth).status_code == 404
    rollout(service, "r2")
    a = d.poll()
    assert client.get(a["url"], headers=d.auth).status_code == 200
    assert client.get(f"/v1/devices/{d.name}/bundles/r3", headers=d.auth).status_code == 404


# -- attestation: "confirmed" needs fresh evidence of the release's digest ------------------------
def test_confirmed_with_fresh_evidence_is_counted(server) -> None:  # type: ignore[no-untyped-def]
    client, service, _ = server
    devices = enrolled(client)
    rollout(service)
    for d in devices:
        a = d.poll()
        assert d.report("r2", "confirmed", d.evidence(bytes.fromhex(a["nonce"]), digest_of("r2"), 2)).status_code == 200
    assert confirmed(service) == 2


def test_confirmed_without_evidence_not_counted(server) -> None:  # type: ignore[no-untyped-def]
    client, service, _ = server
    (d,) = enrolled(client, 1)
    rollout(service)
    d.poll()
    assert d.report("r2", "confirmed").status_code == 200  # accepted, recorded as unattested
    assert confirmed(service) == 0


def test_forged_evidence_not_counted(server) -> None:  # type: ignore[no-untyped-def]
    client, service, _ = server
    (d,) = enrolled(client, 1)
    rollout(service)
    nonce = bytes.fromhex(d.poll()["nonce"])
    forged = d.evidence(nonce, digest_of("r2"), 2, key=Ed25519PrivateKey.generate())
    assert d.report("r2", "confirmed", forged).status_code == 200
    raw = bytearray(base64.b64decode(d.evidence(nonce, digest_of("r2"), 2)))
    raw[-1] ^= 1  # one bit of the signature
    assert d.report("r2", "confirmed", base64.b64encode(raw).decode()).status_code == 200
    assert d.report("r2", "confirmed", "not base64!").status_code == 200
    assert confirmed(service) == 0


def test_stale_evidence_not_counted(server) -> None:  # type: ignore[no-untyped-def]
    client, service, _ = server
    (d,) = enrolled(client, 1)
    rollout(service, "r2", "old")
    old = d.evidence(bytes.fromhex(d.poll()["nonce"]), digest_of("r2"), 2)  # for the first rollout
    service.rollouts.verb("old", "abort", "alice")
    rollout(service, "r2", "ro")
    assert d.report("r2", "confirmed", old).status_code == 200
    assert confirmed(service) == 0


def test_replayed_evidence_refused(server) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = server
    (d,) = enrolled(client, 1)
    nonce = bytes.fromhex(client.get(f"/v1/devices/{d.name}/challenge", headers=d.auth).json()["nonce"])
    report = base64.b64decode(d.evidence(nonce, digest_of("r2"), 2))
    assert client.post(f"/v1/devices/{d.name}/evidence", content=report, headers={**d.auth, **COSE}).status_code == 200
    again = client.post(f"/v1/devices/{d.name}/evidence", content=report, headers={**d.auth, **COSE})
    assert again.status_code == 422 and "replayed" in again.text


def test_evidence_claiming_another_releases_digest_not_counted(server) -> None:  # type: ignore[no-untyped-def]
    client, service, _ = server
    (d,) = enrolled(client, 1)
    rollout(service)
    nonce = bytes.fromhex(d.poll()["nonce"])
    assert d.report("r2", "confirmed", d.evidence(nonce, digest_of("r3"), 2)).status_code == 200  # runs r3's bytes
    assert d.report("r2", "confirmed", d.evidence(nonce, digest_of("r2"), 1)).status_code == 200  # wrong sequence
    assert confirmed(service) == 0


def test_evidence_with_another_devices_identity_not_counted(server) -> None:  # type: ignore[no-untyped-def]
    client, service, _ = server
    a, b = enrolled(client, 2)
    rollout(service)
    nonce_a, nonce_b = bytes.fromhex(a.poll()["nonce"]), bytes.fromhex(b.poll()["nonce"])
    # b sends, as itself, evidence naming a's device id; and a's confirmation carries b's report
    assert b.report("r2", "confirmed", b.evidence(nonce_b, digest_of("r2"), 2, ueid=a.ueid)).status_code == 200
    assert a.report("r2", "confirmed", b.evidence(nonce_a, digest_of("r2"), 2)).status_code == 200
    assert confirmed(service) == 0


# -- telemetry --------------------------------------------------------------------------------------
def _windows(service) -> list:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from tinymlops.fleet import models as m

    with service.store.engine.connect() as c:
        return c.execute(select(m.telemetry.c.device_id, m.telemetry.c.attested)).all()


def test_unsigned_telemetry_not_counted(server) -> None:  # type: ignore[no-untyped-def]
    client, service, _ = server
    (d,) = enrolled(client, 1)
    w = telemetry(1, 300)
    r = client.post(
        f"/v1/devices/{d.name}/telemetry",
        content=w.model_dump_json(),
        headers={**d.auth, "Content-Type": "application/json"},
    )
    assert r.status_code == 202
    signed = sign_payload(w.model_dump_json().encode(), d.key, CONTENT_TELEMETRY)
    assert client.post(f"/v1/devices/{d.name}/telemetry", content=signed, headers={**d.auth, **COSE}).status_code == 202
    assert sorted(a for _, a in _windows(service)) == [False, True]  # only the signed one is attested
    rollout(service)
    state, _ = service.rollouts.status("ro")
    with service.store.read() as c:
        canary, control, _ = service.store.telemetry_windows(
            c, state, T0 - timedelta(days=1), T0 + timedelta(days=1), True
        )
    assert all(row[0] == d.name for row in control) and len(control) <= 1


def test_foreign_signed_telemetry_not_counted(server) -> None:  # type: ignore[no-untyped-def]
    client, service, _ = server
    a, b = enrolled(client, 2)
    signed_by_b = sign_payload(telemetry(1, 300).model_dump_json().encode(), b.key, CONTENT_TELEMETRY)
    r = client.post(f"/v1/devices/{a.name}/telemetry", content=signed_by_b, headers={**a.auth, **COSE})
    assert r.status_code == 422 and "key_mismatch" in r.text
    assert _windows(service) == []


# -- metering: usage reconciliation ----------------------------------------------------------------
def test_counter_rollback_by_restoring_old_flash_image_flagged(server) -> None:  # type: ignore[no-untyped-def]
    """The C agent (host build): count 3 inferences, report; restore the flash image saved after
    the first, report again: the server refuses it and flags the device."""
    from tinymlops.device.agent.driver import AgentLibrary, Layout, SimDevice

    client, _, _ = server
    tok = token(client)
    root = Ed25519PrivateKey.generate()
    part = SimDevice(AgentLibrary.load(), Layout.for_slot(16 * 1024))
    ueid = uuid.uuid4()
    public = part.provision(root.public_key().public_bytes_raw(), ueid, class_uuid("tinymlops", CLASS))
    assert public is not None
    d = Device(client, "metered")
    body = {"device_id": "metered", "device_class": CLASS, "public_key": public.hex(), "ueid": ueid.hex}
    r = client.post("/v1/enrol", json=body, headers={"Authorization": f"Bearer {tok}"})
    d.credential = r.json()["credential"]
    part.consume()
    old_image = bytes(part.flash)
    part.consume(), part.consume()

    def send() -> object:
        nonce = bytes.fromhex(client.get("/v1/devices/metered/challenge", headers=d.auth).json()["nonce"])
        return client.post("/v1/devices/metered/evidence", content=part.evidence(nonce), headers={**d.auth, **COSE})

    assert send().json()["inference_count"] == 3  # type: ignore[attr-defined]
    part.flash[:] = old_image  # the attacker restores the earlier flash image
    r2 = send()
    assert r2.status_code == 422 and "counter_rollback" in r2.text  # type: ignore[attr-defined]
    usage = client.get("/v1/admin/usage", headers=admin(client)).json()
    row = next(x for x in usage["devices"] if x["id"] == "metered")
    assert row["inference_count"] == 3 and "counter_rollback" in row["counter_alarm"]
    assert usage["customers"]["acme"] == 3
    audit = client.get("/v1/admin/audit?target=metered", headers=admin(client)).json()
    assert any(e["action"] == "counter_rollback" for e in audit)


def _enrol_part(client: TestClient, name: str):  # type: ignore[no-untyped-def]
    """A host build of the C agent, provisioned with its own key and enrolled as `name`."""
    from tinymlops.device.agent.driver import AgentLibrary, Layout, SimDevice

    part = SimDevice(AgentLibrary.load(), Layout.for_slot(16 * 1024))
    ueid = uuid.uuid4()
    public = part.provision(Ed25519PrivateKey.generate().public_key().public_bytes_raw(), ueid,
                            class_uuid("tinymlops", CLASS))  # fmt: skip
    assert public is not None
    d = Device(client, name)
    body = {"device_id": name, "device_class": CLASS, "public_key": public.hex(), "ueid": ueid.hex}
    r = client.post("/v1/enrol", json=body, headers={"Authorization": f"Bearer {token(client, batch=name)}"})
    d.credential = r.json()["credential"]
    return part, d


def _send_usage(client: TestClient, d: Device, sign) -> object:  # type: ignore[no-untyped-def]
    nonce = bytes.fromhex(client.get(f"/v1/devices/{d.name}/challenge", headers=d.auth).json()["nonce"])
    return client.post(f"/v1/devices/{d.name}/evidence", content=sign(nonce), headers={**d.auth, **COSE})


def test_boot_count_rollback_by_restoring_old_flash_image_flagged(server) -> None:  # type: ignore[no-untyped-def]
    """The C agent (host build) boots once and the attacker saves the flash; four more boots, a
    report (boot count 5); the old image is written back and the part boots: its next report
    carries boot count 2 (and no inference ran at all): refused, flagged, audited."""
    client, _, _ = server
    part, d = _enrol_part(client, "rebooted")
    part.boot()
    old_image = bytes(part.flash)
    for _ in range(4):
        part.boot()
    r = _send_usage(client, d, part.evidence)
    assert r.status_code == 200 and r.json()["boot_count"] == 5, r.text  # type: ignore[attr-defined]
    part.flash[:] = old_image  # the attacker restores the earlier flash image
    part.boot()
    r2 = _send_usage(client, d, part.evidence)
    assert r2.status_code == 422 and "counter_rollback" in r2.text  # type: ignore[attr-defined]
    usage = client.get("/v1/admin/usage", headers=admin(client)).json()
    row = next(x for x in usage["devices"] if x["id"] == "rebooted")
    assert row["boot_count"] == 5 and "boot count 2 (highest seen 5)" in row["counter_alarm"]
    assert row["inference_count"] == 0  # no inference counter moved: the boot count caught it
    audit = client.get("/v1/admin/audit?target=rebooted", headers=admin(client)).json()
    assert any(e["action"] == "counter_rollback" for e in audit)


def test_evidence_without_boot_count_claim_refused(server) -> None:  # type: ignore[no-untyped-def]
    """Evidence signed by the right key, for the right nonce, but without the bootcount claim
    (an agent from before it, or a claim dropped to hide a reboot): refused for usage, not counted
    for a rollout."""
    from tinymlops.bundle import BundleError, cbor
    from tinymlops.bundle.evidence import BOOTCOUNT, CONTENT_EVIDENCE, verify_evidence

    client, service, _ = server
    (d,) = enrolled(client, 1)

    def without_bootcount(nonce: bytes) -> bytes:
        full = base64.b64decode(d.evidence(nonce, digest_of("r2"), 2))
        claims = verify_evidence(full, bytes.fromhex(d.public)).to_claims()
        del claims[BOOTCOUNT]
        return sign_payload(cbor.dumps(claims), d.key, CONTENT_EVIDENCE)

    with pytest.raises(BundleError, match="missing 267"):
        verify_evidence(without_bootcount(b"n" * 16), bytes.fromhex(d.public))
    r = _send_usage(client, d, without_bootcount)
    assert r.status_code == 422 and "evidence rejected: malformed" in r.text  # type: ignore[attr-defined]
    rollout(service)
    nonce = bytes.fromhex(d.poll()["nonce"])
    assert d.report("r2", "confirmed", base64.b64encode(without_bootcount(nonce)).decode()).status_code == 200
    assert confirmed(service) == 0
