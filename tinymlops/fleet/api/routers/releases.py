"""Releases: a signed bundle per device class, verified before it is kept; the list of releases."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from tinymlops.errors import Refused, TooLarge
from tinymlops.fleet.api.body import declared_too_large
from tinymlops.fleet.api.deps import SECURED, Admin, service
from tinymlops.fleet.api.errors import responses
from tinymlops.fleet.api.wire import NAME, BundleInfo, ReleaseInfo, ReleasePage

router = APIRouter(tags=["releases"])
BINARY = {
    "requestBody": {
        "required": True,
        "description": "the signed bundle file (tinymlops bundle build), as is",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.put(
    "/v1/admin/releases/{release_id}/bundles/{device_class}",
    status_code=201,
    response_model=BundleInfo,
    responses=responses(400, 401, 403, 409, 413, 422, 503),
    openapi_extra={**SECURED, **BINARY},
)
async def upload(
    request: Request,
    release_id: Annotated[str, PathParam(pattern=NAME)],
    device_class: Annotated[str, PathParam(pattern=NAME)],
    who: Admin,
) -> BundleInfo:
    """One signed bundle of a release for one device class (raw body). Verified against the
    server's trust anchor, its revocation list and the class before anything is stored."""
    fleet = service(request)
    limit = fleet.settings.max_bundle_bytes
    declared_too_large(request, limit)
    incoming = fleet.settings.bundle_dir / ".incoming"
    tmp = incoming / f"{secrets.token_hex(8)}.part"
    try:
        sha, size = await _receive(request, tmp, limit)
        manifest = await run_in_threadpool(fleet.accept_bundle, tmp, sha, size, release_id, device_class, who)
    finally:
        tmp.unlink(missing_ok=True)
    return BundleInfo(
        release_id=release_id,
        device_class=device_class,
        sequence=manifest.sequence,
        sha256=sha,
        size=size,
        model_name=manifest.model_name,
        model_version=manifest.model_version,
    )


@router.get("/v1/admin/releases", response_model=ReleasePage, responses=responses(401, 403, 422), openapi_extra=SECURED)
def list_releases(
    request: Request,
    who: Admin,
    model_version: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> ReleasePage:
    """Releases by sequence, with the classes each has a bundle for."""
    total, rows = service(request).releases(model_version=model_version, limit=limit, offset=offset)
    return ReleasePage(total=total, limit=limit, offset=offset, items=[ReleaseInfo(**r) for r in rows])


async def _receive(request: Request, tmp: Path, limit: int) -> tuple[str, int]:
    """Stream the body to `tmp`, stopping at `limit` bytes; → (sha256, size)."""
    tmp.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with open(tmp, "wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"bundle exceeds {limit} bytes")
            digest.update(chunk)
            f.write(chunk)
        f.flush()
        await run_in_threadpool(os.fsync, f.fileno())
    if size == 0:
        raise Refused("empty body: send the bundle bytes")
    return digest.hexdigest(), size
