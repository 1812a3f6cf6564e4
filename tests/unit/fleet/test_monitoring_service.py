"""Production monitoring through a live fleet server: no alarm on a clean fleet, each drift kind
raised from what simulated devices report (under the telemetry trust rules), one Prefect event per
alarm (retried until accepted), the alarm API and `tinymlops fleet alarms`; and the dashboard's
session rules (cookie flags, forged cookies, CSRF) without a browser."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from tests.support.fleet_world import BEHAVIOUR, ROLLOUT, World, fleet_world
from tinymlops.fleet.api.serving import serve_in_thread
from tinymlops.fleet.api.session import Sessions
from tinymlops.fleet.monitoring import DriftAlarm
from tinymlops.fleetsim.simulator import ReleaseBehaviour


class EventSink:
    """A stand-in for Prefect's POST /api/events that refuses the first `refuse` batches."""

    def __init__(self, refuse: int = 0) -> None:
        self.events: list[dict] = []
        self.refuse = refuse
        self.lock = threading.Lock()
        self.app = FastAPI()

        @self.app.post("/api/events")
        async def events(request: Request) -> Response:
            with self.lock:
                if self.refuse:
                    self.refuse -= 1
                    return Response(status_code=503)
                self.events += await request.json()
            return Response(status_code=204)


@pytest.fixture
def sink():
    s = EventSink(refuse=1)
    with serve_in_thread(s.app) as url:
        s.url = url + "/api"  # type: ignore[attr-defined]
        yield s


@pytest.fixture
def world(tmp_path: Path, sink: EventSink):
    from tinymlops.settings.monitoring import MonitoringConfig

    # no background checks: the test checks when it wants to
    config = MonitoringConfig(check_seconds=3600, window_hours=0.04, min_inferences=500)
    with fleet_world(tmp_path, devices=30, monitoring=config, events_url=sink.url) as w:  # type: ignore[attr-defined]
        yield w


def behave(world: World, **changes: object) -> None:
    assert world.sim is not None
    world.sim.config.behaviour[1] = BEHAVIOUR.model_copy(update=changes)


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        ("classes", None),  # the devices' inputs drift: one class dominates
        ("confidence", dict(confidence=0.6)),
        ("latency", dict(latency_ms=30.0)),
        ("errors", dict(error_rate=0.08)),
    ],
)
def test_clean_fleet_is_quiet_and_each_drift_kind_alarms(world: World, sink: EventSink, kind: str, change) -> None:
    world.round()
    assessments = world.admin.check_drift()
    assert {a["reason"] for a in assessments} == {"healthy"} and world.admin.alarms() == []
    if change is None:
        world.drift()
    else:
        behave(world, **change)
    for _ in range(3):
        world.round()
    world.admin.check_drift()
    stored = world.admin.alarms(status="open")
    alarms = [DriftAlarm.model_validate({k: v for k, v in a.items() if k in DriftAlarm.model_fields}) for a in stored]
    assert {a.kind for a in alarms} == {kind}, alarms
    assert {a.device_class for a in alarms} == {"m4", "m7"} and all(a.sequence == 1 for a in alarms)
    assert all(a.value > a.threshold and a.devices >= 3 for a in alarms)
    # the first event batch was refused (503): kept pending with the reason, sent on the next check
    pending = world.admin.alarms()
    assert any(a["event_error"] for a in pending) or sink.events
    world.admin.check_drift()
    assert all(a["emitted_at"] for a in world.admin.alarms())
    sent = {e["payload"]["alarm"]["id"] for e in sink.events}
    assert sent == {a.id for a in alarms}
    event = sink.events[0]
    assert event["event"] == "tinymlops.drift.alarm"
    assert event["resource"]["prefect.resource.id"].startswith("tinymlops.fleet.alarm.")
    # still drifting: no second alarm of the same kind while one is open
    world.round()
    world.admin.check_drift()
    assert len(world.admin.alarms()) == len(alarms)
    # resolved and audited under the admin's name
    world.admin.alarm_action(alarms[0].id, "resolve")
    assert world.admin.audit(5)[0]["actor"] == "alice" and world.admin.audit(5)[0]["target"] == alarms[0].id


def test_devices_not_known_to_run_the_model_do_not_count(world: World) -> None:
    """Telemetry claiming a model the server has not seen a device install is not production."""
    assert world.sim is not None
    for d in world.sim.devices[:20]:
        d.sequence = 2  # claims sequence 2 without installing it
        d.drifted = True
    behave(world, class_weights=[1.0] * 10)
    world.round()
    world.round()
    assessments = world.admin.check_drift()
    assert world.admin.alarms() == []
    assert all(a["reason"] == "healthy" or not a["judged"] for a in assessments)


