"""Credentials as dependencies: they read only the Authorization header, so a route checks them
before its body is read. The header is hidden from each operation's parameters; the OpenAPI
description names it once, as the `bearer` security scheme."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request

from tinymlops.fleet.service import FleetService

Authorization = Annotated[str | None, Header(include_in_schema=False)]
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]  # an operation's `security`
SECURED: dict[str, Any] = {"security": BEARER}


def service(request: Request) -> FleetService:
    return request.app.state.service


def _admin(request: Request, authorization: Authorization = None) -> str:
    return service(request).admin(authorization)


Admin = Annotated[str, Depends(_admin)]  # the admin's name, for the audit log


def json_body(model: type, required: bool = True) -> dict[str, Any]:
    """openapi_extra describing a JSON body that the route reads itself (after the credential)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": ref}}}}
