"""Rollouts: create (one open rollout per device class, unless it supersedes the other), drive
(start, pause, resume, abort, rollback), step, status, list."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from tinymlops.fleet.api.body import json_body, read_limited
from tinymlops.fleet.api.body import parse as parse_body
from tinymlops.fleet.api.deps import SECURED, Admin, service
from tinymlops.fleet.api.deps import json_body as body_doc
from tinymlops.fleet.api.errors import responses
from tinymlops.fleet.api.wire import NAME, CreateRollout, RolloutInfo, RolloutPage, RolloutStatus, VerbRequest
from tinymlops.fleet.engine import RolloutReport, RolloutState, Status, Verb
from tinymlops.fleet.timeline import RolloutTimeline, timeline

router = APIRouter(tags=["rollouts"])
RolloutId = Annotated[str, PathParam(pattern=NAME)]


@router.get("/v1/admin/rollouts", response_model=RolloutPage, responses=responses(401, 403, 422), openapi_extra=SECURED)
def list_rollouts(
    request: Request,
    who: Admin,
    status: Status | None = None,
    release_id: Annotated[str | None, Query(pattern=NAME)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> RolloutPage:
    """Rollouts by creation time, filtered by status and release."""
    total, rows = service(request).list_rollouts(status=status, release_id=release_id, limit=limit, offset=offset)
    return RolloutPage(total=total, limit=limit, offset=offset, items=[RolloutInfo(**r) for r in rows])


@router.post(
    "/v1/admin/rollouts",
    status_code=201,
    response_model=RolloutState,
    responses=responses(401, 403, 404, 409, 413, 422),
    openapi_extra={**SECURED, **body_doc(CreateRollout)},
)
async def create_rollout(request: Request, who: Admin) -> RolloutState:
    """A rollout of a stored release. Refused (409) while another rollout of the same device
    classes is open, unless `supersedes` names it: that one is then aborted."""
    fleet = service(request)
    body = await json_body(request, CreateRollout, fleet.settings.max_json_bytes)
    rollout_id = body.rollout_id or f"{body.release_id}-{secrets.token_hex(3)}"
    policy = body.policy or fleet.settings.policy
    state = await run_in_threadpool(
        fleet.rollouts.create, rollout_id, body.release_id, body.rollback_release_id, policy, who, body.supersedes
    )
    if body.links:
        await run_in_threadpool(fleet.store.put_links, rollout_id, body.links)
    return state


@router.post(
    "/v1/admin/rollouts/{rollout_id}/step",
    response_model=RolloutReport,
    responses=responses(401, 403, 404, 409, 422),
    openapi_extra=SECURED,
)
def tick(request: Request, rollout_id: RolloutId, who: Admin) -> RolloutReport:
    """Judge the current group now (the background ticker does the same every tick_seconds)."""
    return service(request).rollouts.tick(rollout_id)


@router.post(
    "/v1/admin/rollouts/{rollout_id}/{verb}",
    response_model=RolloutReport,
    responses=responses(401, 403, 404, 409, 413, 422),
    openapi_extra={**SECURED, **body_doc(VerbRequest, required=False)},
)
async def drive(request: Request, rollout_id: RolloutId, verb: Verb, who: Admin) -> RolloutReport:
    """start | pause | resume | abort | rollback, with an optional reason for the audit log."""
    fleet = service(request)
    raw = await read_limited(request, fleet.settings.max_json_bytes)
    reason = parse_body(VerbRequest, raw).reason if raw.strip() else ""
    result = await run_in_threadpool(fleet.rollouts.verb, rollout_id, verb, who, reason)
    return result.report


@router.get(
    "/v1/admin/rollouts/{rollout_id}",
    response_model=RolloutStatus,
    responses=responses(401, 403, 404, 422),
    openapi_extra=SECURED,
)
def rollout_status(request: Request, rollout_id: RolloutId, who: Admin) -> RolloutStatus:
    state, report = service(request).rollouts.status(rollout_id)
    return RolloutStatus(state=state, report=report)


@router.get(
    "/v1/admin/rollouts/{rollout_id}/timeline",
    response_model=RolloutTimeline,
    responses=responses(401, 403, 404, 422),
    openapi_extra=SECURED,
)
def rollout_timeline(request: Request, rollout_id: RolloutId, who: Admin) -> RolloutTimeline:
    """Per group, its devices' states over time, and every decision with its reason (the report's plot)."""
    fleet = service(request)
    state, _ = fleet.rollouts.status(rollout_id)
    return timeline(state, fleet.store.group_members(rollout_id), fleet.clock())
