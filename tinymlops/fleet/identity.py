"""Device identity, attestation and usage, on the server side.

- Provisioning tokens per batch: an expiry, a maximum number of uses and the classes they may
  enrol (and the customer the devices belong to). Only digests are stored; the token is shown once.
- Enrolment binds the device's Ed25519 public key (and its 16-byte device id, the evidence's
  ueid) to its name and class. A key can be enrolled once: the same key from a second device is
  refused (a cloned part).
- Evidence (tinymlops.bundle.evidence) is verified against the enrolled key and checked against
  what the server expects: the nonce (a rollout's, or a one-time challenge), the device id and
  class, the release's payload digest and sequence. With attestation on, a "confirmed" report
  without such evidence is recorded as "unattested", which no rollout counts.
- Telemetry windows signed by the device key are stored as attested; with attestation on, only
  those count (and on the canary side only those of rollout members, as before).
- Usage: every verified evidence carries the inference counter, the state record number and the
  boot count (EAT bootcount); the highest of each is kept per device and a report below any of
  them (an old flash image restored, or one key in two devices) raises a counter_rollback alarm,
  audited, and the report is refused.

Error messages name the check that failed, never the submitted bytes, a key or a token.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from tinymlops.errors import BundleError, Forbidden, NotFound, Refused
from tinymlops.fleet import auth
from tinymlops.fleet.config import FleetSettings
from tinymlops.fleet.store import IdentityStore, Store, utc
from tinymlops.fleet.telemetry import TelemetryAggregate

NONCE_BYTES = 16


@dataclass(frozen=True)
class Grant:
    """What a provisioning token allows: batch None = the legacy shared token (any class)."""

    batch: str | None
    classes: tuple[str, ...] | None
    customer: str | None


class IdentityService:
    def __init__(self, store: Store, settings: FleetSettings, clock: Callable[[], datetime]) -> None:
        self.store, self.ids, self.settings, self.clock = store, IdentityStore(store), settings, clock
        token = settings.provisioning_token
        self._legacy = auth.digest(token.get_secret_value()) if token else None
        self._keys: dict[str, tuple[bytes, str, str]] = {}  # device → (public key, ueid, class): immutable

    @property
    def on(self) -> bool:
        return self.settings.attestation

    # -- provisioning tokens --------------------------------------------------------------------
    def create_token(
        self, batch: str, classes: Sequence[str], expires_at: datetime, max_uses: int, customer: str | None, actor: str
    ) -> str:
        token = auth.new_credential()
        now = self.clock()
        if (utc(expires_at) or now) <= now:
            raise Refused("expires_at must be in the future")
        self.ids.add_token(
            dict(
                batch=batch,
                token_hash=auth.digest(token),
                classes=json.dumps(sorted(set(classes))),
                customer=customer,
                expires_at=expires_at,
                max_uses=max_uses,
                created_by=actor,
                created_at=now,
            )
        )
        with self.store.write() as c:
            Store.audit(c, actor, "token_create", batch, f"classes {sorted(set(classes))}, max_uses {max_uses}", now)
        return token

    def tokens(self) -> list[dict]:
        out = []
        for r in self.ids.tokens():
            r["classes"] = json.loads(r["classes"])
            out.append(r)
        return out

    def revoke_token(self, batch: str, actor: str) -> None:
        now = self.clock()
        self.ids.revoke_token(batch, now)
        with self.store.write() as c:
            Store.audit(c, actor, "token_revoke", batch, "", now)

    def check_token(self, authorization: str | None) -> Grant:
        """Before the body is read: the bearer must be a live provisioning token."""
        token = auth.bearer(authorization)
        if self._legacy is not None and auth.matches(token, self._legacy):
            if self.on:
                raise Forbidden("the shared provisioning token cannot enrol with attestation on: use a batch token")
            return Grant(None, None, None)
        row = self.ids.token_by_hash(auth.digest(token))
        if row is None:
            raise Forbidden("not a valid provisioning token")
        if row.revoked_at is not None:
            raise Forbidden("provisioning token revoked")
        now = self.clock()
        if (utc(row.expires_at) or now) <= now:
            raise Forbidden("provisioning token expired")
        if row.uses >= row.max_uses:
            raise Forbidden("provisioning token exhausted")
        return Grant(row.batch, tuple(json.loads(row.classes)), row.customer)

    # -- enrolment ------------------------------------------------------------------------------
    def enrol(self, grant: Grant, device_id: str, device_class: str, public_key: str | None, ueid: str | None) -> str:
        if grant.classes is not None and device_class not in grant.classes:
            raise Forbidden(f"this provisioning token may not enrol class {device_class}")
        if self.on and (public_key is None or ueid is None):
            raise Refused("attestation is on: enrolment needs the device's public_key and ueid")
        if public_key is not None:
            _public_key(public_key)
        credential = auth.new_credential()
        device = dict(
            id=device_id,
            device_class=device_class,
            credential_hash=auth.digest(credential),
            public_key=public_key,
            ueid=ueid,
            customer=grant.customer,
        )
        try:
            self.ids.enrol(device, grant.batch, self.clock())
        except Exception as exc:
            if "no longer valid" in str(exc):
                raise Forbidden("provisioning token exhausted") from None
            raise
        return credential

    def _identity(self, device_id: str) -> tuple[bytes, str, str]:
        got = self._keys.get(device_id)
        if got is None:
            row = self.ids.identity(device_id)
            if row is None or row.public_key is None or row.ueid is None:
                raise Refused(f"device {device_id} enrolled without a device key: it cannot attest")
            got = (bytes.fromhex(row.public_key), row.ueid, row.device_class)
            self._keys[device_id] = got
        return got

    # -- evidence -------------------------------------------------------------------------------
    def verify(self, device_id: str, data: bytes, nonce: bytes) -> Any:
        """Verified evidence of `device_id` for `nonce`, or Refused naming the failed check."""
        from tinymlops.bundle import class_uuid
        from tinymlops.bundle.evidence import verify_evidence

        public_key, ueid, device_class = self._identity(device_id)
        try:
            ev = verify_evidence(data, public_key)
        except BundleError as exc:
            raise Refused(f"evidence rejected: {_reason(exc)}") from None
        if not secrets.compare_digest(ev.nonce, nonce):
            raise Refused("evidence rejected: stale nonce")
        if ev.device_id.hex != ueid:
            raise Refused("evidence rejected: device id is not the enrolled one")
        if ev.class_id != class_uuid(self.settings.vendor, device_class):
            raise Refused("evidence rejected: class is not the enrolled one")
        return ev

    def rollout_nonce(self, rollout_id: str | None) -> str | None:
        return self.ids.rollout_nonce(rollout_id) if rollout_id else None

    def attest_reports(
        self, device_id: str, items: Sequence[tuple[str, str, str, str | None, str | None]]
    ) -> list[tuple[str, str, str, str | None]]:
        """(key, release, stage, reason, evidence b64) → (key, release, stage, reason): with
        attestation on, "confirmed" stands only with fresh evidence that the device runs the
        release's digest at its sequence; otherwise it becomes "unattested" (counted nowhere)."""
        out = []
        for key, release_id, stage, reason, evidence in items:
            if self.on and stage == "confirmed":
                why = self._confirm(device_id, release_id, evidence)
                if why is not None:
                    stage, reason = "unattested", why
            out.append((key, release_id, stage, reason))
        return out

    def _confirm(self, device_id: str, release_id: str, evidence: str | None) -> str | None:
        if evidence is None:
            return "no evidence"
        try:
            data = base64.b64decode(evidence, validate=True)
        except (binascii.Error, ValueError):
            return "evidence is not base64"
        rollout_id = self.ids.assignment_rollout(device_id)
        nonce = self.rollout_nonce(rollout_id)
        if nonce is None:
            return "no rollout nonce for this device"
        try:
            ev = self.verify(device_id, data, bytes.fromhex(nonce))
        except Refused as exc:
            return str(exc)[:255]
        _, _, device_class = self._identity(device_id)
        release, _ = self.store.release(release_id)
        bundle = self.store.bundle(release_id, device_class)
        if bundle is None:
            return "release has no bundle for this class"
        digest = json.loads(bundle.manifest).get("payload_sha256")
        if ev.running_digest() != digest or ev.running_sequence != release.sequence:
            return "evidence rejected: the device does not run this release"
        alarm = self.ids.note_counter(device_id, ev.inference_count, ev.state_record, ev.boot_count, self.clock())
        return None if alarm is None else "evidence rejected: counter_rollback"

    # -- usage evidence -------------------------------------------------------------------------
    def challenge(self, device_id: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES).hex()
        self.ids.set_challenge(device_id, nonce)
        return nonce

    def usage_evidence(self, device_id: str, data: bytes) -> dict:
        """A report against the device's one-time challenge: the counter is reconciled; a replay
        (challenge already used) and a counter below the highest seen are refused."""
        row = self.ids.identity(device_id)
        if row is None:
            raise NotFound(f"device {device_id} not found")
        if row.challenge is None:
            raise Refused("evidence rejected: no open challenge (replayed?)")
        ev = self.verify(device_id, data, bytes.fromhex(row.challenge))
        if not self.ids.take_challenge(device_id, row.challenge):
            raise Refused("evidence rejected: challenge already used")
        alarm = self.ids.note_counter(device_id, ev.inference_count, ev.state_record, ev.boot_count, self.clock())
        if alarm is not None:
            raise Refused("evidence rejected: counter_rollback")
        return {"inference_count": ev.inference_count, "quota_serial": ev.quota_serial, "boot_count": ev.boot_count}

    def signed_window(self, device_id: str, data: bytes) -> TelemetryAggregate:
        """A telemetry window signed by the device's own enrolled key."""
        from tinymlops.bundle.evidence import CONTENT_TELEMETRY, MAX_SIGNED_TELEMETRY_BYTES, verify_signed

        public_key, _, _ = self._identity(device_id)
        try:
            payload = verify_signed(data, public_key, CONTENT_TELEMETRY, "telemetry", MAX_SIGNED_TELEMETRY_BYTES)
        except BundleError as exc:
            raise Refused(f"signed telemetry rejected: {_reason(exc)}") from None
        try:
            return TelemetryAggregate.model_validate_json(payload)
        except ValidationError:
            raise Refused("signed telemetry rejected: the payload is not a telemetry window") from None

    def usage(self, customer: str | None = None) -> dict:
        devices = self.ids.usage(customer)
        customers: dict[str, int] = {}
        for d in devices:
            key = d["customer"] or "-"
            customers[key] = customers.get(key, 0) + (d["inference_count"] or 0)
        return {"devices": devices, "customers": customers}


def _public_key(hex_key: str) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = bytes.fromhex(hex_key)
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise Refused("public_key must be 32 bytes of Ed25519 public key, hex") from None
    return raw


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(getattr(reason, "value", reason or "malformed"))
