"""Build one bundle file: digests and sizes computed here, payload optionally encrypted, manifest
signed, container written atomically (readers see the old file or the new one, never half)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from tinymlops.bundle import container, crypto
from tinymlops.bundle import manifest as mf
from tinymlops.bundle.keys import Signer
from tinymlops.bundle.verify import CHUNK_BYTES
from tinymlops.util.io import atomic_path


@contextlib.contextmanager
def _payload(payload: bytes | Path | str) -> Iterator[BinaryIO]:
    if isinstance(payload, bytes | bytearray):
        yield io.BytesIO(payload)
    else:
        with open(payload, "rb") as fp:
            yield fp


def _chunks(fp: BinaryIO) -> Iterator[bytes]:
    fp.seek(0)
    while chunk := fp.read(CHUNK_BYTES):
        yield chunk


def build_bundle(
    payload: bytes | Path | str,
    draft: mf.ManifestDraft,
    signer: Signer,
    out: Path | str,
    kek: bytes | None = None,
    *,
    now: datetime | None = None,
) -> mf.Manifest:
    """Write `out` (model bytes or a file, streamed) and return the signed manifest.

    With `kek` the payload is AES-256-GCM encrypted under a fresh content key wrapped by the KEK.
    """
    out = Path(out)
    created = mf.utc_seconds(now if now is not None else datetime.now(timezone.utc))
    with _payload(payload) as source:
        digest, size = hashlib.sha256(), 0
        for chunk in _chunks(source):
            digest.update(chunk)
            size += len(chunk)
        cek, encryption = crypto.new_content_key(kek) if kek is not None else (b"", None)
        manifest = mf.Manifest(
            model_name=draft.model_name,
            model_version=draft.model_version,
            sequence=draft.sequence,
            vendor_id=mf.vendor_uuid(draft.vendor),
            class_id=mf.class_uuid(draft.vendor, draft.device_class),
            payload_sha256=digest.hexdigest(),
            payload_size=size,
            encrypted=encryption is not None,
            encryption=encryption,
            created=created,
            expires=created + draft.lifetime,
            arena_bytes=draft.arena_bytes,
            ops=list(draft.ops),
            lineage=draft.lineage,
            selftest=draft.selftest,
            preprocessing=draft.preprocessing,
            image=draft.image,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent) as spool:
            stored: BinaryIO = source
            if encryption is not None:
                # the ciphertext digest must be signed, so encrypt to a spool first, then sign, then write
                ctx = crypto.encryptor(cek, encryption, crypto.associated_data(manifest))
                cipher = hashlib.sha256()
                for chunk in _chunks(source):
                    block = ctx.update(chunk)
                    cipher.update(block)
                    spool.write(block)
                tail = ctx.finalize() + ctx.tag
                cipher.update(tail)
                spool.write(tail)
                manifest = mf.Manifest.model_validate(
                    {**dict(manifest), "ciphertext_sha256": cipher.hexdigest(), "ciphertext_size": size + len(tail)}
                )
                stored = spool
            signed = signer.sign(mf.encode(manifest))
            with atomic_path(out) as tmp, open(tmp, "wb") as target:
                target.write(container.header(len(signed)))
                target.write(signed)
                stored.seek(0)
                shutil.copyfileobj(stored, target, CHUNK_BYTES)
    return manifest
