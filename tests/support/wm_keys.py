"""Fixed-secret owner keys for the watermark tests (a module, not conftest, so tests can import it)."""

from __future__ import annotations

import hashlib

from pydantic import SecretBytes

from tinymlops.ml.watermark.key import OwnerKey


def fixed_key(label: str = "tinymlops-test-owner", owner_id: int = 0x2A, serial: int = 7) -> OwnerKey:
    """A key from a fixed secret, so every statistical assertion is reproducible (no flaky 1-in-1000)."""
    return OwnerKey(owner_id=owner_id, serial=serial, secret=SecretBytes(hashlib.sha256(label.encode()).digest()))
