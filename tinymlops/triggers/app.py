"""The receiver: FastAPI routes for GitHub and GitLab push webhooks, and a health probe.

Order of checks: size (413) → shared secret (401) → event kind (202 ignored) → JSON (400; strict:
no NaN or Infinity, bounded nesting) → repository and branch (202 ignored) → redelivery or replay
(202 duplicate: the same delivery id, or the same repository, ref and after-sha under any delivery
id) → trigger (202 triggered). A trigger that fails within the answer window releases the push and
answers 502, so a redelivery can succeed later. The trigger runs on its own thread: if it has not
returned within `answer_within_seconds`, the answer is 202 "accepted" — the push is durably stored
by then — and the thread finishes the job; if the run cannot be created, the push waits for a
retry, which the receiver makes every `retry_seconds` (and a redelivery makes at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from tinymlops.triggers.config import WebhookConfig
from tinymlops.triggers.events import PayloadError, PushEvent, github_push, gitlab_push
from tinymlops.triggers.signature import github_signature_valid, gitlab_token_valid
from tinymlops.triggers.store import DeliveryStore

Trigger = Callable[[PushEvent], str]  # starts a pipeline run for the push; returns its run id
log = logging.getLogger("tinymlops.webhook")


class _TooLarge(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    """The raw body (the signature covers these exact bytes), refusing more than `limit`."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():  # a lying or absent Content-Length is still capped
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(status: int, outcome: str, **details: Any) -> JSONResponse:
    return JSONResponse({"status": outcome, **details}, status_code=status)


