"""The fleet dashboard: server-rendered pages (Jinja2 templates, SVG charts drawn here, ~60 lines of
our own script for live refresh and confirmations), served by the fleet server under /ui, with every
asset local (docs/dashboard.md says why no front-end build).

Login takes an admin token and sets a signed session cookie (tinymlops.fleet.api.session): HttpOnly,
SameSite=Strict, CSRF token on every POST; every verb is audited under the admin's name. The pages
read the same service the JSON API uses; nothing here touches the store directly.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from tinymlops.errors import Forbidden, NotFound, TinyMLOpsError, Unauthenticated
from tinymlops.fleet.api import charts
from tinymlops.fleet.api.body import read_limited
from tinymlops.fleet.api.deps import service
from tinymlops.fleet.api.errors import status_of
from tinymlops.fleet.api.session import COOKIE, LOGIN_COOKIE, Sessions
from tinymlops.fleet.engine import RolloutState
from tinymlops.fleet.monitoring import KINDS
from tinymlops.fleet.service import FleetService
from tinymlops.fleet.telemetry import CONFIDENCE_BINS, LATENCY_EDGES_MS
from tinymlops.fleet.timeline import timeline

PREFIX = "/ui"
router = APIRouter(prefix=PREFIX, include_in_schema=False)
templates = Environment(
    loader=PackageLoader("tinymlops.fleet.api", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
# Nothing from outside: scripts, styles, images, forms and fetches go to this server only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
VERBS_FROM: dict[str, tuple[str, ...]] = {
    "created": ("start", "abort"),
    "running": ("pause", "abort", "rollback"),
    "paused": ("resume", "abort", "rollback"),
    "aborted": ("rollback",),
}
MARK_COLORS = {"advance": "#16a34a", "succeed": "#15803d", "pause": "#d97706", "rollback": "#9333ea"}
LATENCY_LABELS = [f"≤{e:g}" for e in LATENCY_EDGES_MS] + [f">{LATENCY_EDGES_MS[-1]:g}"]
CONFIDENCE_LABELS = [f"{i / CONFIDENCE_BINS:.2f}" for i in range(CONFIDENCE_BINS)]


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(files("tinymlops.fleet.api") / "static")), name="ui-static")


def _sessions(request: Request) -> Sessions:
    cached = getattr(request.app.state, "sessions", None)
    if cached is None:
        tokens = service(request).settings.admin_tokens
        cached = request.app.state.sessions = Sessions({n: t.get_secret_value() for n, t in tokens.items()})
    return cached


class Page:
    """Who is looking (admin name and CSRF token) and how to answer."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.fleet: FleetService = service(request)
        self.admin, self.csrf = _sessions(request).who(request.cookies.get(COOKIE))

    def render(self, name: str, **context: Any) -> HTMLResponse:
        template = templates.get_template(name)
        values = {"admin": self.admin, "csrf": self.csrf, "prefix": PREFIX, "now": self.fleet.clock(), **context}
        if self.request.headers.get("x-fragment") == "main" and "main" in template.blocks:
            html = "".join(template.blocks["main"](template.new_context(values)))  # live refresh: the page's body only
        else:
            html = template.render(values)
        response = HTMLResponse(html)
        _secure(response)
        return response

    async def form(self) -> dict[str, str]:
        """The POSTed form, after its CSRF token checked out."""
        raw = await read_limited(self.request, 16 * 1024)
        fields = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}
        Sessions.check_csrf(self.csrf, fields.get("csrf") or self.request.headers.get("x-csrf-token"))
        return fields


def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def _to_login(request: Request) -> Response:
    return RedirectResponse(f"{PREFIX}/login?next={quote(request.url.path)}", status_code=303)


async def _page(request: Request, handler: Any, *args: Any) -> Response:
    """Run a page handler; not logged in → the login page; a domain error → a page saying so."""
    try:
        page = Page(request)
    except Unauthenticated:
        return _to_login(request)
    try:
        return await handler(page, *args)
    except TinyMLOpsError as exc:
        response = page.render("error.html", message=str(exc), title="error")
        response.status_code = status_of(exc)
        return response


# -- login -----------------------------------------------------------------------------------------
@router.get("")
@router.get("/")
def home() -> Response:
    return RedirectResponse(f"{PREFIX}/rollouts", status_code=303)


