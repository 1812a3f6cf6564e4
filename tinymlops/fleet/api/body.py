"""Request bodies, read only after the credential checked out: the declared length is checked
before a byte is read, the stream is cut at the route's limit, and JSON is parsed strictly (no NaN,
no Infinity, no numbers that overflow a float, bounded nesting)."""

from __future__ import annotations

import json
import math
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from tinymlops.errors import TooLarge

M = TypeVar("M", bound=BaseModel)


def declared_too_large(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise TooLarge(f"body over {limit} bytes")


async def read_limited(request: Request, limit: int) -> bytes:
    declared_too_large(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():  # a lying or absent Content-Length is capped all the same
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _constant(_: str) -> float:
    raise ValueError("only finite numbers are JSON numbers")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def parse(model: type[M], raw: bytes) -> M:
    """`raw` as `model`; a ValidationError (→ 422, without the input) for anything else."""
    try:
        data = json.loads(raw, parse_constant=_constant, parse_float=_finite)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        why = "nested too deeply" if isinstance(exc, RecursionError) else "not valid JSON"
        if isinstance(exc, ValueError) and "finite numbers" in str(exc):
            why = str(exc)
        elif isinstance(exc, ValueError) and "out of range" in str(exc):
            why = "number out of range"
        raise ValidationError.from_exception_data(
            model.__name__, [{"type": "value_error", "loc": ("body",), "input": None, "ctx": {"error": why}}]
        ) from None
    return model.model_validate(data)


async def json_body(request: Request, model: type[M], limit: int) -> M:
    return parse(model, await read_limited(request, limit))
