"""The owner key: 32 secret bytes plus the public payload (owner id, model serial).

The key file is the watermark's only secret: the triggers are regenerated from it and stored
nowhere else. It is written 0600 and atomically, and no repr, log line or error message ever
contains the secret bytes (pydantic's SecretBytes masks them).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SecretBytes

from tinymlops.errors import TinyMLOpsError
from tinymlops.ml.watermark.config import PAYLOAD_BITS
from tinymlops.util.io import atomic_path

FORMAT = "tinymlops-watermark-key/1"
SECRET_BYTES = 32
MAX_ID = 2**32 - 1
log = logging.getLogger(__name__)


class WatermarkError(TinyMLOpsError):
    """A watermark could not be derived, embedded or verified."""


class WatermarkRefused(WatermarkError):
    """No embedding plan keeps accuracy within the allowed cost and the owner test meaningful.
    `report` is the plan report (every attempt), for the caller to record."""

    def __init__(self, reason: str, report: dict) -> None:
        super().__init__(reason)
        self.report = report


class KeyFileError(WatermarkError):
    """An owner key file is missing, unreadable, malformed or too open."""


class OwnerKey(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    owner_id: int = Field(ge=0, le=MAX_ID)
    serial: int = Field(ge=0, le=MAX_ID)
    secret: SecretBytes

    @property
    def payload_id(self) -> str:
        """Public: owner id and serial in hex. Safe to log, tag and put in manifests."""
        return f"{self.owner_id:08x}{self.serial:08x}"

    def payload_bits(self) -> np.ndarray:
        """The 64 payload bits, most significant first."""
        value = (self.owner_id << 32) | self.serial
        return np.array([(value >> (PAYLOAD_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS)], dtype=np.int8)


def payload_id_of(bits: np.ndarray) -> str:
    """Hex of 64 decoded bits (the form OwnerKey.payload_id has)."""
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    return f"{value:016x}"


def generate_key(owner_id: int, serial: int) -> OwnerKey:
    for name, value in (("owner id", owner_id), ("serial", serial)):
        if not 0 <= value <= MAX_ID:
            raise WatermarkError(f"{name} must be in 0..{MAX_ID}, got {value}")
    return OwnerKey(owner_id=owner_id, serial=serial, secret=SecretBytes(secrets.token_bytes(SECRET_BYTES)))


def write_key(key: OwnerKey, path: Path | str, overwrite: bool = False) -> Path:
    """Write 0600 and atomically; refuse to replace an existing key (that would orphan a watermark)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite an owner key")
    document = {
        "format": FORMAT,
        "owner_id": key.owner_id,
        "serial": key.serial,
        "secret": key.secret.get_secret_value().hex(),
    }
    with atomic_path(path) as tmp:
        os.chmod(tmp, 0o600)  # before the secret is written, not after
        tmp.write_text(json.dumps(document) + "\n", encoding="utf-8")
    return path


def _field_int(doc: dict, name: str, path: Path) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID:
        raise KeyFileError(f"{path}: '{name}' must be an integer in 0..{MAX_ID}")
    return value


def load_key(path: Path | str) -> OwnerKey:
    """Read an owner key file; every failure is one line naming the file and never quoting the secret."""
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"{path}: owner key file not found")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"{path}: permissions {mode:04o} are too open for an owner key; chmod 600 it")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise KeyFileError(f"{path}: not a tinymlops watermark key file (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise KeyFileError(f"{path}: not a tinymlops watermark key file (format is not {FORMAT})")
    unknown = set(doc) - {"format", "owner_id", "serial", "secret"}
    if unknown:
        raise KeyFileError(f"{path}: unknown key '{sorted(unknown)[0]}'")
    owner_id, serial = _field_int(doc, "owner_id", path), _field_int(doc, "serial", path)
    secret_hex = doc.get("secret")
    try:
        secret = bytes.fromhex(secret_hex) if isinstance(secret_hex, str) else b""
    except ValueError:
        secret = b""
    if len(secret) != SECRET_BYTES:
        raise KeyFileError(f"{path}: 'secret' must be {SECRET_BYTES} bytes in hex")
    return OwnerKey(owner_id=owner_id, serial=serial, secret=SecretBytes(secret))


def ensure_dev_key(path: Path | str, owner_id: int, serial: int) -> tuple[OwnerKey, bool]:
    """Load the owner key at `path`, or create one there on first use; → (key, created).

    For `make run` on a fresh machine. Creating a key is logged (with the public payload id and
    the path, never the secret) because losing that file means losing the proof of ownership.
    """
    path = Path(path)
    if path.exists():
        key = load_key(path)
        if (key.owner_id, key.serial) != (owner_id, serial):
            log.info(
                "using existing watermark key %s (payload %s), not owner %s serial %s",
                path,
                key.payload_id,
                owner_id,
                serial,
            )
        return key, False
    key = generate_key(owner_id, serial)
    write_key(key, path)
    log.warning(
        "created a new watermark owner key at %s (payload %s); back it up and keep it out of git", path, key.payload_id
    )
    return key, True
