"""The fleet server: a FastAPI app over the fleet store.

Device API (per-device credential): enrol, poll (the hot path: one indexed query, 204/304 when
nothing changed), download with HTTP Range and the digest in a header, report install progress
with an idempotency key, send telemetry aggregates.
Admin API (named admin tokens, never device credentials): upload a release bundle per class
(verified with tinymlops.bundle before it is kept), create and drive rollouts, status, audit log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import secrets
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from starlette.concurrency import run_in_threadpool

from tinymlops.errors import TinyMLOpsError
from tinymlops.fleet import FleetError, auth
from tinymlops.fleet.engine import RolloutError, RolloutReport, RolloutState, Verb
from tinymlops.fleet.group_commit import GroupCommit
from tinymlops.fleet.policy import RolloutPolicy
from tinymlops.fleet.service import Clock, RolloutService, utcnow
from tinymlops.fleet.store import NotFound, Store, StoreConflict, utc
from tinymlops.fleet.telemetry import TelemetryAggregate

log = logging.getLogger("tinymlops.fleet")
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # ids that are safe as path segments and file names
SLOT_STATES = ("unknown", "confirmed", "trial", "reverted", "empty")


class FleetSettings(BaseModel):
    """Where the server keeps its state and whom it trusts. Secrets are SecretStr: never printed."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    db_url: str
    bundle_dir: Path
    admin_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    provisioning_token: SecretStr | None = None
    trust_anchor: Path | None = None  # the root public key bundles must chain to
    revocations: Path | None = None  # root-signed revocation list; re-read on every upload
    vendor: str = "tinymlops"
    max_bundle_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    tick_seconds: float | None = Field(5.0, gt=0, description="background rollout ticks; None: only on request")
    policy: RolloutPolicy = RolloutPolicy()
    # Simulations only (never read from the environment): the server's "now" comes from this
    # tinymlops.fleet.clock.SharedClock file, which the simulation moves. None: the wall clock.
    clock_file: Path | None = None

    @classmethod
    def from_env(cls, home: Path, **overrides: Any) -> FleetSettings:
        """TINYMLOPS_FLEET_DB_URL, TINYMLOPS_FLEET_ADMIN_TOKENS ("name:token,…"),
        TINYMLOPS_FLEET_PROVISIONING_TOKEN, TINYMLOPS_FLEET_TRUST (root public key file),
        TINYMLOPS_FLEET_REVOCATIONS (root-signed revocation list file), TINYMLOPS_FLEET_VENDOR."""
        tokens: dict[str, SecretStr] = {}
        for item in filter(None, os.environ.get("TINYMLOPS_FLEET_ADMIN_TOKENS", "").split(",")):
            name, sep, token = item.partition(":")
            if not sep or not name or not token:
                raise FleetError("TINYMLOPS_FLEET_ADMIN_TOKENS: expected 'name:token[,name:token…]'")
            tokens[name.strip()] = SecretStr(token.strip())
        provisioning = os.environ.get("TINYMLOPS_FLEET_PROVISIONING_TOKEN")
        trust = os.environ.get("TINYMLOPS_FLEET_TRUST")
        revocations = os.environ.get("TINYMLOPS_FLEET_REVOCATIONS")
        values: dict[str, Any] = dict(
            db_url=os.environ.get("TINYMLOPS_FLEET_DB_URL") or f"sqlite:///{home / 'fleet' / 'fleet.db'}",
            bundle_dir=home / "fleet" / "bundles",
            admin_tokens=tokens,
            provisioning_token=SecretStr(provisioning) if provisioning else None,
            trust_anchor=Path(trust) if trust else None,
            revocations=Path(revocations) if revocations else None,
        )
        if vendor := os.environ.get("TINYMLOPS_FLEET_VENDOR"):
            values["vendor"] = vendor
        return cls(**{**values, **overrides})


# -- wire models ----------------------------------------------------------------------------------
class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnrolRequest(Wire):
    device_id: str = Field(pattern=NAME)
    device_class: str = Field(pattern=NAME)


class EnrolResponse(Wire):
    device_id: str
    credential: str  # shown once; the server keeps only its digest


class Assignment(Wire):
    release_id: str
    sequence: int
    sha256: str
    size: int
    url: str


class InstallReport(Wire):
    idempotency_key: str = Field(pattern=NAME)
    release_id: str = Field(pattern=NAME)
    stage: Literal["downloaded", "verified", "installed", "confirmed", "reverted", "failed"]
    reason: str | None = Field(None, max_length=255)

    @model_validator(mode="after")
    def _failures_say_why(self) -> InstallReport:
        if self.stage in ("failed", "reverted") and not self.reason:
            raise ValueError(f"stage {self.stage} needs a reason")
        return self


class Ack(Wire):
    accepted: bool
    duplicate: bool = False


