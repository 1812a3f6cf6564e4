"""The device API: enrol, poll, download, report, telemetry. Every device call carries the
device's own credential; it is checked before the body is read."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from tinymlops.errors import Conflict, NotFound
from tinymlops.fleet.api.body import json_body, read_limited
from tinymlops.fleet.api.deps import SECURED, Authorization, service
from tinymlops.fleet.api.deps import json_body as body_doc
from tinymlops.fleet.api.device_params import PollQuery, credential_of, documented, path_names, poll_query
from tinymlops.fleet.api.errors import responses
from tinymlops.fleet.api.wire import (
    Ack,
    Assignment,
    BatchAck,
    Challenge,
    EnrolRequest,
    EnrolResponse,
    EvidenceAck,
    InstallReport,
    InstallReports,
)
from tinymlops.fleet.telemetry import TelemetryAggregate

router = APIRouter(tags=["device"])
COSE = "application/cose"
_ACCEPTED = Ack(accepted=True).model_dump_json()


@router.post(
    "/v1/enrol",
    status_code=201,
    response_model=EnrolResponse,
    responses=responses(401, 403, 409, 413, 422),
    openapi_extra={**SECURED, **body_doc(EnrolRequest)},
)
async def enrol(request: Request, authorization: Authorization = None) -> EnrolResponse:
    """Trade the provisioning token (as the bearer credential) for a per-device credential,
    returned once and stored hashed."""
    fleet = service(request)
    grant = await run_in_threadpool(fleet.identity.check_token, authorization)
    body = await json_body(request, EnrolRequest, fleet.settings.max_json_bytes)
    credential = await run_in_threadpool(
        fleet.identity.enrol, grant, body.device_id, body.device_class, body.public_key, body.ueid
    )
    return EnrolResponse(device_id=body.device_id, credential=credential)


@router.get(
    "/v1/devices/{device_id}/assignment",
    responses={
        200: {
            "model": Assignment,
            "description": "the release to install",
            "headers": {"ETag": {"schema": {"type": "string"}}},
        },
        204: {"description": "nothing to install"},
        304: {"description": "the same assignment as the If-None-Match ETag"},
        **responses(401, 403, 409, 422),
    },
    openapi_extra={**SECURED, **documented("device_id", query=PollQuery)},
)
async def poll(request: Request) -> Response:
    """The hot path: one primary-key query; writes only when the device's state changed.

    Runs on the event loop: a point query costs less than the hop to a worker thread."""
    (device_id,), query = path_names(request, "device_id"), poll_query(request)
    sequence, slot, device_class = query.sequence, query.slot, query.device_class
    fleet = service(request)
    row = fleet.device(device_id, credential_of(request))
    if device_class is not None and device_class != row.device_class:
        raise Conflict(f"device {device_id} enrolled as class {row.device_class}, not {device_class}")
    if (row.current_sequence, row.slot_state) != (sequence, slot):
        await request.app.state.state_writes.submit((device_id, sequence, slot))  # stored when this answers
    if row.release_id is None or row.sequence <= sequence:
        return Response(status_code=204)
    etag = f'"{row.release_id}:{row.sequence}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    nonce = None
    if fleet.identity.on:
        nonce = await run_in_threadpool(
            lambda: fleet.identity.rollout_nonce(fleet.identity.ids.assignment_rollout(device_id))
        )
    body = Assignment(
        release_id=row.release_id,
        sequence=row.sequence,
        sha256=row.sha256,
        size=row.size,
        url=f"/v1/devices/{device_id}/bundles/{row.release_id}",
        nonce=nonce,
    )
    return Response(body.model_dump_json(), media_type="application/json", headers={"ETag": etag})


@router.get(
    "/v1/devices/{device_id}/bundles/{release_id}",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        206: {
            "description": "the rest, from `Range: bytes=N-`",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        **responses(401, 403, 404, 422),
    },
    openapi_extra={**SECURED, **documented("device_id", "release_id")},
)
def download(request: Request) -> FileResponse:
    """The bundle for this device's class, of the release assigned to it (any other: 404);
    `Range: bytes=N-` resumes an interrupted download."""
    device_id, release_id = path_names(request, "device_id", "release_id")
    fleet = service(request)
    row = fleet.device(device_id, credential_of(request))
    if row.release_id != release_id:
        raise NotFound(f"release {release_id} is not assigned to device {device_id}")
    bundle = fleet.bundle_file(release_id, row.device_class)
    b64 = base64.b64encode(bytes.fromhex(bundle.sha256)).decode()
    return FileResponse(
        bundle.path,
        media_type="application/octet-stream",
        headers={"Repr-Digest": f"sha-256=:{b64}:", "X-Bundle-SHA256": bundle.sha256},
    )


@router.post(
    "/v1/devices/{device_id}/reports",
    response_model=Ack,
    responses=responses(401, 403, 404, 413, 422),
    openapi_extra={**SECURED, **body_doc(InstallReport), **documented("device_id")},
)
async def report(request: Request) -> Ack:
    """Install progress and outcome. Retrying with the same idempotency key is safe."""
    (device_id,) = path_names(request, "device_id")
    fleet = service(request)
    fleet.device(device_id, credential_of(request))
    body = await json_body(request, InstallReport, fleet.settings.max_json_bytes)
    items = [(body.idempotency_key, body.release_id, body.stage, body.reason, body.evidence)]
    attested = await run_in_threadpool(fleet.identity.attest_reports, device_id, items)
    new = await request.app.state.report_writes.submit((device_id, attested))
    return Ack(accepted=True, duplicate=not new[0])


@router.post(
    "/v1/devices/{device_id}/reports/batch",
    response_model=BatchAck,
    responses=responses(401, 403, 404, 413, 422),
    openapi_extra={**SECURED, **body_doc(InstallReports), **documented("device_id")},
)
async def reports(request: Request) -> BatchAck:
    """Several install reports at once, in order (e.g. downloaded, verified, installed, confirmed):
    one round trip and one transaction. Each keeps its own idempotency key."""
    (device_id,) = path_names(request, "device_id")
    fleet = service(request)
    fleet.device(device_id, credential_of(request))
    body = await json_body(request, InstallReports, fleet.settings.max_json_bytes)
    items = [(r.idempotency_key, r.release_id, r.stage, r.reason, r.evidence) for r in body.reports]
    attested = await run_in_threadpool(fleet.identity.attest_reports, device_id, items)
    new = await request.app.state.report_writes.submit((device_id, attested))
    return BatchAck(accepted=True, duplicate=[not n for n in new])


@router.post(
    "/v1/devices/{device_id}/telemetry",
    response_model=Ack,
    status_code=202,
    responses=responses(401, 403, 413, 422),
    openapi_extra={**SECURED, **body_doc(TelemetryAggregate), **documented("device_id")},
)
async def telemetry(request: Request) -> Response:
    """Aggregates only (fixed-bin histograms and counters): no raw inputs ever leave a device.

    Runs on the event loop like poll (the credential check is a point query); the window joins
    a group commit with the others arriving meanwhile, and is stored when this answers."""
    (device_id,) = path_names(request, "device_id")
    fleet = service(request)
    fleet.device(device_id, credential_of(request))
    signed = request.headers.get("content-type", "").split(";")[0].strip() == COSE
    if signed:  # a window signed by the device key (tinymlops.bundle.evidence.sign_payload)
        raw = await read_limited(request, fleet.settings.max_json_bytes)
        body = await run_in_threadpool(fleet.identity.signed_window, device_id, raw)
    else:
        body = await json_body(request, TelemetryAggregate, fleet.settings.max_json_bytes)
    now = fleet.check_window(body)
    await request.app.state.telemetry_writes.submit((device_id, body, now, signed))
    return Response(_ACCEPTED, status_code=202, media_type="application/json")  # Ack, serialised once


@router.get(
    "/v1/devices/{device_id}/challenge",
    response_model=Challenge,
    responses=responses(401, 403, 422),
    openapi_extra={**SECURED, **documented("device_id")},
)
def challenge(request: Request) -> Challenge:
    """A one-time nonce for the next usage evidence report."""
    (device_id,) = path_names(request, "device_id")
    fleet = service(request)
    fleet.device(device_id, credential_of(request))
    return Challenge(nonce=fleet.identity.challenge(device_id))


@router.post(
    "/v1/devices/{device_id}/evidence",
    response_model=EvidenceAck,
    responses=responses(401, 403, 404, 413, 422),
    openapi_extra={
        **SECURED,
        **documented("device_id"),
        "requestBody": {"content": {COSE: {"schema": {"type": "string", "format": "binary"}}}},
    },
)
async def evidence(request: Request) -> EvidenceAck:
    """Evidence (COSE_Sign1, device key) over the last challenge: the inference counter is
    reconciled; a counter below the highest seen is refused and flagged."""
    (device_id,) = path_names(request, "device_id")
    fleet = service(request)
    fleet.device(device_id, credential_of(request))
    raw = await read_limited(request, 2048)
    got = await run_in_threadpool(fleet.identity.usage_evidence, device_id, raw)
    return EvidenceAck(**got)
