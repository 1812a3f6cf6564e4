"""The one place where domain errors become HTTP status codes, and where every error answer is
made: `{"detail": …}`, never echoing the request's input back."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from tinymlops.errors import (
    Conflict,
    Forbidden,
    NotFound,
    Refused,
    TinyMLOpsError,
    TooLarge,
    Unauthenticated,
    Unavailable,
)

# Most specific first: RolloutError is a Conflict.
STATUS: tuple[tuple[type[TinyMLOpsError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (TooLarge, 413),
    (Refused, 422),
    (Unavailable, 503),
)


def status_of(exc: TinyMLOpsError) -> int:
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 400)


class Problem(BaseModel):
    """Every error answer but a validation error."""

    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Invalid(BaseModel):
    """422: what is wrong, where; never the input itself."""

    detail: list[FieldError]


def field_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors without `input` and `ctx`, which would echo (a part of) the request."""
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in errors
    ]


def invalid(errors: list[Any]) -> JSONResponse:
    return JSONResponse({"detail": field_errors(errors)}, status_code=422)


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(TinyMLOpsError)
    async def _domain(_: Request, exc: TinyMLOpsError) -> JSONResponse:
        code = status_of(exc)
        if code == 422:  # every 422 has one shape: where, what, which kind
            return invalid([{"loc": ["body"], "msg": str(exc), "type": "refused"}])
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
        return problem(code, str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def _request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid(list(exc.errors()))

    @app.exception_handler(ValidationError)
    async def _body(_: Request, exc: ValidationError) -> JSONResponse:
        return invalid(exc.errors(include_input=False, include_context=False))


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting these error codes of a route."""
    words = {
        400: "bad request",
        401: "no credential, or not 'Bearer <token>'",
        403: "credential not valid for this",
        404: "not found",
        409: "conflicts with what is stored",
        413: "body over its limit",
        422: "invalid input (where, and why; never the input)",
        503: "not configured to do this now",
    }
    return {code: {"model": Invalid if code == 422 else Problem, "description": words[code]} for code in codes}
