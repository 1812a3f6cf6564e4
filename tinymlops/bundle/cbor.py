"""Strict CBOR decoding for untrusted input: one item, no trailing bytes, no duplicate keys, bounded
depth. Every decoder failure becomes BundleError(MALFORMED) naming what was being read."""

from __future__ import annotations

import io
from typing import Any

import cbor2

from tinymlops.bundle.reasons import BundleError, Reason

MAX_DEPTH = 16


def dumps(obj: Any) -> bytes:
    """Deterministic encoding (RFC 8949 §4.2 core rules), so a re-encoded map has the same digest."""
    return cbor2.dumps(obj, canonical=True)


def loads(data: bytes, what: str) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BundleError(Reason.MALFORMED, f"{what}: expected a byte string, got {type(data).__name__}")
    data = bytes(data)
    fp = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(fp, allow_duplicate_keys=False, max_depth=MAX_DEPTH).decode()
    except Exception as exc:  # cbor2 raises decode, value, overflow and recursion errors on bad input
        raise BundleError(Reason.MALFORMED, f"{what}: not valid CBOR ({type(exc).__name__})") from None
    if fp.tell() != len(data):
        raise BundleError(Reason.MALFORMED, f"{what}: {len(data) - fp.tell()} trailing bytes after the CBOR item")
    return obj
