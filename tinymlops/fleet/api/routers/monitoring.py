"""Production monitoring: release baselines in, drift alarms out (list, acknowledge, resolve), and
a check on demand (the background ticker checks every monitoring.check_seconds)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from tinymlops.fleet.api.body import json_body
from tinymlops.fleet.api.deps import SECURED, Admin, service
from tinymlops.fleet.api.deps import json_body as body_doc
from tinymlops.fleet.api.errors import responses
from tinymlops.fleet.api.wire import NAME
from tinymlops.fleet.monitoring import AlarmStatus, Assessment, Baseline, DriftAlarm

router = APIRouter(tags=["monitoring"])


class StoredAlarm(DriftAlarm):
    emitted_at: str | None = None  # when Prefect accepted its event
    event_error: str | None = None


@router.put(
    "/v1/admin/baselines",
    status_code=204,
    responses=responses(401, 403, 413, 422),
    openapi_extra={**SECURED, **body_doc(Baseline)},
)
async def put_baseline(request: Request, who: Admin) -> None:
    """A release's baseline for one device class and model (replaces an earlier one)."""
    fleet = service(request)
    baseline = await json_body(request, Baseline, fleet.settings.max_json_bytes)
    await run_in_threadpool(fleet.monitor.put_baseline, baseline, who)


@router.get("/v1/admin/baselines", response_model=list[Baseline], responses=responses(401, 403), openapi_extra=SECURED)
def baselines(request: Request, who: Admin) -> list[Baseline]:
    return service(request).monitor.baselines()


@router.get(
    "/v1/admin/alarms", response_model=list[StoredAlarm], responses=responses(401, 403, 422), openapi_extra=SECURED
)
def alarms(
    request: Request,
    who: Admin,
    status: AlarmStatus | None = None,
    device_class: Annotated[str | None, Query(alias="class", pattern=NAME)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[StoredAlarm]:
    """Drift alarms, newest first."""
    rows = service(request).monitor.alarms(status=status, device_class=device_class, limit=limit)
    return [
        StoredAlarm.model_validate({**r, "emitted_at": r["emitted_at"] and r["emitted_at"].isoformat()}) for r in rows
    ]


@router.post(
    "/v1/admin/alarms/{alarm_id}/{action}",
    response_model=StoredAlarm,
    responses=responses(401, 403, 404, 422),
    openapi_extra=SECURED,
)
def alarm_action(
    request: Request,
    alarm_id: Annotated[str, PathParam(pattern=NAME)],
    action: Literal["acknowledge", "resolve"],
    who: Admin,
) -> StoredAlarm:
    status = {"acknowledge": "acknowledged", "resolve": "resolved"}[action]
    row = service(request).monitor.set_alarm_status(alarm_id, status, who)
    return StoredAlarm.model_validate({**row, "emitted_at": row["emitted_at"] and row["emitted_at"].isoformat()})


@router.post(
    "/v1/admin/monitoring/check", response_model=list[Assessment], responses=responses(401, 403), openapi_extra=SECURED
)
def check(request: Request, who: Admin) -> list[Assessment]:
    """Score every live class and model against its baseline now; raises and sends new alarms."""
    return service(request).monitor.check()
