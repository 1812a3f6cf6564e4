"""Fleet-wide admin views: the devices, the audit log; and the health probe."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam

from tinymlops.fleet.api.body import json_body
from tinymlops.fleet.api.deps import SECURED, Admin, service
from tinymlops.fleet.api.deps import json_body as body_doc
from tinymlops.fleet.api.errors import responses
from tinymlops.fleet.api.wire import (
    NAME,
    AuditEntry,
    DeviceInfo,
    DevicePage,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    Usage,
)
from tinymlops.fleet.telemetry import INT64_MAX

router = APIRouter()


@router.get(
    "/v1/admin/devices",
    response_model=DevicePage,
    tags=["admin"],
    responses=responses(401, 403, 422),
    openapi_extra=SECURED,
)
def list_devices(
    request: Request,
    who: Admin,
    device_class: Annotated[str | None, Query(alias="class", pattern=NAME)] = None,
    sequence: Annotated[int | None, Query(ge=0, le=INT64_MAX, description="running model sequence")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> DevicePage:
    """Enrolled devices by id, filtered by class and running sequence."""
    total, rows = service(request).list_devices(
        device_class=device_class, sequence=sequence, limit=limit, offset=offset
    )
    return DevicePage(total=total, limit=limit, offset=offset, items=[DeviceInfo(**r) for r in rows])


@router.get(
    "/v1/admin/audit",
    response_model=list[AuditEntry],
    tags=["admin"],
    responses=responses(401, 403, 422),
    openapi_extra=SECURED,
)
def audit_log(
    request: Request,
    who: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    target: Annotated[str | None, Query(max_length=128)] = None,
) -> list[AuditEntry]:
    return [AuditEntry(**r) for r in service(request).audit_log(limit, target)]


@router.post(
    "/v1/admin/provisioning-tokens",
    status_code=201,
    response_model=TokenCreated,
    tags=["admin"],
    responses=responses(401, 403, 409, 413, 422),
    openapi_extra={**SECURED, **body_doc(TokenCreate)},
)
async def create_token(request: Request, who: Admin) -> TokenCreated:
    """A provisioning token for one batch: expiry, maximum uses, allowed classes, customer.
    The token is in this answer only; the server keeps its digest."""
    fleet = service(request)
    body = await json_body(request, TokenCreate, fleet.settings.max_json_bytes)
    token = fleet.identity.create_token(body.batch, body.classes, body.expires_at, body.max_uses, body.customer, who)
    return TokenCreated(batch=body.batch, token=token)


@router.get(
    "/v1/admin/provisioning-tokens",
    response_model=list[TokenInfo],
    tags=["admin"],
    responses=responses(401, 403),
    openapi_extra=SECURED,
)
def list_tokens(request: Request, who: Admin) -> list[TokenInfo]:
    return [TokenInfo(**t) for t in service(request).identity.tokens()]


@router.delete(
    "/v1/admin/provisioning-tokens/{batch}",
    status_code=204,
    tags=["admin"],
    responses=responses(401, 403, 404, 422),
    openapi_extra=SECURED,
)
def revoke_token(request: Request, who: Admin, batch: Annotated[str, PathParam(pattern=NAME)]) -> None:
    service(request).identity.revoke_token(batch, who)


@router.get(
    "/v1/admin/usage",
    response_model=Usage,
    tags=["admin"],
    responses=responses(401, 403, 422),
    openapi_extra=SECURED,
)
def usage(request: Request, who: Admin, customer: Annotated[str | None, Query(pattern=NAME)] = None) -> Usage:
    """Inferences per device and per customer, from the counters in verified evidence; devices
    whose counter went backwards carry a counter_alarm."""
    return Usage(**service(request).identity.usage(customer))


@router.get("/healthz", tags=["ops"])
def healthz() -> dict[str, str]:
    return {"status": "ok"}
