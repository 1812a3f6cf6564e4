"""Quota tokens: prepaid inference packages, enforced offline by the device's agent.

    COSE_Sign1 (tag 18), protected {alg: EdDSA, content type: application/tinymlops-quota+cbor,
    kid: metering kid}, unprotected {"tinymlops-key-statement": the metering key's root-signed
    statement}, payload the deterministic CBOR map

        {"device_id": bstr .size 16, "expires": uint (Unix seconds), "quota": uint, "serial": uint}

Signed by a metering key: a key the owner's root (the key the device pinned at provisioning)
certified with a key statement of purpose "quota-signing" (tinymlops.bundle.keys, `tinymlops keys
metering`), so the root can stay offline while quotas are sold. The agent
(firmware/agent/src/attest.c) checks the chain root → statement (purpose quota-signing, validity
window, the revocation list signing keys share) → token. A bundle-signing key cannot sign a token
(its statement's purpose is bundle-signing), a metering key cannot sign a bundle, and a token
signed by the root itself, with no statement, is refused: there is one token format, so no device
ever needs the root online. The agent accepts a token only for its own device id, with a serial above the
last one it installed (each token works once) and before its expiry; it then allows `quota` more
inferences from its current counter (what was left of the previous token is replaced) and refuses
inference past that or past `expires`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tinymlops.bundle import cbor, cose
from tinymlops.bundle.keys import Signer, _read_private, load_metering_key, metering_signer
from tinymlops.bundle.manifest import UINT63
from tinymlops.bundle.reasons import BundleError, Reason
from tinymlops.bundle.trust import (
    QUOTA_PURPOSE,
    RevocationList,
    TrustAnchor,
    _check_size,
    _from_seconds,
    verify_statement,
)

CONTENT_QUOTA = cose.CONTENT_QUOTA
_KEYS = {"device_id", "expires", "quota", "serial"}


class QuotaToken(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: uuid.UUID
    quota: int = Field(ge=0, le=UINT63, description="inferences this token allows")
    expires: datetime
    serial: int = Field(ge=1, le=UINT63, description="strictly increasing per device: a token works once")

    def to_wire(self) -> bytes:
        return cbor.dumps(
            {
                "device_id": self.device_id.bytes,
                "expires": int(self.expires.timestamp()),
                "quota": self.quota,
                "serial": self.serial,
            }
        )

    @classmethod
    def verify(
        cls, data: bytes, trust: TrustAnchor, *, now: datetime | None = None, revocations: RevocationList | None = None
    ) -> QuotaToken:
        """The chain the agent checks: root → metering key statement (purpose, window at `now`,
        default the current time; revocation when `revocations` is given) → token."""
        now = now if now is not None else datetime.now(timezone.utc)
        what = "quota token"
        _check_size(data, what)
        message = cose.decode_sign1(data, what, CONTENT_QUOTA)
        statement_bytes = message.unprotected.get(cose.HEADER_KEY_STATEMENT)
        if not isinstance(statement_bytes, bytes):
            raise BundleError(Reason.UNTRUSTED_KEY, f"{what}: carries no metering key statement")
        statement = verify_statement(statement_bytes, trust, QUOTA_PURPOSE)
        if message.kid.hex() != statement.kid:
            raise BundleError(
                Reason.KEY_MISMATCH, f"{what}: signed by {message.kid.hex()}, statement is for {statement.kid}"
            )
        cose.verify_sign1(message, statement.key(), what)
        if revocations is not None and statement.kid in revocations.revoked:
            raise BundleError(Reason.REVOKED_KEY, f"metering key {statement.kid} is revoked")
        if now < statement.valid_from:
            raise BundleError(
                Reason.KEY_NOT_YET_VALID, f"metering key {statement.kid} valid from {statement.valid_from}"
            )
        if now >= statement.valid_until:
            raise BundleError(Reason.EXPIRED_KEY, f"metering key {statement.kid} expired {statement.valid_until}")
        obj = cbor.loads(message.payload, f"{what} payload")
        if not isinstance(obj, dict) or set(obj) != _KEYS:
            raise BundleError(Reason.MALFORMED, f"quota token: expected {sorted(_KEYS)}")
        if not isinstance(obj["device_id"], bytes) or len(obj["device_id"]) != 16:
            raise BundleError(Reason.MALFORMED, "quota token.device_id: expected 16 bytes")
        for name in ("quota", "serial"):
            if type(obj[name]) is not int or obj[name] < 0:
                raise BundleError(Reason.MALFORMED, f"quota token.{name}: expected a non-negative integer")
        return cls(
            device_id=uuid.UUID(bytes=obj["device_id"]),
            quota=obj["quota"],
            serial=obj["serial"],
            expires=_from_seconds(obj["expires"], "quota token expires"),
        )


def sign_quota(token: QuotaToken, metering: Signer) -> bytes:
    """The token signed by `metering`, carrying its statement. Any Signer signs, the device decides:
    one whose statement is not for quota signing is refused there (untrusted_key)."""
    return metering.sign(token.to_wire(), CONTENT_QUOTA)


def quota_issuer(
    directory: Path | str, passphrase: str | None = None, *, now: datetime | None = None
) -> Callable[[QuotaToken], bytes] | None:
    """A signer of quota tokens from the key directory `directory`: its current metering key (the
    root may be offline), else — a development directory holding root.key but no metering key yet —
    a fresh in-memory metering key the root certifies for one day (never stored). None when neither
    is there. The key is read once and lives only in the returned closure."""
    directory = Path(directory)
    metering = load_metering_key(directory, passphrase, now=now)
    if metering is None:
        path = directory / "root.key"
        if not path.exists():
            return None
        root = _read_private(path, passphrase)
        start = (now or datetime.now(timezone.utc)) - timedelta(hours=1)  # a device clock a little behind
        metering = metering_signer(root, now=start, validity=timedelta(days=1, hours=1))
    signer = metering
    return lambda token: sign_quota(token, signer)