class BundleInfo(Wire):
    release_id: str
    device_class: str
    sequence: int
    sha256: str
    size: int
    model_name: str
    model_version: str


class CreateRollout(Wire):
    rollout_id: str | None = Field(None, pattern=NAME)
    release_id: str = Field(pattern=NAME)
    rollback_release_id: str | None = Field(None, pattern=NAME)
    policy: RolloutPolicy | None = None


class VerbRequest(Wire):
    reason: str = Field("", max_length=255)


class RolloutStatus(Wire):
    state: RolloutState
    report: RolloutReport


class AuditEntry(Wire):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: str


# -- the app --------------------------------------------------------------------------------------
def _admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    admins: auth.AdminTokens = request.app.state.admins
    if not admins:
        raise HTTPException(403, "admin API disabled: no admin tokens configured")
    return admins.who(authorization)


Admin = Annotated[str, Depends(_admin)]  # the admin's name, for the audit log
DeviceId = Annotated[str, PathParam(pattern=NAME)]


def create_app(settings: FleetSettings, *, clock: Clock = utcnow, store: Store | None = None) -> FastAPI:
    if settings.clock_file is not None:
        from tinymlops.fleet.clock import SharedClock

        clock = SharedClock(settings.clock_file)
    store = store or Store.open(settings.db_url)
    service = RolloutService(store, clock)
    admins = auth.AdminTokens({n: t.get_secret_value() for n, t in settings.admin_tokens.items()})
    provisioning_digest = (
        auth.digest(settings.provisioning_token.get_secret_value()) if settings.provisioning_token else None
    )
    telemetry_writes = GroupCommit(store.add_telemetry_many)
    incoming = settings.bundle_dir / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ticker = asyncio.create_task(_tick_forever(service, settings.tick_seconds)) if settings.tick_seconds else None
        try:
            yield
        finally:
            if ticker:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            store.close()

    app = FastAPI(
        title="tinymlops fleet server",
        version="1",
        summary="Staged, ML-gated rollouts of signed TinyML model bundles.",
        lifespan=lifespan,
    )
    app.state.store, app.state.service, app.state.settings, app.state.admins = store, service, settings, admins

    @app.exception_handler(TinyMLOpsError)
    async def _domain_errors(_: Request, exc: TinyMLOpsError) -> JSONResponse:
        code = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, StoreConflict | RolloutError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=code)

    def device_row(device_id: str, authorization: str | None):  # type: ignore[no-untyped-def]
        token = auth.bearer(authorization)
        row = store.poll_row(device_id)
        # Unknown device and someone else's credential look the same from outside.
        if row is None or not auth.matches(token, row.credential_hash):
            raise HTTPException(403, f"credential not valid for device {device_id}")
        return row

    # -- device API ------------------------------------------------------------------------------
    @app.post("/v1/enrol", status_code=201, response_model=EnrolResponse, tags=["device"])
    def enrol(body: EnrolRequest, authorization: Annotated[str | None, Header()] = None) -> EnrolResponse:
        """Trade the provisioning token for a per-device credential (returned once, stored hashed)."""
        token = auth.bearer(authorization)
        if provisioning_digest is None or not auth.matches(token, provisioning_digest):
            raise HTTPException(403, "not a valid provisioning token")
        credential = auth.new_credential()
        store.enrol(body.device_id, body.device_class, auth.digest(credential), clock())
        return EnrolResponse(device_id=body.device_id, credential=credential)

    @app.get(
        "/v1/devices/{device_id}/assignment",
        tags=["device"],
        responses={200: {"model": Assignment}, 204: {"description": "nothing to install"}, 304: {}},
    )
    async def poll(
        device_id: DeviceId,
        sequence: Annotated[int, Query(ge=0, description="sequence of the running model")] = 0,
        slot: Annotated[str, Query(description="slot state: " + ", ".join(SLOT_STATES))] = "unknown",
        device_class: Annotated[str | None, Query(alias="class", pattern=NAME)] = None,
        authorization: Annotated[str | None, Header()] = None,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        """The hot path: one primary-key query; writes only when the device's state changed.

        Runs on the event loop: a point query costs less than the hop to a worker thread."""
        if slot not in SLOT_STATES:
            raise HTTPException(422, f"slot must be one of {', '.join(SLOT_STATES)}")
        row = device_row(device_id, authorization)
        if device_class is not None and device_class != row.device_class:
            raise HTTPException(409, f"device {device_id} enrolled as class {row.device_class}, not {device_class}")
        if (row.current_sequence, row.slot_state) != (sequence, slot):
            await run_in_threadpool(store.set_device_state, device_id, sequence, slot)  # may queue on the writer
        if row.release_id is None or row.sequence <= sequence:
            return Response(status_code=204)
        etag = f'"{row.release_id}:{row.sequence}"'
        if if_none_match == etag:
            return Response(status_code=304, headers={"ETag": etag})
        body = Assignment(
            release_id=row.release_id,
            sequence=row.sequence,
            sha256=row.sha256,
            size=row.size,
            url=f"/v1/devices/{device_id}/bundles/{row.release_id}",
        )
        return Response(body.model_dump_json(), media_type="application/json", headers={"ETag": etag})

    @app.get("/v1/devices/{device_id}/bundles/{release_id}", tags=["device"], response_class=FileResponse)
    def download(
        device_id: DeviceId,
        release_id: Annotated[str, PathParam(pattern=NAME)],
        authorization: Annotated[str | None, Header()] = None,
    ) -> FileResponse:
        """The bundle for this device's class; `Range: bytes=N-` resumes an interrupted download."""
        row = device_row(device_id, authorization)
        bundle = store.bundle(release_id, row.device_class)
        if bundle is None:
            raise HTTPException(404, f"release {release_id} has no bundle for class {row.device_class}")
        b64 = base64.b64encode(bytes.fromhex(bundle.sha256)).decode()
        return FileResponse(
            settings.bundle_dir / bundle.path,
            media_type="application/octet-stream",
            headers={"Repr-Digest": f"sha-256=:{b64}:", "X-Bundle-SHA256": bundle.sha256},
        )

    @app.post("/v1/devices/{device_id}/reports", response_model=Ack, tags=["device"])
    def report(device_id: DeviceId, body: InstallReport, authorization: Annotated[str | None, Header()] = None) -> Ack:
        """Install progress and outcome. Retrying with the same idempotency key is safe."""
        device_row(device_id, authorization)
        new = store.record_report(device_id, body.idempotency_key, body.release_id, body.stage, body.reason, clock())
        return Ack(accepted=True, duplicate=not new)

    @app.post("/v1/devices/{device_id}/telemetry", response_model=Ack, status_code=202, tags=["device"])
    async def telemetry(
        device_id: DeviceId, body: TelemetryAggregate, authorization: Annotated[str | None, Header()] = None
    ) -> Ack:
        """Aggregates only (fixed-bin histograms and counters): no raw inputs ever leave a device.

        Runs on the event loop like poll (the credential check is a point query); the window joins
        a group commit with the others arriving meanwhile, and is stored when this answers."""
        device_row(device_id, authorization)
        await telemetry_writes.submit((device_id, body, clock()))
        return Ack(accepted=True)

    # -- admin API -------------------------------------------------------------------------------
    @app.put("/v1/admin/releases/{release_id}/bundles/{device_class}", status_code=201, tags=["admin"])
    async def upload(
        request: Request,
        release_id: Annotated[str, PathParam(pattern=NAME)],
        device_class: Annotated[str, PathParam(pattern=NAME)],
        who: Admin,
        content_length: Annotated[int | None, Header()] = None,
    ) -> BundleInfo:
        """One signed bundle of a release for one device class (raw body). Verified against the
        server's trust anchor and the class before anything is stored."""
        if content_length is not None and content_length > settings.max_bundle_bytes:
            raise HTTPException(413, f"bundle is {content_length} bytes, limit {settings.max_bundle_bytes}")
        tmp = incoming / f"{secrets.token_hex(8)}.part"
        try:
            sha, size = await _receive(request, tmp, settings.max_bundle_bytes)
            manifest = await run_in_threadpool(_verify, settings, tmp, device_class, clock())
            target = Path(release_id) / f"{device_class}.bundle"
            await run_in_threadpool(_place, tmp, settings.bundle_dir / target)
            try:
                await run_in_threadpool(
                    lambda: store.add_bundle(
                        release_id,
                        device_class,
                        sequence=manifest.sequence,
                        model_name=manifest.model_name,
                        model_version=manifest.model_version,
                        sha256=sha,
                        size=size,
                        path=str(target),
                        manifest=manifest.model_dump(mode="json", exclude={"selftest"}),
                        actor=who,
                        now=clock(),
                    )
                )
            except BaseException:
                (settings.bundle_dir / target).unlink(missing_ok=True)
                raise
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

    @app.get("/v1/admin/releases", tags=["admin"])
    def list_releases(who: Admin) -> list[dict]:
        return store.releases()

    @app.post("/v1/admin/rollouts", status_code=201, response_model=RolloutState, tags=["admin"])
    def create_rollout(body: CreateRollout, who: Admin) -> RolloutState:
        rollout_id = body.rollout_id or f"{body.release_id}-{secrets.token_hex(3)}"
        return service.create(
            rollout_id, body.release_id, body.rollback_release_id, body.policy or settings.policy, who
        )

    @app.post("/v1/admin/rollouts/{rollout_id}/step", response_model=RolloutReport, tags=["admin"])
    def tick(rollout_id: Annotated[str, PathParam(pattern=NAME)], who: Admin) -> RolloutReport:
        """Judge the current group now (the background ticker does the same every tick_seconds)."""
        return service.tick(rollout_id)

    @app.post("/v1/admin/rollouts/{rollout_id}/{verb}", response_model=RolloutReport, tags=["admin"])
    def drive(
        rollout_id: Annotated[str, PathParam(pattern=NAME)],
        verb: Verb,
        who: Admin,
        body: Annotated[VerbRequest | None, Body()] = None,
    ) -> RolloutReport:
        """start | pause | resume | abort | rollback."""
        return service.verb(rollout_id, verb, who, body.reason if body else "").report

    @app.get("/v1/admin/rollouts/{rollout_id}", response_model=RolloutStatus, tags=["admin"])
    def rollout_status(rollout_id: Annotated[str, PathParam(pattern=NAME)], who: Admin) -> RolloutStatus:
        state, report = service.status(rollout_id)
        return RolloutStatus(state=state, report=report)

    @app.get("/v1/admin/audit", response_model=list[AuditEntry], tags=["admin"])
    def audit_log(
        who: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100, target: str | None = None
    ) -> list[AuditEntry]:
        return [AuditEntry(**{**r, "at": utc(r["at"])}) for r in store.audit_log(limit, target)]

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def _tick_forever(service: RolloutService, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await run_in_threadpool(service.tick_running)
        except Exception:  # a bad tick must not kill the ticker; the next one retries
            log.exception("rollout tick failed")


async def _receive(request: Request, tmp: Path, limit: int) -> tuple[str, int]:
    """Stream the body to `tmp`, stopping at `limit` bytes; → (sha256, size)."""
    digest, size = hashlib.sha256(), 0
    with open(tmp, "wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"bundle exceeds {limit} bytes")
            digest.update(chunk)
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    if size == 0:
        raise HTTPException(400, "empty body: send the bundle bytes")
    return digest.hexdigest(), size


def _verify(settings: FleetSettings, path: Path, device_class: str, now: datetime):  # type: ignore[no-untyped-def]
    """tinymlops.bundle.verify_bundle against the trust anchor and the class; 422 with the reason."""
    try:
        from tinymlops.bundle import BundleError, class_uuid, load_revocations, load_trust, verify_bundle
    except ImportError:
        raise HTTPException(503, "bundle library not present: cannot verify uploads") from None
    if settings.trust_anchor is None:
        raise HTTPException(503, "no trust anchor configured (TINYMLOPS_FLEET_TRUST): cannot verify uploads")
    trust = load_trust(settings.trust_anchor)
    revoked = None
    if settings.revocations is not None:
        try:  # re-read per upload: a newly revoked key is refused without a restart
            revoked = load_revocations(settings.revocations, trust)
        except BundleError as exc:
            raise HTTPException(503, f"revocation list unusable, refusing uploads: {exc}") from None
    target = class_uuid(settings.vendor, device_class)
    result = verify_bundle(path, trust, device_class=target, now=now, revocations=revoked)
    if not result.ok or result.manifest is None:
        reason = getattr(result.reason, "value", result.reason)
        raise HTTPException(422, f"bundle refused: {reason}: {result.detail}")
    return result.manifest


def _place(tmp: Path, target: Path) -> None:
    """Hard-link into place: atomic like a rename, but never replaces a stored bundle."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise StoreConflict(f"release {target.parent.name} already has a bundle for class {target.stem}") from None
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def project_defaults(root: Path) -> dict[str, Any]:
    """What the project at `root` says about its fleet: the rollout policy (configs/rollout.yaml) and
    the vendor that device class ids are derived from (configs/devices.yaml), where present."""
    from tinymlops.device.profiles import load_profiles

    found: dict[str, Any] = {}
    if (Path(root) / "configs" / RolloutPolicy.FILE).is_file():
        found["policy"] = RolloutPolicy.load_from(root)
    if (Path(root) / "configs" / "devices.yaml").is_file() and (profiles := load_profiles(root)):
        found["vendor"] = profiles[0].vendor
    return found


def app_from_env() -> FastAPI:
    """uvicorn factory (`tinymlops.fleet.server:app_from_env`, factory=True) for multi-worker runs:
    settings from the environment, under TINYMLOPS_HOME."""
    from tinymlops.settings import Environment

    env = Environment.from_env(os.environ.get("TINYMLOPS_ROOT", "."))
    tick = os.environ.get("TINYMLOPS_FLEET_TICK_SECONDS")
    overrides = project_defaults(env.root)
    if os.environ.get("TINYMLOPS_FLEET_VENDOR"):  # set explicitly: it wins over configs/devices.yaml
        overrides.pop("vendor", None)
    if tick is not None:
        overrides["tick_seconds"] = float(tick) if float(tick) > 0 else None
    return create_app(FleetSettings.from_env(env.home, **overrides))
