"""The fleet server under the red-team findings of issue 14, one test per attack, named after it:
a real uvicorn server on 127.0.0.1, real HTTP, real signed bundles (the fixtures of the fleet
server's integration tests)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from tests.integration.test_fleet_server import (  # noqa: F401  (fixtures: keys, bundles, fleet, db_url)
    ADMIN,
    PROVISION,
    T0,
    Fleet,
    bundles,
    db_url,
    enrol_all,
    fleet,
    install,
    keys,
    poll_all,
    run,
    telemetry,
    upload_releases,
)
from tinymlops.fleet import models as m
from tinymlops.fleet.client import FleetHTTPError
from tinymlops.fleet.telemetry import CONFIDENCE_BINS, INT64_MAX, LATENCY_BINS

HUGE = b'{"device_id": "' + b"x" * (19 * 1024 * 1024) + b'"}'  # 19 MiB of JSON
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def _window(sequence: int, n: int, *, latency_bin: int = 6, end: datetime | None = None, seconds: int = 300) -> dict:
    end = end or T0 + timedelta(minutes=5)
    lat, conf = [0] * LATENCY_BINS, [0] * CONFIDENCE_BINS
    lat[latency_bin], conf[18] = n, n
    return {
        "sequence": sequence,
        "window_start": (end - timedelta(seconds=seconds)).isoformat(),
        "window_end": end.isoformat(),
        "inference_count": n,
        "latency_hist": lat,
        "confidence_hist": conf,
        "class_hist": [n // 2, n - n // 2],
        "boot_count": 1,
    }


def _started(fleet: Fleet, n: int = 40, rollout_id: str = "r"):  # type: ignore[no-untyped-def]
    """Releases uploaded, `n` devices enrolled, a rollout of r2 (rollback r1b) started; → devices, polls."""
    upload_releases(fleet, fleet.bundles)
    devices = run(enrol_all(fleet.url, n))
    fleet.admin.create_rollout("r2", rollback_release_id="r1b", rollout_id=rollout_id)
    fleet.admin.verb(rollout_id, "start")
    return devices, run(poll_all(fleet.url, devices))


@pytest.fixture
def armed(fleet: Fleet, bundles):  # type: ignore[no-untyped-def]  # noqa: F811
    fleet.bundles = bundles  # type: ignore[attr-defined]
    return fleet


# -- 1. denial of service without credentials --------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/enrol", "/v1/devices/dev-0000/telemetry"])
def test_19_mib_json_body_without_credentials_is_refused_at_once_without_echo(armed: Fleet, path: str) -> None:
    run(enrol_all(armed.url, 1))
    started = time.perf_counter()
    r = httpx.post(f"{armed.url}{path}", content=HUGE, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 401 and len(r.content) < 1024
    assert time.perf_counter() - started < 2.0


def test_19_mib_json_body_with_credentials_is_413_before_it_is_read(armed: Fleet) -> None:
    (d,) = run(enrol_all(armed.url, 1))
    for path, token in (("/v1/enrol", PROVISION), (f"/v1/devices/{d.device_id}/telemetry", d.credential)):
        started = time.perf_counter()
        r = httpx.post(f"{armed.url}{path}", content=HUGE, headers=_auth(token), timeout=30)
        assert r.status_code == 413 and len(r.content) < 1024, (path, r.status_code)
        assert time.perf_counter() - started < 2.0


def test_polls_stay_fast_while_a_huge_body_is_refused(armed: Fleet) -> None:
    import threading

    (d,) = run(enrol_all(armed.url, 1))
    flood = threading.Thread(
        target=lambda: [httpx.post(f"{armed.url}/v1/enrol", content=HUGE, timeout=30) for _ in range(3)]
    )
    flood.start()
    worst = 0.0
    while flood.is_alive():
        started = time.perf_counter()
        assert (
            httpx.get(f"{armed.url}/v1/devices/{d.device_id}/assignment", headers=_auth(d.credential)).status_code
            == 204
        )
        worst = max(worst, time.perf_counter() - started)
    flood.join()
    assert worst < 1.0


def test_validation_errors_never_echo_the_input(armed: Fleet) -> None:
    (d,) = run(enrol_all(armed.url, 1))
    secret_looking = "s3cr3t-" + "z" * 40
    body = {"idempotency_key": secret_looking + "/", "release_id": "r2", "stage": "confirmed"}
    r = httpx.post(f"{armed.url}/v1/devices/{d.device_id}/reports", json=body, headers=_auth(d.credential))
    assert r.status_code == 422 and secret_looking not in r.text
    assert all(set(e) == {"loc", "msg", "type"} for e in r.json()["detail"])


# -- 2. one device decides a rollout -----------------------------------------------------------------
def test_one_canary_with_1e15_good_inferences_cannot_pass_a_bad_release(armed: Fleet) -> None:
    devices, polls = _started(armed)
    canary = [d for d in devices if polls[d.device_id].status_code == 200]
    liar = canary[0]
    run(install(armed.url, devices, polls, latency_bin=11))  # the new model is slow on every device
    r = httpx.post(
        f"{armed.url}/v1/devices/{liar.device_id}/telemetry",
        json=_window(2, 10**15, latency_bin=6),
        headers=_auth(liar.credential),
    )
    assert r.status_code == 202  # stored, but a 5-minute window cannot hold 10^15 inferences: not counted
    armed.clock.advance(61)
    report = armed.admin.step("r")
    assert report.decision == "rollback", report.reason
    assert report.health is not None and all(g.canary_devices >= 1 for g in report.health.gates)


def test_one_device_outside_the_rollout_cannot_roll_back_a_good_release(armed: Fleet) -> None:
    devices, polls = _started(armed)
    outsider = next(d for d in devices if polls[d.device_id].status_code == 204)
    run(install(armed.url, [d for d in devices if d is not outsider], polls))
    # the outsider claims to run the new release, badly, and sends an extreme control window too
    for window in (_window(2, 3000, latency_bin=17), _window(1, 3000, latency_bin=0)):
        r = httpx.post(
            f"{armed.url}/v1/devices/{outsider.device_id}/telemetry", json=window, headers=_auth(outsider.credential)
        )
        assert r.status_code == 202
    armed.clock.advance(61)
    report = armed.admin.step("r")
    assert report.decision == "advance", report.reason


def test_a_window_dated_9999_sent_before_any_rollout_cannot_roll_back_a_later_release(armed: Fleet) -> None:
    upload_releases(armed, armed.bundles)  # type: ignore[attr-defined]
    devices = run(enrol_all(armed.url, 40))
    far = _window(2, 300, latency_bin=17, end=datetime(9999, 1, 1, tzinfo=timezone.utc))
    r = httpx.post(
        f"{armed.url}/v1/devices/{devices[0].device_id}/telemetry", json=far, headers=_auth(devices[0].credential)
    )
    assert r.status_code == 422 and "future" in r.text
    # and a window sent before the rollout existed does not count in it, whatever its dates
    early = _window(2, 300, latency_bin=17)
    r = httpx.post(
        f"{armed.url}/v1/devices/{devices[1].device_id}/telemetry", json=early, headers=_auth(devices[1].credential)
    )
    assert r.status_code == 202
    armed.clock.advance(30)
    armed.admin.create_rollout("r2", rollback_release_id="r1b", rollout_id="later")
    armed.admin.verb("later", "start")
    polls = run(poll_all(armed.url, devices))
    run(install(armed.url, devices, polls, end=armed.clock.now + timedelta(minutes=1)))
    armed.clock.advance(61)
    report = armed.admin.step("later")
    assert report.decision == "advance", report.reason


def test_gates_report_their_device_counts_and_wait_for_the_policys_minimum(armed: Fleet) -> None:
    devices, polls = _started(armed)
    canary = [d for d in devices if polls[d.device_id].status_code == 200]
    run(install(armed.url, devices, polls))
    armed.clock.advance(61)
    report = armed.admin.step("r")
    assert report.health is not None and report.health.canary_devices == len(canary) == 2
    assert all(
        g.canary_devices == 2 and g.control_devices == 38 for g in report.health.gates if g.gate != "revert_rate"
    )


# -- 3. overflow -------------------------------------------------------------------------------------
def test_two_windows_of_2_62_inferences_do_not_freeze_the_rollout(armed: Fleet) -> None:
    devices, polls = _started(armed)
    canary = [d for d in devices if polls[d.device_id].status_code == 200]
    run(install(armed.url, devices, polls))
    for _ in range(2):
        r = httpx.post(
            f"{armed.url}/v1/devices/{canary[0].device_id}/telemetry",
            json=_window(2, 2**62),
            headers=_auth(canary[0].credential),
        )
        assert r.status_code == 202
    armed.clock.advance(61)
    report = armed.admin.step("r")
    assert report.decision == "advance", report.reason
    assert report.health is not None and report.health.canary_inferences >= 0


# -- 4. 500 responses instead of 4xx -----------------------------------------------------------------
def test_poll_sequence_of_2_63_is_422(armed: Fleet) -> None:
    (d,) = run(enrol_all(armed.url, 1))
    for value in (2**63, 2**64, -1, "NaN"):
        r = httpx.get(
            f"{armed.url}/v1/devices/{d.device_id}/assignment", params={"sequence": value}, headers=_auth(d.credential)
        )
        assert r.status_code == 422, value


def test_telemetry_integers_of_2_63_are_422(armed: Fleet) -> None:
    (d,) = run(enrol_all(armed.url, 1))
    for field in ("sequence", "inference_count", "boot_count"):
        window = _window(1, 10) | {field: 2**63}
        r = httpx.post(f"{armed.url}/v1/devices/{d.device_id}/telemetry", json=window, headers=_auth(d.credential))
        assert r.status_code == 422, field
    window = _window(1, 10)
    window["latency_hist"][0] = INT64_MAX + 1
    r = httpx.post(f"{armed.url}/v1/devices/{d.device_id}/telemetry", json=window, headers=_auth(d.credential))
    assert r.status_code == 422
    assert armed.count(m.telemetry) == 0


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_json_nan_and_infinity_are_4xx_on_every_json_endpoint_with_and_without_credentials(
    armed: Fleet, constant: str
) -> None:
    upload_releases(armed, armed.bundles)  # type: ignore[attr-defined]
    (d,) = run(enrol_all(armed.url, 1))
    bodies = {
        "/v1/enrol": (PROVISION, b'{"device_id": "d9", "device_class": %s}'),
        f"/v1/devices/{d.device_id}/telemetry": (d.credential, b'{"sequence": %s}'),
        f"/v1/devices/{d.device_id}/reports": (d.credential, b'{"idempotency_key": %s}'),
        "/v1/admin/rollouts": (ADMIN, b'{"release_id": "r2", "policy": {"health": {"max_class_psi": %s}}}'),
        "/v1/admin/rollouts/nope/pause": (ADMIN, b'{"reason": %s}'),
    }
    for path, (token, template) in bodies.items():
        raw = template % constant.encode()
        for headers in ({"Content-Type": "application/json"}, _auth(token)):
            r = httpx.post(f"{armed.url}{path}", content=raw, headers=headers)
            assert 400 <= r.status_code < 500, (path, headers.get("Authorization") is not None, r.status_code)
            assert constant not in r.text or constant == "1e999"
    assert armed.count(m.rollouts) == 0


def test_slot_422_matches_its_schema(armed: Fleet) -> None:
    (d,) = run(enrol_all(armed.url, 1))
    r = httpx.get(
        f"{armed.url}/v1/devices/{d.device_id}/assignment", params={"slot": "bogus"}, headers=_auth(d.credential)
    )
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["query", "slot"] and set(error) == {"loc", "msg", "type"}


# -- 7. a second rollout for the same classes -------------------------------------------------------
def test_a_second_running_rollout_for_the_same_classes_is_refused_unless_it_supersedes(armed: Fleet) -> None:
    _started(armed)
    with pytest.raises(FleetHTTPError) as second:
        armed.admin.create_rollout("r2", rollback_release_id="r1b", rollout_id="again")
    assert second.value.status == 409 and "supersedes=r" in str(second.value)
    state = armed.admin.create_rollout("r2", rollback_release_id="r1b", rollout_id="again", supersedes="r")
    assert state.supersedes == "r" and state.status == "created"
    assert armed.admin.status("r")[0].status == "aborted"
    assert [r["id"] for r in armed.admin.rollouts(status="aborted")] == ["r"]
    with pytest.raises(FleetHTTPError) as gone:
        armed.admin.create_rollout("r2", rollout_id="third", supersedes="nope")
    assert gone.value.status in (404, 409)


# -- 9. list endpoints --------------------------------------------------------------------------------
def test_list_endpoints_filter_and_paginate(armed: Fleet) -> None:
    _started(armed, n=12)
    h = {"Authorization": f"Bearer {ADMIN}"}
    page = httpx.get(f"{armed.url}/v1/admin/devices", params={"class": "m4", "limit": 4, "offset": 4}, headers=h).json()
    assert page["total"] == 6 and page["limit"] == 4 and len(page["items"]) == 2
    assert {d["device_class"] for d in page["items"]} == {"m4"}
    releases = httpx.get(f"{armed.url}/v1/admin/releases", params={"limit": 1}, headers=h).json()
    assert releases["total"] == 2 and [r["id"] for r in releases["items"]] == ["r2"]
    assert [r["id"] for r in armed.admin.rollouts(status="running", release_id="r2")] == ["r"]
    assert armed.admin.rollouts(status="succeeded") == []
    assert httpx.get(f"{armed.url}/v1/admin/rollouts", params={"status": "bogus"}, headers=h).status_code == 422
    assert httpx.get(f"{armed.url}/v1/admin/devices").status_code == 401


# -- 10. the OpenAPI description ---------------------------------------------------------------------
def test_openapi_has_security_schemes_bodies_and_4xx_and_docs_work_offline(armed: Fleet) -> None:
    spec = httpx.get(f"{armed.url}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    upload = spec["paths"]["/v1/admin/releases/{release_id}/bundles/{device_class}"]["put"]
    assert upload["requestBody"]["content"]["application/octet-stream"]["schema"]["format"] == "binary"
    assert upload["security"] == [{"bearer": []}]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if path != "/healthz":
                assert any(code.startswith("4") for code in op["responses"]), (method, path)
    telemetry_op = spec["paths"]["/v1/devices/{device_id}/telemetry"]["post"]
    assert telemetry_op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TelemetryAggregate"
    }
    page = httpx.get(f"{armed.url}/docs").text
    assert "cdn" not in page.lower() and "/docs/static/swagger-ui-bundle.js" in page
    asset = httpx.get(f"{armed.url}/docs/static/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000


# -- issue 12: revocation lists ----------------------------------------------------------------------
def test_an_older_revocation_list_is_refused_once_a_newer_was_seen(tmp_path: Path) -> None:
    from tests.support.bundle_keys import sign_releases
    from tinymlops import bundle as bundle_lib
    from tinymlops.fleet.api import create_app
    from tinymlops.fleet.api.serving import serve_in_thread
    from tinymlops.fleet.client import FleetAdmin
    from tinymlops.fleet.config import FleetSettings

    directory = tmp_path / "keys"
    paths = bundle_lib.init_keys(directory, None, now=T0 - timedelta(days=1))
    signer = bundle_lib.load_signer(directory, None, now=T0)
    signed = sign_releases(signer, tmp_path, {"r2": 2, "r3": 3}, ("m4",), now=T0)
    old_list = paths.revocations.read_bytes()
    settings = FleetSettings(
        db_url=f"sqlite:///{tmp_path / 'fleet.db'}",
        bundle_dir=tmp_path / "stored",
        admin_tokens={"alice": ADMIN},
        trust_anchor=paths.root_public,
        revocations=paths.revocations,
        tick_seconds=None,
    )
    with serve_in_thread(create_app(settings, clock=lambda: T0)) as url, FleetAdmin(url, ADMIN) as admin:
        spare = bundle_lib.rotate_signing_key(directory, None, now=T0)  # a second key, never used
        bundle_lib.revoke_key(directory, spare.signing_kid, None, now=T0)  # a newer list revokes it
        admin.upload_bundle("r2", "m4", signed[("r2", "m4")])
        paths.revocations.write_bytes(old_list)  # an attacker puts the older list back
        with pytest.raises(FleetHTTPError) as refused:
            admin.upload_bundle("r3", "m4", signed[("r3", "m4")])
        assert refused.value.status == 503 and "older" in str(refused.value)


# -- 11. CLI one-line errors (fleet) ------------------------------------------------------------------
def test_a_bogus_fleet_database_url_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.cli_helpers import run_cli
    from tests.support.paths import REPO

    monkeypatch.setenv("TINYMLOPS_HOME", str(tmp_path))
    for url in ("bogus", "nosuchdb://x/y", "postgresql://nobody@127.0.0.1:1/none"):
        code, _, err = run_cli(monkeypatch, capsys, "fleet", "migrate", "--root", REPO, "--db-url", url)
        assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith("error: fleet database"), err


def test_json_from_an_attacker_cannot_nest_deeply_enough_to_break_the_parser(armed: Fleet) -> None:
    (d,) = run(enrol_all(armed.url, 1))
    deep = b"[" * 100_000 + b"]" * 100_000
    r = httpx.post(f"{armed.url}/v1/devices/{d.device_id}/reports", content=deep, headers=_auth(d.credential))
    assert r.status_code in (413, 422)
    deep = json.dumps({"a": 1}).encode()[:-1] + b', "b": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = httpx.post(f"{armed.url}/v1/devices/{d.device_id}/reports", content=deep, headers=_auth(d.credential))
    assert r.status_code == 422