def test_cli_lists_alarms_and_exits_3_while_one_is_open(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tests.support.cli_helpers import run_cli

    monkeypatch.setenv("TINYMLOPS_FLEET_URL", world.url)
    monkeypatch.setenv("TINYMLOPS_FLEET_ADMIN_TOKEN", world.token)  # type: ignore[attr-defined]
    monkeypatch.setenv("TINYMLOPS_HOME", str(tmp_path / "home"))
    code, out, _ = run_cli(monkeypatch, capsys, "fleet", "alarms", "--check", "--root", tmp_path)
    assert code == 0 and "no drift alarms" in out
    world.drift()
    for _ in range(3):
        world.round()
    code, out, err = run_cli(monkeypatch, capsys, "fleet", "alarms", "--check", "--json", "--root", tmp_path)
    assert code == 3, out + err
    assert {a["kind"] for a in json.loads(out)} == {"classes"}
    code, out, _ = run_cli(monkeypatch, capsys, "fleet", "alarms", "--root", tmp_path)
    assert code == 3 and "classes" in out


def test_dashboard_session_is_httponly_strict_and_csrf_protected(world: World) -> None:
    with httpx.Client(base_url=world.url) as c:
        assert c.get("/ui/rollouts").status_code == 303  # → login
        form = c.get("/ui/login")
        assert (
            "content-security-policy" in form.headers
            and "default-src 'self'" in form.headers["content-security-policy"]
        )
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        # a login without the form's own CSRF cookie (a cross-site POST) is refused
        cross = httpx.post(f"{world.url}/ui/login", data={"csrf": csrf, "token": world.token})  # type: ignore[attr-defined]
        assert "tinymlops_session" not in cross.headers.get("set-cookie", "")
        ok = c.post("/ui/login", data={"csrf": csrf, "token": world.token})  # type: ignore[attr-defined]
        cookie = ok.headers["set-cookie"]
        assert "tinymlops_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Path=/ui" in cookie
        world.store_links = world.admin._http.post(  # type: ignore[attr-defined]
            "/v1/admin/rollouts",
            json={"release_id": "r2", "rollout_id": "linked", "links": {"x": "javascript:alert(1)"}},
        )
        assert world.store_links.status_code == 422  # type: ignore[attr-defined]  # only http(s) links
        page = c.get(f"/ui/rollouts/{ROLLOUT}")
        assert page.status_code == 200
        assert 'href="http://mlflow.invalid/#/runs/abc"' in page.text and "Prefect flow run" in page.text
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        assert c.post(f"/ui/rollouts/{ROLLOUT}/start", data={"csrf": "wrong"}).status_code == 403
        assert c.post(f"/ui/rollouts/{ROLLOUT}/start", data={}).status_code == 403
        assert world.admin.status(ROLLOUT)[0].status == "created"
        done = c.post(f"/ui/rollouts/{ROLLOUT}/start", data={"csrf": token})
        assert done.status_code == 303 and world.admin.status(ROLLOUT)[0].status == "running"
        entry = world.admin.audit(3)[0]
        assert (entry["actor"], entry["action"], entry["target"]) == ("alice", "start", ROLLOUT)
        assert any(e["action"] == "login" and e["actor"] == "alice" for e in world.admin.audit(20))
    # a forged or tampered cookie is no session
    forged = httpx.get(f"{world.url}/ui/rollouts", cookies={"tinymlops_session": "YWxpY2U.9999999999.x.y"})
    assert forged.status_code == 303


def test_session_tokens() -> None:
    sessions = Sessions({"alice": "a" * 32, "bob": "b" * 32})
    cookie, csrf = sessions.issue("alice", hours=1, now=1000.0)
    assert sessions.who(cookie, now=1001.0) == ("alice", csrf)
    name, expiry, nonce, mac = cookie.split(".")
    bob = Sessions({"alice": "other-token", "bob": "b" * 32})
    for bad in (f"{name}.{int(expiry) + 1}.{nonce}.{mac}", f"Ym9i.{expiry}.{nonce}.{mac}", cookie[:-2] + "xx"):
        with pytest.raises(Exception, match="not logged in"):
            sessions.who(bad, now=1001.0)
    with pytest.raises(Exception, match="not logged in"):
        bob.who(cookie, now=1001.0)  # alice's token rotated: her sessions end
    with pytest.raises(Exception, match="expired"):
        sessions.who(cookie, now=1000.0 + 3601)
    with pytest.raises(Exception, match="CSRF"):
        Sessions.check_csrf(csrf, "x" * 32)


def test_release_behaviour_default_is_clean() -> None:
    assert ReleaseBehaviour().error_rate == 0.0
