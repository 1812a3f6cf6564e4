"""The app factory: settings in, FastAPI app out (the service, the background rollout ticker, the
telemetry group commit, the routers, the error mapping, an OpenAPI description with its security
scheme, and Swagger UI served from a package, so /docs works offline)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from tinymlops.fleet.api import errors
from tinymlops.fleet.api.routers import admin, dashboard, devices, monitoring, releases, rollouts
from tinymlops.fleet.api.wire import (
    CreateRollout,
    EnrolRequest,
    InstallReport,
    InstallReports,
    TokenCreate,
    VerbRequest,
)
from tinymlops.fleet.config import FleetSettings
from tinymlops.fleet.group_commit import GroupCommit
from tinymlops.fleet.monitoring import Baseline
from tinymlops.fleet.service import Clock, FleetService, RolloutService, utcnow
from tinymlops.fleet.store import Store
from tinymlops.fleet.telemetry import TelemetryAggregate

log = logging.getLogger("tinymlops.fleet")
BODIES = (
    EnrolRequest,
    InstallReport,
    InstallReports,
    TelemetryAggregate,
    CreateRollout,
    VerbRequest,
    Baseline,
    TokenCreate,
)  # read by routes themselves
SWAGGER = "fastapi_offline"  # a package that ships Swagger UI's assets


def create_app(settings: FleetSettings, *, clock: Clock = utcnow, store: Store | None = None) -> FastAPI:
    if settings.clock_file is not None:
        from tinymlops.fleet.clock import SharedClock

        clock = SharedClock(settings.clock_file)
    store = store or Store.open(settings.db_url)
    service = FleetService(store, settings, clock)
    (settings.bundle_dir / ".incoming").mkdir(parents=True, exist_ok=True)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        every = settings.tick_seconds
        ticker = asyncio.create_task(_tick_forever(service.rollouts, every)) if every else None
        watch = settings.monitoring
        monitor = asyncio.create_task(_monitor_forever(service, watch.check_seconds)) if watch.enabled else None
        try:
            yield
        finally:
            for task in (ticker, monitor):
                if task:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            store.close()

    app = FastAPI(
        title="tinymlops fleet server",
        version="1",
        summary="Staged, ML-gated rollouts of signed TinyML model bundles.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.store, app.state.service, app.state.settings = store, service, settings
    app.state.telemetry_writes = GroupCommit(service.store_windows)
    app.state.state_writes = GroupCommit(service.note_states)  # a fleet's first polls all carry news
    app.state.report_writes = GroupCommit(service.report_logs)  # → per log, which reports were new
    errors.install(app)
    for router in (devices.router, releases.router, rollouts.router, admin.router, monitoring.router):
        app.include_router(router)
    dashboard.mount(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]  # FastAPI's documented override
    _docs(app)
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's description, plus the bearer security scheme and the bodies routes read themselves."""
    if app.openapi_schema:
        return app.openapi_schema
    spec = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in BODIES:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    spec["components"]["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "admin token, device credential, or (to enrol) the provisioning token",
        }
    }
    app.openapi_schema = spec
    return spec


def _docs(app: FastAPI) -> None:
    assets = files(SWAGGER) / "static"
    app.mount("/docs/static", StaticFiles(directory=str(assets)), name="swagger-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} · API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon.png",
        )


async def _tick_forever(service: RolloutService, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await run_in_threadpool(service.tick_running)
        except Exception:  # a bad tick must not kill the ticker; the next one retries
            log.exception("rollout tick failed")


async def _monitor_forever(service: FleetService, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await run_in_threadpool(service.monitor.check)
        except Exception:  # a bad check must not stop monitoring; the next one retries
            log.exception("monitoring check failed")
