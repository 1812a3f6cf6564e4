"""The receiver: FastAPI routes for GitHub and GitLab push webhooks, and a health probe.

Order of checks: size (413) → shared secret (401) → event kind (202 ignored) → JSON (400) →
repository and branch (202 ignored) → redelivery (202 duplicate) → trigger (202 triggered).
A trigger that fails releases the delivery and answers 502, so a redelivery can succeed later.
The trigger runs on its own thread: if it has not returned within `answer_within_seconds`, the
answer is 202 "accepted" at once and the thread finishes the job (records the run id, or
releases the delivery on failure), so the sender never waits on a slow orchestrator.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
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


def create_app(config: WebhookConfig, secret: str, store: DeliveryStore, trigger: Trigger) -> FastAPI:
    triggers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-trigger")

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        triggers.shutdown(wait=True)  # a run being started is started (or released) before exit

    app = FastAPI(
        title="tinymlops webhook receiver", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )

    def start_run(event: PushEvent) -> str:
        """Trigger, then settle the delivery's record either way (on the trigger's thread)."""
        try:
            run_id = trigger(event)
        except Exception as exc:  # the orchestrator is down or refused: let a redelivery retry
            log.error("trigger failed for %s delivery %s: %s", event.provider, event.delivery_id, type(exc).__name__)
            if event.delivery_id is not None:
                store.release(event)
            raise
        if event.delivery_id is not None:
            store.record_run(event, run_id)
        log.info("push %s@%s → run %s", event.repository, event.sha[:12], run_id)
        return run_id

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
            payload = json.loads(body)
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
        if event.delivery_id is not None and not await run_in_threadpool(store.claim, event):
            run_id = await run_in_threadpool(store.run_of, event.provider, event.delivery_id)
            return _answer(202, "duplicate", reason="delivery already received", run_id=run_id, **where)
        pending = asyncio.wrap_future(triggers.submit(start_run, event))
        done, _ = await asyncio.wait({pending}, timeout=config.answer_within_seconds)
        if not done:  # still starting: answer now, the thread settles the record
            pending.add_done_callback(lambda f: f.cancelled() or f.exception())  # no "never retrieved" noise
            return _answer(202, "accepted", deployment=config.deployment, **where)
        try:
            run_id = pending.result()
        except Exception as exc:
            return _answer(502, "failed", reason=f"could not start the pipeline ({type(exc).__name__})", **where)
        return _answer(202, "triggered", run_id=run_id, deployment=config.deployment, **where)

    @app.post("/webhooks/github")
    async def github(request: Request) -> JSONResponse:
        return await handle(request, "github")

    @app.post("/webhooks/gitlab")
    async def gitlab(request: Request) -> JSONResponse:
        return await handle(request, "gitlab")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