@router.get("/login")
def login_form(request: Request, next: str = "", error: str = "") -> Response:
    token = secrets.token_urlsafe(24)
    html = templates.get_template("login.html").render(prefix=PREFIX, csrf=token, next=next, error=error)
    response = _secure(HTMLResponse(html))
    response.set_cookie(
        LOGIN_COOKIE, token, httponly=True, samesite="strict", path=f"{PREFIX}/login", secure=_https(request)
    )
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    fleet = service(request)
    raw = await read_limited(request, 16 * 1024)
    fields = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
    try:
        Sessions.check_csrf(request.cookies.get(LOGIN_COOKIE) or "", fields.get("csrf"))
        who = fleet.admin(f"Bearer {fields.get('token', '')}")
    except (Forbidden, Unauthenticated) as exc:
        again = f"{PREFIX}/login?error={quote(str(exc))}&next={quote(fields.get('next', ''))}"
        return RedirectResponse(again, status_code=303)
    cookie, _csrf = _sessions(request).issue(who, fleet.settings.session_hours)
    await run_in_threadpool(fleet.store.audit_entry, who, "login", "dashboard", "admin token", fleet.clock())
    target = fields.get("next", "")
    response = RedirectResponse(target if target.startswith(f"{PREFIX}/") else f"{PREFIX}/rollouts", status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(fleet.settings.session_hours * 3600),
        httponly=True,
        samesite="strict",
        path=PREFIX,
        secure=_https(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path=f"{PREFIX}/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    async def handler(page: Page) -> Response:
        await page.form()
        page.fleet.store.audit_entry(page.admin, "logout", "dashboard", "", page.fleet.clock())
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    return await _page(request, handler)


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


# -- rollouts --------------------------------------------------------------------------------------
@router.get("/rollouts")
async def rollouts_page(request: Request, status: str = "") -> Response:
    async def handler(page: Page) -> Response:
        total, rows = page.fleet.list_rollouts(status=status or None, release_id=None, limit=200, offset=0)
        rows = sorted(rows, key=lambda r: r["created_at"], reverse=True)
        return page.render("rollouts.html", title="rollouts", rows=rows, total=total, status=status, live=True)

    return await _page(request, handler)


@router.get("/rollouts/{rollout_id}")
async def rollout_page(request: Request, rollout_id: str) -> Response:
    async def handler(page: Page) -> Response:
        state, observations, report = await run_in_threadpool(page.fleet.rollouts.live, rollout_id)
        members = await run_in_threadpool(page.fleet.store.group_members, rollout_id)
        links = await run_in_threadpool(page.fleet.store.links, rollout_id)
        health = report.health
        gates = health.gates if health else []
        canary, control = observations.canary, observations.control
        return page.render(
            "rollout.html",
            title=f"rollout {rollout_id}",
            state=state,
            report=report,
            health=health,
            gates=gates,
            verbs=VERBS_FROM.get(state.status, ()),
            links=links,
            counts=observations.counts,
            progress=_progress_chart(state, members, page.fleet.clock()),
            versus=charts.versus(
                [(g.gate, g.canary, g.control, g.limit, g.passed, g.canary_devices, g.control_devices) for g in gates],
                "health gates: canary vs control (red tick: the limit)",
            )
            if gates
            else None,
            latency=charts.bars(
                LATENCY_LABELS,
                [
                    ("canary", canary.latency_hist, charts.COLORS["canary"]),
                    ("control", control.latency_hist, charts.COLORS["control"]),
                ],
                f"latency (ms), canary {canary.devices} devices vs control {control.devices}",
            ),
            confidence=charts.bars(
                CONFIDENCE_LABELS,
                [
                    ("canary", canary.confidence_hist, charts.COLORS["canary"]),
                    ("control", control.confidence_hist, charts.COLORS["control"]),
                ],
                "top-1 confidence, canary vs control",
            ),
            live=not state.final,
        )

    return await _page(request, handler)


@router.post("/rollouts/{rollout_id}/{verb}")
async def rollout_verb(request: Request, rollout_id: str, verb: str) -> Response:
    async def handler(page: Page) -> Response:
        fields = await page.form()
        if verb not in ("start", "pause", "resume", "abort", "rollback"):
            raise NotFound(f"no verb {verb}")
        reason = fields.get("reason", "").strip()[:255] or f"{verb} from the dashboard"
        await run_in_threadpool(page.fleet.rollouts.verb, rollout_id, verb, page.admin, reason)  # type: ignore[arg-type]
        return RedirectResponse(f"{PREFIX}/rollouts/{quote(rollout_id)}", status_code=303)

    return await _page(request, handler)


def _progress_chart(state: RolloutState, members: Sequence[dict], now: datetime) -> Any:
    """Per group: how many of its devices are confirmed / pending / reverted / failed over time."""
    t = timeline(state, members, now)
    panels = []
    for g in t.groups:
        label = f"{g.index + 1}. {g.name} ({g.percent:g} %)"
        if g.index == state.group_index and not state.final:
            label += " ◀"
        panels.append((label, g.members, [(step.at, step.counts) for step in g.steps]))
    marks = [(m.at, m.event, MARK_COLORS.get(m.event, "#475569")) for m in t.marks]
    return charts.group_progress(panels, marks, "groups: device states over time (each panel on its own scale)")


# -- devices ---------------------------------------------------------------------------------------
@router.get("/devices")
async def devices_page(
    request: Request, device_class: str = "", state: str = "", sequence: str = "", offset: int = 0
) -> Response:
    async def handler(page: Page) -> Response:
        seq = int(sequence) if sequence.isdigit() else None
        total, rows = await run_in_threadpool(
            lambda: page.fleet.store.fleet_view(
                device_class=device_class or None,
                slot_state=state or None,
                sequence=seq,
                limit=100,
                offset=max(offset, 0),
            )
        )
        summary = await run_in_threadpool(page.fleet.store.fleet_summary)
        classes = sorted({c for c, *_ in summary})
        by_class: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        by_model: dict[tuple[str, int], int] = defaultdict(int)
        for cls, slot, seq_, n in summary:
            by_class[cls][slot] += n
            by_model[(cls, seq_)] += n
        return page.render(
            "devices.html",
            title="devices",
            rows=rows,
            total=total,
            offset=max(offset, 0),
            classes=classes,
            states=("unknown", "confirmed", "trial", "reverted", "empty"),
            by_class=by_class,
            by_model=sorted(by_model.items()),
            filters={"device_class": device_class, "state": state, "sequence": sequence},
            live=True,
        )

    return await _page(request, handler)


# -- monitoring ------------------------------------------------------------------------------------
@router.get("/monitoring")
async def monitoring_page(request: Request, device_class: str = "") -> Response:
    async def handler(page: Page) -> Response:
        monitor = page.fleet.monitor
        running = await run_in_threadpool(page.fleet.store.running)
        baselines = [b for b in monitor.baselines() if running.get((b.device_class, b.sequence), 0)]
        classes = sorted({b.device_class for b in baselines})
        chosen = device_class or (classes[0] if classes else "")
        now = page.fleet.clock()
        panels = []
        for b in (b for b in baselines if b.device_class == chosen):
            prod = await run_in_threadpool(monitor.production, b.device_class, b.sequence, now)
            base = b.aggregate()
            history = [h for h in monitor.history(b.device_class) if h["sequence"] == b.sequence]
            latest: dict[str, dict] = {}
            series: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
            for h in history:
                series[h["kind"]].append((h["at"], h["value"] / h["threshold"] if h["threshold"] else 0.0))
                latest[h["kind"]] = h
            width = max(len(base.class_hist), len(prod.class_hist))
            panels.append(
                {
                    "baseline": b,
                    "production": prod,
                    "devices": running.get((b.device_class, b.sequence), 0),
                    "latest": [latest[k] for k in KINDS if k in latest],
                    "classes": charts.bars(
                        [str(i) for i in range(width)],
                        [
                            ("baseline", base.class_hist, charts.COLORS["baseline"]),
                            ("production", prod.class_hist, charts.COLORS["production"]),
                        ],
                        "predicted class mix",
                    ),
                    "confidence": charts.bars(
                        CONFIDENCE_LABELS,
                        [
                            ("baseline", base.confidence_hist, charts.COLORS["baseline"]),
                            ("production", prod.confidence_hist, charts.COLORS["production"]),
                        ],
                        "top-1 confidence",
                    ),
                    "latency": charts.bars(
                        LATENCY_LABELS,
                        [
                            ("baseline", base.latency_hist, charts.COLORS["baseline"]),
                            ("production", prod.latency_hist, charts.COLORS["production"]),
                        ],
                        "latency (ms)",
                    ),
                    "drift": charts.lines(
                        [(k, series[k], charts.KIND_COLORS[k]) for k in KINDS],
                        "drift over time (score ÷ its limit; above 1 alarms)",
                        thresholds=[("limit", 1.0, charts.COLORS["threshold"])],
                    ),
                }
            )
        alarms = monitor.alarms(limit=100)
        return page.render(
            "monitoring.html",
            title="monitoring",
            classes=classes,
            chosen=chosen,
            panels=panels,
            alarms=alarms,
            config=page.fleet.settings.monitoring,
            window=timedelta(hours=page.fleet.settings.monitoring.window_hours),
            live=True,
        )

    return await _page(request, handler)


@router.post("/monitoring/check")
async def monitoring_check(request: Request) -> Response:
    async def handler(page: Page) -> Response:
        await page.form()
        await run_in_threadpool(page.fleet.monitor.check)
        return RedirectResponse(f"{PREFIX}/monitoring", status_code=303)

    return await _page(request, handler)


@router.post("/alarms/{alarm_id}/{action}")
async def alarm_action(request: Request, alarm_id: str, action: str) -> Response:
    async def handler(page: Page) -> Response:
        await page.form()
        status = {"acknowledge": "acknowledged", "resolve": "resolved"}.get(action)
        if status is None:
            raise NotFound(f"no alarm action {action}")
        await run_in_threadpool(page.fleet.monitor.set_alarm_status, alarm_id, status, page.admin)
        return RedirectResponse(f"{PREFIX}/monitoring", status_code=303)

    return await _page(request, handler)


# -- audit -----------------------------------------------------------------------------------------
@router.get("/audit")
async def audit_page(request: Request, target: str = "") -> Response:
    async def handler(page: Page) -> Response:
        rows = await run_in_threadpool(page.fleet.audit_log, 300, target or None)
        return page.render("audit.html", title="audit log", rows=rows, target=target, live=True)

    return await _page(request, handler)
