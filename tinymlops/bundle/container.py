"""The bundle file: one container, nothing else accepted.

magic  b"TMLB"            4 bytes
version                   uint16 big-endian (1)
manifest length           uint32 big-endian (at most 1 MiB)
manifest                  COSE_Sign1 (tag 18) over the CBOR manifest
payload                   exactly manifest.payload_size plaintext bytes, or ciphertext_size
                          ciphertext bytes (GCM tag last) when encrypted
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from tinymlops.bundle.reasons import BundleError, Reason

MAGIC = b"TMLB"
VERSION = 1
MAX_MANIFEST = 1 << 20
_HEADER = struct.Struct(">4sHI")
HEADER_BYTES = _HEADER.size


def header(manifest_length: int) -> bytes:
    if manifest_length > MAX_MANIFEST:
        raise BundleError(Reason.MALFORMED, f"manifest is {manifest_length} bytes, the limit is {MAX_MANIFEST}")
    return _HEADER.pack(MAGIC, VERSION, manifest_length)


def read_up_to(fp: BinaryIO, n: int) -> bytes:
    """Up to n bytes; fewer only at end of file (streams may return short reads before that)."""
    data = b""
    while len(data) < n:
        more = fp.read(n - len(data))
        if not more:
            break
        data += more
    return data


def read_exactly(fp: BinaryIO, n: int, what: str) -> bytes:
    data = read_up_to(fp, n)
    if len(data) < n:
        raise BundleError(Reason.MALFORMED, f"{what}: file ends after {len(data)} of {n} bytes")
    return data


def read_signed_manifest(fp: BinaryIO) -> bytes:
    """Read the header and the COSE manifest; leave `fp` at the first payload byte."""
    raw = read_up_to(fp, HEADER_BYTES)
    if len(raw) >= len(MAGIC) and raw[: len(MAGIC)] != MAGIC:
        raise BundleError(Reason.BAD_MAGIC, f"not a tinymlops bundle (magic {raw[:4].hex()}, expected {MAGIC.hex()})")
    if len(raw) < HEADER_BYTES:
        raise BundleError(Reason.MALFORMED, f"bundle header: file ends after {len(raw)} of {HEADER_BYTES} bytes")
    _, version, length = _HEADER.unpack(raw)
    if version != VERSION:
        raise BundleError(Reason.UNSUPPORTED_VERSION, f"bundle container version {version}, expected {VERSION}")
    if length > MAX_MANIFEST:
        raise BundleError(Reason.MALFORMED, f"bundle header: manifest length {length} exceeds {MAX_MANIFEST}")
    return read_exactly(fp, length, "manifest")
