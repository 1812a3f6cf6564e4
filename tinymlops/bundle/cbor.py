"""Strict deterministic CBOR for untrusted input. Every failure becomes BundleError(MALFORMED)
naming what was being read.

`loads` first walks the raw bytes (`check_deterministic`) and refuses, before cbor2 sees them:
indefinite lengths, integers/lengths/tags not in their shortest form, map keys out of canonical
order (length-first, then bytewise: what `dumps` writes) or repeated, floats, simple values other
than false/true/null, any tag but 18 at the top (COSE_Sign1), text that is not UTF-8, nesting
deeper than MAX_DEPTH, and trailing bytes. So one value has exactly one accepted encoding, and one
signed bundle one file hash. The C agent's decoder (firmware/agent/src/cbor.c) applies the same
rules; the differential test holds the two to it."""

from __future__ import annotations

import io
from typing import Any

import cbor2

from tinymlops.bundle.reasons import BundleError, Reason

MAX_DEPTH = 8  # containers (and the top tag) nested; manifests need 4


def _head(data: bytes, pos: int, what: str) -> tuple[int, int, int, int]:
    """(major type, additional info, argument, position after the head), shortest form enforced."""
    if pos >= len(data):
        raise BundleError(Reason.MALFORMED, f"{what}: CBOR ends inside an item")
    ib = data[pos]
    major, info = ib >> 5, ib & 31
    if info < 24:
        return major, info, info, pos + 1
    if info > 27:
        raise BundleError(Reason.MALFORMED, f"{what}: indefinite length or reserved CBOR head")
    width = 1 << (info - 24)
    if len(data) - pos - 1 < width:
        raise BundleError(Reason.MALFORMED, f"{what}: CBOR ends inside a head")
    arg = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
    if major != 7 and arg < (24 if width == 1 else 1 << (8 * width // 2)):
        raise BundleError(Reason.MALFORMED, f"{what}: CBOR head not in its shortest form")
    return major, info, arg, pos + 1 + width


def _item(data: bytes, pos: int, depth: int, what: str) -> int:
    """Position after the item at `pos`; `what` names it (map values add their text key)."""
    if depth > MAX_DEPTH:
        raise BundleError(Reason.MALFORMED, f"{what}: CBOR nested deeper than {MAX_DEPTH}")
    major, info, arg, pos = _head(data, pos, what)
    if major in (0, 1):
        return pos
    if major in (2, 3):
        if arg > len(data) - pos:
            raise BundleError(Reason.MALFORMED, f"{what}: CBOR string runs past the end")
        if major == 3:
            try:
                data[pos : pos + arg].decode("utf-8")
            except UnicodeDecodeError:
                raise BundleError(Reason.MALFORMED, f"{what}: CBOR text is not UTF-8") from None
        return pos + arg
    if major == 4:
        if arg > len(data) - pos:
            raise BundleError(Reason.MALFORMED, f"{what}: CBOR array longer than its input")
        for _ in range(arg):
            pos = _item(data, pos, depth + 1, what)
        return pos
    if major == 5:
        if arg > (len(data) - pos) // 2:
            raise BundleError(Reason.MALFORMED, f"{what}: CBOR map longer than its input")
        previous = None
        for _ in range(arg):
            start = pos
            pos = _item(data, pos, depth + 1, what)
            key = data[start:pos]
            if previous is not None and (len(previous), previous) >= (len(key), key):
                raise BundleError(Reason.MALFORMED, f"{what}: CBOR map keys repeated or not in canonical order")
            previous = key
            name = _text_key(key)
            pos = _item(data, pos, depth + 1, f"{what}.{name}" if name is not None else what)
        return pos
    if major == 6:
        if depth != 1 or arg != 18:
            raise BundleError(Reason.MALFORMED, f"{what}: CBOR tag {arg} not allowed here")
        return _item(data, pos, depth + 1, what)
    if info in (20, 21, 22):  # false, true, null
        return pos
    raise BundleError(Reason.MALFORMED, f"{what}: CBOR float, undefined or simple value not allowed")


def _text_key(key: bytes) -> str | None:
    """A short printable text key (to name a field in a message), else None."""
    if key and key[0] >> 5 == 3 and (key[0] & 31) < 24 and key[1:].isascii() and key[1:].decode().isprintable():
        return key[1:].decode()
    return None


def check_deterministic(data: bytes, what: str) -> None:
    """Raise MALFORMED unless `data` is exactly one item in the one accepted encoding."""
    if not data:
        raise BundleError(Reason.MALFORMED, f"{what}: empty CBOR input")
    end = _item(data, 0, 1, what)
    if end != len(data):
        raise BundleError(Reason.MALFORMED, f"{what}: {len(data) - end} trailing bytes after the CBOR item")


def dumps(obj: Any) -> bytes:
    """Deterministic encoding: shortest heads, map keys length-first then bytewise (RFC 8949 §4.2.3,
    cbor2's canonical mode), so a re-encoded map has the same digest."""
    return cbor2.dumps(obj, canonical=True)


def loads(data: bytes, what: str) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BundleError(Reason.MALFORMED, f"{what}: expected a byte string, got {type(data).__name__}")
    data = bytes(data)
    check_deterministic(data, what)
    fp = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(fp, allow_duplicate_keys=False, max_depth=2 * MAX_DEPTH).decode()
    except Exception as exc:  # cbor2 raises decode, value, overflow and recursion errors on bad input
        raise BundleError(Reason.MALFORMED, f"{what}: not valid CBOR ({type(exc).__name__})") from None
    if fp.tell() != len(data):
        raise BundleError(Reason.MALFORMED, f"{what}: {len(data) - fp.tell()} trailing bytes after the CBOR item")
    return obj