def _constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def loads(body: bytes) -> Any:
    """Strict JSON: no NaN or Infinity; nesting too deep for the parser is a ValueError too."""
    try:
        return json.loads(body, parse_constant=_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


class Answer(BaseModel):
    """Every answer of the receiver: what happened to the delivery, and why."""

    status: str
    reason: str | None = None
    run_id: str | None = None
    deployment: str | None = None
    repository: str | None = None
    ref: str | None = None
    sha: str | None = None


def _documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    words = {
        202: "triggered, accepted (stored, its run being created), duplicate, or ignored (with the reason)",
        400: "not a push payload, or no delivery id",
        401: "missing or invalid signature / token",
        413: "body over max_body_bytes",
        502: "the run could not be created: redeliver later",
    }
    return {code: {"model": Answer, "description": words[code]} for code in codes}


PUSH_BODY = {
    "requestBody": {
        "required": True,
        "description": "the push payload, exactly as sent (the signature covers these bytes)",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def create_app(config: WebhookConfig, secret: str, store: DeliveryStore, trigger: Trigger) -> FastAPI:
    triggers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-trigger")

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        retrier = asyncio.create_task(_retry_forever())
        try:
            yield
        finally:
            retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retrier
            triggers.shutdown(wait=True)  # a run being started is started (or kept for a retry) before exit

    app = FastAPI(title="tinymlops webhook receiver", version="1", docs_url=None, redoc_url=None, lifespan=lifespan)

    def start_run(event: PushEvent) -> str:
        """Trigger, then settle the push's record (on the trigger's thread). A failure keeps it for a
        retry; the handler releases it instead when it can still answer 502."""
        try:
            run_id = trigger(event)
        except Exception as exc:  # the orchestrator is down or refused
            log.error(
                "trigger failed for %s push %s@%s: %s",
                event.provider,
                event.repository,
                event.sha[:12],
                type(exc).__name__,
            )
            store.defer(event)
            raise
        store.record_run(event, run_id)
        log.info("push %s@%s → run %s", event.repository, event.sha[:12], run_id)
        return run_id

    async def _retry_forever() -> None:
        while True:
            await asyncio.sleep(config.retry_seconds)
            try:
                for event in await run_in_threadpool(store.pending):
                    if await run_in_threadpool(store.retake, event):
                        with contextlib.suppress(Exception):  # logged by start_run; retried next time
                            await asyncio.wrap_future(triggers.submit(start_run, event))
            except Exception:  # the store is away: the next round retries
                log.exception("webhook retry round failed")

    async def handle(request: Request, provider: str) -> JSONResponse:
        try:
            body = await _body(request, config.max_body_bytes)
        except _TooLarge:
            return _answer(413, "rejected", reason=f"body larger than {config.max_body_bytes} bytes")
        headers = request.headers
        if provider == "github":
            authentic = github_signature_valid(secret, body, headers.get("x-hub-signature-256"))
            kind, is_push, delivery = headers.get("x-github-event", ""), "push", headers.get("x-github-delivery")
        else:
            authentic = gitlab_token_valid(secret, headers.get("x-gitlab-token"))
            kind, is_push = headers.get("x-gitlab-event", ""), "Push Hook"
            delivery = headers.get("x-gitlab-event-uuid") or headers.get("idempotency-key")
        if not authentic:
            return _answer(401, "rejected", reason="missing or invalid signature")
        if kind != is_push:
            return _answer(202, "ignored", reason=f"event '{kind}' is not a push")
        if provider == "github" and not delivery:
            return _answer(400, "rejected", reason="missing X-GitHub-Delivery header")
        try:
            payload = loads(body)
            event = (github_push if provider == "github" else gitlab_push)(payload, delivery)
        except (ValueError, PayloadError) as exc:
            reason = str(exc) if isinstance(exc, PayloadError) else "body is not valid JSON"
            return _answer(400, "rejected", reason=reason)
        return await _act(event)

    async def _act(event: PushEvent) -> JSONResponse:
        where = {"repository": event.repository, "ref": event.ref, "sha": event.sha}
        if not config.repository_allowed(event.repository):
            return _answer(202, "ignored", reason=f"repository '{event.repository}' is not configured", **where)
        if event.branch is None:
            return _answer(202, "ignored", reason=f"ref '{event.ref}' is not a branch", **where)
        if event.deleted:
            return _answer(202, "ignored", reason=f"branch '{event.branch}' was deleted", **where)
        if not config.branch_allowed(event.branch):
            return _answer(202, "ignored", reason=f"branch '{event.branch}' is not configured", **where)
        if not await run_in_threadpool(store.claim, event):
            run_id = await run_in_threadpool(store.run_of_push, event)
            return _answer(202, "duplicate", reason="push already received", run_id=run_id, **where)
        pending = asyncio.wrap_future(triggers.submit(start_run, event))
        done, _ = await asyncio.wait({pending}, timeout=config.answer_within_seconds)
        if not done:  # still starting: answer now, the thread settles the record
            pending.add_done_callback(lambda f: f.cancelled() or f.exception())  # no "never retrieved" noise
            return _answer(202, "accepted", deployment=config.deployment, **where)
        try:
            run_id = pending.result()
        except Exception as exc:
            await run_in_threadpool(store.release, event)  # not accepted: the sender's redelivery retries
            return _answer(502, "failed", reason=f"could not start the pipeline ({type(exc).__name__})", **where)
        return _answer(202, "triggered", run_id=run_id, deployment=config.deployment, **where)

    @app.post(
        "/webhooks/github",
        status_code=202,
        response_model=Answer,
        responses=_documented(400, 401, 413, 502),
        openapi_extra=PUSH_BODY,
    )
    async def github(
        request: Request,
        x_hub_signature_256: Annotated[str | None, Header(description="sha256=<HMAC of the body>")] = None,
        x_github_event: Annotated[str | None, Header(description="push")] = None,
        x_github_delivery: Annotated[str | None, Header(description="the delivery's id")] = None,
    ) -> JSONResponse:
        """A GitHub push webhook (content type application/json)."""
        return await handle(request, "github")

    @app.post(
        "/webhooks/gitlab",
        status_code=202,
        response_model=Answer,
        responses=_documented(400, 401, 413, 502),
        openapi_extra=PUSH_BODY,
    )
    async def gitlab(
        request: Request,
        x_gitlab_token: Annotated[str | None, Header(description="the shared secret")] = None,
        x_gitlab_event: Annotated[str | None, Header(description="Push Hook")] = None,
        x_gitlab_event_uuid: Annotated[str | None, Header(description="the delivery's id, when sent")] = None,
    ) -> JSONResponse:
        """A GitLab push webhook."""
        return await handle(request, "gitlab")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
