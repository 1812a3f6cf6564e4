"""Root-signed recovery statements: the one way to LOWER a device's anti-rollback sequence.

A device raises its stored sequence on every confirmed install and refuses anything below it.
If a release went out with a sequence far too high (a fast-forward that stayed inside the class's
bound, or a mistake), every later release is refused. The offline root can then issue, for ONE
device, a statement setting its stored sequence to `sequence`:

    COSE_Sign1 (tag 18), protected {alg: EdDSA, content type: application/tinymlops-recovery+cbor,
    kid: root kid}, no unprotected header, payload the deterministic CBOR map

        {"class_id": bstr .size 16, "device_id": bstr .size 16, "recovery_counter": uint,
         "sequence": uint (≤ 2^63-1), "issued": uint (Unix seconds)}

A device applies it only if it is signed by its pinned root, names its device id and class, and
`recovery_counter` equals the device's own counter, which it then increments: each statement works
once, and a replayed one is refused (stale_recovery). Signing keys cannot issue it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tinymlops.bundle import cbor, cose
from tinymlops.bundle.keys import _read_private
from tinymlops.bundle.manifest import UINT63, utc_seconds
from tinymlops.bundle.reasons import BundleError, Reason
from tinymlops.bundle.trust import TrustAnchor, _from_seconds, _verified_by_root, key_id

_KEYS = {"class_id", "device_id", "recovery_counter", "sequence", "issued"}


class RecoveryStatement(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    class_id: uuid.UUID
    device_id: uuid.UUID
    recovery_counter: int = Field(ge=0, le=2**64 - 1, description="the device's counter; used once")
    sequence: int = Field(ge=0, le=UINT63, description="the device's new anti-rollback sequence")
    issued: datetime

    def to_wire(self) -> bytes:
        return cbor.dumps(
            {
                "class_id": self.class_id.bytes,
                "device_id": self.device_id.bytes,
                "recovery_counter": self.recovery_counter,
                "sequence": self.sequence,
                "issued": int(self.issued.timestamp()),
            }
        )

    @classmethod
    def verify(cls, data: bytes, trust: TrustAnchor) -> RecoveryStatement:
        obj = _verified_by_root(data, trust, "recovery statement", cose.CONTENT_RECOVERY)
        if not isinstance(obj, dict) or set(obj) != _KEYS:
            raise BundleError(Reason.MALFORMED, f"recovery statement: expected {sorted(_KEYS)}")
        for name in ("class_id", "device_id"):
            if not isinstance(obj[name], bytes) or len(obj[name]) != 16:
                raise BundleError(Reason.MALFORMED, f"recovery statement.{name}: expected 16 bytes")
        for name in ("recovery_counter", "sequence"):
            if type(obj[name]) is not int or obj[name] < 0:
                raise BundleError(Reason.MALFORMED, f"recovery statement.{name}: expected a non-negative integer")
        return cls(
            class_id=uuid.UUID(bytes=obj["class_id"]),
            device_id=uuid.UUID(bytes=obj["device_id"]),
            recovery_counter=obj["recovery_counter"],
            sequence=obj["sequence"],
            issued=_from_seconds(obj["issued"], "recovery statement issued"),
        )


def issue_recovery(
    directory: Path | str,
    *,
    class_id: uuid.UUID,
    device_id: uuid.UUID,
    recovery_counter: int,
    sequence: int,
    passphrase: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """Sign a recovery statement with the root key of the key directory `directory`."""
    root = _read_private(Path(directory) / "root.key", passphrase)
    body = RecoveryStatement(
        class_id=class_id,
        device_id=device_id,
        recovery_counter=recovery_counter,
        sequence=sequence,
        issued=utc_seconds(now if now is not None else datetime.now(timezone.utc)),
    )
    return cose.encode_sign1(body.to_wire(), root, bytes.fromhex(key_id(root.public_key())), cose.CONTENT_RECOVERY)
