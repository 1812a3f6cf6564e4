"""The fleet server end to end: a real uvicorn server on 127.0.0.1, real HTTP with httpx, real
signed bundles, and the same tests on SQLite (WAL) and PostgreSQL (a fresh database per test;
skipped with a reason when no server answers on 127.0.0.1:5432)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from tests.support.bundle_keys import sign_releases
from tinymlops.fleet import models as m
from tinymlops.fleet.api import create_app
from tinymlops.fleet.api.serving import serve_in_thread
from tinymlops.fleet.client import AsyncDevice, FleetAdmin, FleetHTTPError
from tinymlops.fleet.config import FleetSettings
from tinymlops.fleet.policy import GroupPolicy, HealthPolicy, RolloutPolicy
from tinymlops.fleet.store import Store, make_engine, migrate
from tinymlops.fleet.telemetry import CONFIDENCE_BINS, LATENCY_BINS, TelemetryAggregate

bundle_lib = pytest.importorskip("tinymlops.bundle", reason="bundle library not present")

PG = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=2"
ADMIN, PROVISION = "admin-" + secrets.token_hex(8), "prov-" + secrets.token_hex(8)
T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)
CLASSES = ("m4", "m7")


class Clock:
    """The server's notion of now, moved by the test (the accelerated clock of a simulation)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _postgres_url() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432 ({type(exc).__name__})")
    name = f"tinymlops_fleet_{secrets.token_hex(4)}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
    else:
        yield from _postgres_url()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("keys")
    paths = bundle_lib.init_keys(directory, None, now=T0 - timedelta(days=1))
    return paths, bundle_lib.load_signer(directory, None, now=T0)


@pytest.fixture(scope="module")
def bundles(keys, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """(release, class) → signed bundle. r2 is the new model (sequence 2); r1b is the old model
    re-signed with sequence 3, the rollback target."""
    _, signer = keys
    out = tmp_path_factory.mktemp("bundles")
    return sign_releases(signer, out, {"r2": 2, "r1b": 3}, CLASSES, now=T0 - timedelta(hours=1))


def fast_policy(**health: object) -> RolloutPolicy:
    group = dict(min_soak_seconds=60, min_devices=2, success_threshold=0.9, error_threshold=0.1)
    return RolloutPolicy(
        groups=[
            GroupPolicy(name="canary", percent=5, error_action="abort_and_rollback", **group),
            GroupPolicy(name="half", percent=50, error_action="pause", **group),
            GroupPolicy(name="all", percent=100, error_action="pause", **group),
        ],
        health=HealthPolicy(min_inferences=200, **health),
    )


class Fleet:
    """A running server and the handles a test needs."""

    def __init__(self, url: str, settings: FleetSettings, clock: Clock, store: Store) -> None:
        self.url, self.settings, self.clock, self.store = url, settings, clock, store
        self.admin = FleetAdmin(url, ADMIN)

    def count(self, table) -> int:  # type: ignore[no-untyped-def]
        with self.store.engine.connect() as c:
            return c.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.fixture
def fleet(db_url: str, tmp_path: Path, keys) -> Iterator[Fleet]:
    paths, _ = keys
    settings = FleetSettings(
        db_url=db_url,
        bundle_dir=tmp_path / "bundles",
        admin_tokens={"alice": ADMIN},
        provisioning_token=PROVISION,
        trust_anchor=paths.root_public,
        max_bundle_bytes=64 * 1024,
        tick_seconds=None,  # the test steps rollouts itself
        policy=fast_policy(),
    )
    clock = Clock()
    store = Store.open(db_url)
    with serve_in_thread(create_app(settings, clock=clock, store=store)) as url:
        fleet = Fleet(url, settings, clock, store)
        yield fleet
        fleet.admin.close()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def enrol_all(url: str, n: int) -> list[AsyncDevice]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        devices = [AsyncDevice(http, f"dev-{i:04d}", CLASSES[i % 2]) for i in range(n)]
        for d in devices:
            await d.enrol(PROVISION)
    return devices


def upload_releases(fleet: Fleet, bundles) -> None:  # type: ignore[no-untyped-def]
    for (release, device_class), path in bundles.items():
        fleet.admin.upload_bundle(release, device_class, path)


def telemetry(
    sequence: int, n: int, *, latency_bin: int = 6, classes: tuple[int, ...] = (50, 50), end: datetime | None = None
) -> TelemetryAggregate:
    lat, conf = [0] * LATENCY_BINS, [0] * CONFIDENCE_BINS
    lat[latency_bin], conf[18] = n, n
    hist = [round(n * c / sum(classes)) for c in classes]
    return TelemetryAggregate(
        sequence=sequence,
        window_start=(end or T0 + timedelta(minutes=5)) - timedelta(minutes=5),
        window_end=end or T0 + timedelta(minutes=5),
        inference_count=n,
        latency_hist=lat,
        confidence_hist=conf,
        class_hist=hist,
        boot_count=1,
    )


async def poll_all(url: str, devices: list[AsyncDevice]) -> dict[str, httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        out = {}
        for d in devices:
            d.http = http
            out[d.device_id] = await d.poll()
        return out


async def install(
    url: str,
    devices: list[AsyncDevice],
    polls: dict[str, httpx.Response],
    *,
    outcome: str = "confirmed",
    latency_bin: int = 6,
    classes: tuple[int, ...] = (50, 50),
    end: datetime | None = None,
) -> int:
    """Devices with an assignment download it, report, and send telemetry from the new model;
    the rest send telemetry from the old one. → number that installed."""
    installed = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for d in devices:
            d.http = http
            r = polls[d.device_id]
            if r.status_code == 200:
                a = r.json()
                body = (await d.download(a["url"])).content
                assert hashlib.sha256(body).hexdigest() == a["sha256"]
                await d.report(a["release_id"], "downloaded")
                await d.report(a["release_id"], outcome, None if outcome == "confirmed" else "boot loop")
                if outcome == "confirmed":
                    d.sequence, d.slot = a["sequence"], "confirmed"
                    await d.telemetry(telemetry(a["sequence"], 300, latency_bin=latency_bin, classes=classes, end=end))
                installed += 1
            elif d.sequence < 2:
                await d.telemetry(telemetry(1, 300, end=end))
    return installed


# -- the API is published --------------------------------------------------------------------------
def test_openapi_is_published(fleet: Fleet) -> None:
    spec = httpx.get(f"{fleet.url}/openapi.json").json()
    for path in ("/v1/enrol", "/v1/devices/{device_id}/assignment", "/v1/admin/rollouts/{rollout_id}/{verb}"):
        assert path in spec["paths"]
    assert httpx.get(f"{fleet.url}/docs").status_code == 200


# -- enrolment and device credentials ------------------------------------------------------------
def test_enrol_stores_only_a_digest_and_refuses_bad_tokens(fleet: Fleet) -> None:
    r = httpx.post(
        f"{fleet.url}/v1/enrol",
        json={"device_id": "d1", "device_class": "m4"},
        headers={"Authorization": "Bearer wrong"},
    )
    assert r.status_code == 403 and fleet.count(m.devices) == 0
    (device,) = run(enrol_all(fleet.url, 1))
    with fleet.store.engine.connect() as c:
        stored = c.execute(select(m.devices.c.credential_hash)).scalar_one()
    assert device.credential not in stored and stored == hashlib.sha256(device.credential.encode()).hexdigest()
    again = httpx.post(
        f"{fleet.url}/v1/enrol",
        json={"device_id": "dev-0000", "device_class": "m4"},
        headers={"Authorization": f"Bearer {PROVISION}"},
    )
    assert again.status_code == 409 and fleet.count(m.devices) == 1


def test_device_credentials_are_per_device(fleet: Fleet) -> None:
    a, b = run(enrol_all(fleet.url, 2))
    base = f"{fleet.url}/v1/devices"
    assert (
        httpx.get(f"{base}/{a.device_id}/assignment", headers={"Authorization": f"Bearer {a.credential}"}).status_code
        == 204
    )
    assert httpx.get(f"{base}/{a.device_id}/assignment").status_code == 401
    theirs = httpx.get(f"{base}/{b.device_id}/assignment", headers={"Authorization": f"Bearer {a.credential}"})
    assert theirs.status_code == 403 and b.device_id in theirs.json()["detail"]
    report = {"idempotency_key": "k1", "release_id": "r2", "stage": "confirmed"}
    assert (
        httpx.post(
            f"{base}/{b.device_id}/reports", json=report, headers={"Authorization": f"Bearer {a.credential}"}
        ).status_code
        == 403
    )
    assert fleet.count(m.reports) == 0
    # a device credential is not an admin token
    assert (
        httpx.get(f"{fleet.url}/v1/admin/audit", headers={"Authorization": f"Bearer {a.credential}"}).status_code == 403
    )


def test_bad_input_is_a_clear_4xx_and_stores_nothing(fleet: Fleet) -> None:
    (d,) = run(enrol_all(fleet.url, 1))
    auth = {"Authorization": f"Bearer {d.credential}", "Content-Type": "application/json"}
    url = f"{fleet.url}/v1/devices/{d.device_id}"
    assert httpx.post(f"{url}/reports", content=b"{not json", headers=auth).status_code == 422
    assert httpx.post(f"{url}/telemetry", content=b'{"sequence": 1}', headers=auth).status_code == 422
    bad_bins = telemetry(1, 10).model_dump(mode="json") | {"latency_hist": [1, 2]}
    r = httpx.post(f"{url}/telemetry", json=bad_bins, headers=auth)
    assert r.status_code == 422 and "latency_hist" in r.text
    failed_without_reason = {"idempotency_key": "k", "release_id": "r2", "stage": "failed"}
    assert httpx.post(f"{url}/reports", json=failed_without_reason, headers=auth).status_code == 422
    assert fleet.count(m.reports) == 0 and fleet.count(m.telemetry) == 0


# -- releases --------------------------------------------------------------------------------------
def test_device_routes_answer_bad_parameters_with_where_and_why(fleet: Fleet) -> None:
    """The device routes read their own parameters (the hot path skips FastAPI's per-request
    solving): a bad one is still a 422 naming where, never echoing the value."""
    (d,) = run(enrol_all(fleet.url, 1))
    auth = {"Authorization": f"Bearer {d.credential}"}
    poll = f"{fleet.url}/v1/devices/{d.device_id}/assignment"
    for params, loc in (
        ({"slot": "bogus-slot"}, ["query", "slot"]),
        ({"sequence": "-1"}, ["query", "sequence"]),
        ({"class": "bad class!"}, ["query", "class"]),
    ):
        r = httpx.get(poll, params=params, headers=auth)
        assert r.status_code == 422 and [e["loc"] for e in r.json()["detail"]] == [loc], r.text
        assert all(str(v) not in r.text for v in params.values())
    r = httpx.get(f"{fleet.url}/v1/devices/bad%0Aname/assignment", headers=auth)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "device_id"]
    r = httpx.get(f"{fleet.url}/v1/devices/{d.device_id}/bundles/..%2Fetc", headers=auth)
    assert r.status_code in (404, 422)
    assert httpx.get(poll, params={"slot": "confirmed", "sequence": 0}, headers=auth).status_code == 204
    # the OpenAPI description still lists every parameter the routes read
    spec = httpx.get(f"{fleet.url}/openapi.json").json()["paths"]
    named = {p["name"] for p in spec["/v1/devices/{device_id}/assignment"]["get"]["parameters"]}
    assert named == {"device_id", "sequence", "slot", "class"}
    download = spec["/v1/devices/{device_id}/bundles/{release_id}"]["get"]["parameters"]
    assert [p["name"] for p in download] == ["device_id", "release_id"]
    assert all(p["schema"]["pattern"] for p in download)


def test_upload_verifies_bundles_before_keeping_them(fleet: Fleet, bundles, tmp_path: Path) -> None:
    good = bundles[("r2", "m4")]
    with pytest.raises(FleetHTTPError) as wrong_class:
        fleet.admin.upload_bundle("r2", "m7", good)  # an m4 bundle offered for m7
    assert wrong_class.value.status == 422 and "wrong_class" in str(wrong_class.value)
    tampered = tmp_path / "tampered.bundle"
    data = bytearray(good.read_bytes())
    data[-10] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(FleetHTTPError) as bad:
        fleet.admin.upload_bundle("r2", "m4", tampered)
    assert bad.value.status == 422 and "bundle refused" in str(bad.value)
    huge = tmp_path / "huge.bundle"
    huge.write_bytes(b"\0" * (fleet.settings.max_bundle_bytes + 1))
    with pytest.raises(FleetHTTPError) as big:
        fleet.admin.upload_bundle("r2", "m4", huge)
    assert big.value.status == 413
    nobody = httpx.put(f"{fleet.url}/v1/admin/releases/r2/bundles/m4", content=good.read_bytes())
    assert nobody.status_code == 401
    assert fleet.count(m.releases) == 0 and fleet.count(m.release_bundles) == 0
    assert not [p for p in fleet.settings.bundle_dir.rglob("*") if p.is_file()]
    info = fleet.admin.upload_bundle("r2", "m4", good)
    assert info["sequence"] == 2 and info["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    with pytest.raises(FleetHTTPError) as dup:
        fleet.admin.upload_bundle("r2", "m4", good)
    assert dup.value.status == 409 and fleet.count(m.release_bundles) == 1


def test_upload_refuses_a_bundle_signed_by_a_revoked_key(tmp_path: Path) -> None:
    """The server checks the root-signed revocation list on every upload, re-read each time."""
    directory = tmp_path / "keys"
    paths = bundle_lib.init_keys(directory, None, now=T0 - timedelta(days=1))
    signer = bundle_lib.load_signer(directory, None, now=T0)
    signed = sign_releases(signer, tmp_path, {"r2": 2}, ("m4",), now=T0)[("r2", "m4")]
    settings = FleetSettings(
        db_url=f"sqlite:///{tmp_path / 'fleet.db'}",
        bundle_dir=tmp_path / "stored",
        admin_tokens={"alice": ADMIN},
        trust_anchor=paths.root_public,
        revocations=paths.revocations,
        tick_seconds=None,
    )
    with serve_in_thread(create_app(settings, clock=Clock())) as url, FleetAdmin(url, ADMIN) as admin:
        bundle_lib.revoke_key(directory, paths.signing_kid, None, now=T0)
        with pytest.raises(FleetHTTPError) as refused:
            admin.upload_bundle("r2", "m4", signed)
        assert refused.value.status == 422 and "revoked_key" in str(refused.value)
        assert admin.releases() == []
    assert not [p for p in settings.bundle_dir.rglob("*.bundle")]


def test_rollback_release_must_have_a_higher_sequence(fleet: Fleet, bundles) -> None:
    upload_releases(fleet, bundles)
    with pytest.raises(FleetHTTPError, match="must exceed"):
        fleet.admin.create_rollout("r1b", rollback_release_id="r2")
    assert fleet.count(m.rollouts) == 0


# -- rollouts over HTTP ----------------------------------------------------------------------------
def test_good_release_reaches_everyone_without_double_assignment(fleet: Fleet, bundles) -> None:
    upload_releases(fleet, bundles)
    devices = run(enrol_all(fleet.url, 20))
    state = fleet.admin.create_rollout("r2", rollback_release_id="r1b", rollout_id="good")
    assert state.status == "created"
    assert fleet.admin.verb("good", "start", "ship it").status == "running"
    decisions = []
    for _ in range(4):
        polls = run(poll_all(fleet.url, devices))
        run(install(fleet.url, devices, polls))
        fleet.clock.advance(61)
        decisions.append(fleet.admin.step("good").decision)
    assert decisions == ["advance", "advance", "succeed", "idle"]
    state, report = fleet.admin.status("good")
    assert state.status == "succeeded" and report.counts.confirmed == 20 == report.counts.assigned
    with fleet.store.engine.connect() as c:
        groups = dict(
            c.execute(
                select(m.rollout_members.c.group_index, func.count()).group_by(m.rollout_members.c.group_index)
            ).all()
        )
    assert groups == {0: 2, 1: 8, 2: 10}  # 5 % → 1 per class, 50 % → 5 per class, 100 % → 10
    # everyone is up to date: polls are 204 now, and cheap
    assert {r.status_code for r in run(poll_all(fleet.url, devices)).values()} == {204}


def test_canary_failures_roll_back_to_the_old_model_with_a_higher_sequence(fleet: Fleet, bundles) -> None:
    upload_releases(fleet, bundles)
    devices = run(enrol_all(fleet.url, 40))
    fleet.admin.create_rollout("r2", rollback_release_id="r1b", rollout_id="bad")
    fleet.admin.verb("bad", "start")
    polls = run(poll_all(fleet.url, devices))
    canary = {d for d, r in polls.items() if r.status_code == 200}
    assert len(canary) == 2
    run(install(fleet.url, devices, polls, outcome="failed"))
    report = fleet.admin.step("bad")
    assert report.decision == "rollback" and "error rate 1.000" in report.reason
    after = run(poll_all(fleet.url, devices))
    rolled = {d: r.json() for d, r in after.items() if r.status_code == 200}
    assert set(rolled) == canary
    assert {a["release_id"] for a in rolled.values()} == {"r1b"} and {a["sequence"] for a in rolled.values()} == {3}
    assert fleet.admin.status("bad")[0].status == "rolled_back"


def test_gates_stop_a_slower_model_that_installs_fine(fleet: Fleet, bundles) -> None:
    upload_releases(fleet, bundles)
    devices = run(enrol_all(fleet.url, 40))
    fleet.admin.create_rollout("r2", rollback_release_id="r1b", rollout_id="slow")
    fleet.admin.verb("slow", "start")
    polls = run(poll_all(fleet.url, devices))
    run(install(fleet.url, devices, polls, latency_bin=11))  # every install confirmed, p95 ~5x
    fleet.clock.advance(61)
    report = fleet.admin.step("slow")
    assert report.counts.success_rate == 1.0  # a plain install check would have passed it
    assert report.decision == "rollback"
    assert report.health is not None and [g.gate for g in report.health.failed] == ["p95_latency_ratio"]


def test_pause_resume_abort_and_the_audit_log(fleet: Fleet, bundles) -> None:
    upload_releases(fleet, bundles)
    devices = run(enrol_all(fleet.url, 20))
    fleet.admin.create_rollout("r2", rollback_release_id="r1b", rollout_id="ops", policy=fast_policy())
    fleet.admin.verb("ops", "start")
    assert fleet.admin.verb("ops", "pause", "weekend").status == "paused"
    with pytest.raises(FleetHTTPError) as twice:
        fleet.admin.verb("ops", "pause")
    assert twice.value.status == 409 and "cannot pause while paused" in str(twice.value)
    assert fleet.admin.step("ops").decision == "idle"
    assert fleet.admin.verb("ops", "resume").status == "running"
    polls = run(poll_all(fleet.url, devices))
    started, waiting = [d for d in devices if polls[d.device_id].status_code == 200]  # one canary per class
    run(_report(fleet.url, started, "downloaded", "k1"))
    assert fleet.admin.verb("ops", "abort", "changed my mind").status == "aborted"
    # the abort withdraws what nobody acted on; a device mid-install finishes
    after = run(poll_all(fleet.url, [started, waiting]))
    assert after[waiting.device_id].status_code == 204
    assert after[started.device_id].status_code in (200, 304)
    log = fleet.admin.audit()
    actions = [(e["actor"], e["action"], e["target"]) for e in reversed(log) if e["target"] == "ops"]
    assert actions == [("alice", a, "ops") for a in ("create", "start", "pause", "resume", "abort")]
    assert any(e["detail"] == "weekend" for e in log)


def test_reports_are_idempotent(fleet: Fleet, bundles) -> None:
    upload_releases(fleet, bundles)
    (d,) = run(enrol_all(fleet.url, 1))

    async def twice() -> list[dict]:
        async with httpx.AsyncClient(base_url=fleet.url) as http:
            d.http = http
            return [await d.report("r2", "downloaded", key="same-key") for _ in range(2)]

    first, second = run(twice())
    assert first == {"accepted": True, "duplicate": False} and second["duplicate"] is True
    assert fleet.count(m.reports) == 1


def test_download_resumes_with_range_and_carries_the_digest(fleet: Fleet, bundles) -> None:
    upload_releases(fleet, bundles)
    devices = run(enrol_all(fleet.url, 2))
    fleet.admin.create_rollout("r2", rollout_id="dl", policy=fast_policy())
    fleet.admin.verb("dl", "start")
    polls = run(poll_all(fleet.url, devices))
    d = next(x for x in devices if polls[x.device_id].status_code == 200)
    a = polls[d.device_id].json()

    async def fetch() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=fleet.url) as http:
            d.http = http
            return await d.download(a["url"]), await d.download(a["url"], start=1000), await d.poll()

    whole, rest, again = run(fetch())
    assert whole.headers["X-Bundle-SHA256"] == a["sha256"] == hashlib.sha256(whole.content).hexdigest()
    assert whole.headers["Repr-Digest"].startswith("sha-256=:")
    assert rest.status_code == 206 and rest.content == whole.content[1000:]
    assert again.status_code == 304  # same ETag: nothing new to say


def test_rollout_resumes_from_the_store_after_a_restart(fleet: Fleet, bundles) -> None:
    upload_releases(fleet, bundles)
    devices = run(enrol_all(fleet.url, 40))
    fleet.admin.create_rollout("r2", rollback_release_id="r1b", rollout_id="crash")
    fleet.admin.verb("crash", "start")
    run(install(fleet.url, devices, run(poll_all(fleet.url, devices))))
    fleet.clock.advance(61)
    assert fleet.admin.step("crash").decision == "advance"
    before = fleet.count(m.rollout_members)
    # a second server on the same database (the first could have died here) carries on
    with serve_in_thread(create_app(fleet.settings, clock=fleet.clock)) as url2, FleetAdmin(url2, ADMIN) as admin2:
        state, report = admin2.status("crash")
        assert state.status == "running" and state.group_index == 1 and report.counts.assigned == before
        assert admin2.step("crash").decision == "wait"  # soak restarted with the group; nothing reassigned
        assert fleet.count(m.rollout_members) == before


# -- schema ----------------------------------------------------------------------------------------
def test_migrations_build_exactly_the_models_and_are_idempotent(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(db_url)
    try:
        assert migrate(engine) == "0006" and migrate(engine) == "0006"
        with engine.connect() as c:
            diff = compare_metadata(MigrationContext.configure(c), m.metadata)
        assert diff == []
        if db_url.startswith("sqlite"):
            with engine.connect() as c:
                assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


def test_upgrade_packs_the_telemetry_already_stored(db_url: str) -> None:
    """0002 adds telemetry.packed; windows stored before it are packed from their JSON."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import column, insert, table

    from tinymlops.fleet.store import MIGRATIONS
    from tinymlops.fleet.telemetry import pack

    engine = make_engine(db_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    windows = [telemetry(1, 300), telemetry(2, 120, latency_bin=9, classes=(1, 2, 3))]
    try:
        with engine.connect().execution_options(write=True) as c:
            config.attributes["connection"] = c
            command.upgrade(config, "0001")
            c.execute(
                insert(m.devices).values(
                    id="d",
                    device_class="m4",
                    credential_hash="0" * 64,
                    enrolled_at=T0,
                    current_sequence=1,
                    slot_state="confirmed",
                )
            )
            before = [col for col in m.telemetry.c if col.name not in ("id", "packed")]  # the 0001 columns
            c.execute(
                insert(table("telemetry", *(column(col.name, col.type) for col in before))),
                [
                    dict(
                        device_id="d",
                        sequence=t.sequence,
                        window_start=t.window_start,
                        window_end=t.window_end,
                        received_at=T0,
                        body=t.model_dump_json(),
                    )
                    for t in windows
                ],
            )
            c.commit()
        assert migrate(engine) == "0006"
        with engine.connect() as c:
            stored = c.execute(select(m.telemetry.c.packed).order_by(m.telemetry.c.id)).scalars().all()
        assert stored == [pack(t) for t in windows]
    finally:
        engine.dispose()


def test_cli_migrate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tinymlops import cli

    monkeypatch.setenv("TINYMLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TINYMLOPS_FLEET_DB_URL", raising=False)
    monkeypatch.setattr(sys, "argv", ["tinymlops", "fleet", "migrate", "--root", str(Path(__file__).parents[2])])
    monkeypatch.setitem(cli.common.state, "debug", False)
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code in (0, None)
    assert "at revision 0006" in capsys.readouterr().out
    engine = create_engine(f"sqlite:///{tmp_path / 'home' / 'fleet' / 'fleet.db'}")
    with engine.connect() as c:
        assert c.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0006"
    engine.dispose()
    assert os.environ.get("TINYMLOPS_FLEET_DB_URL") is None


# -- crash safety ----------------------------------------------------------------------------------
def test_sigkill_mid_rollout_loses_no_report_and_assigns_nobody_twice(tmp_path: Path, keys, bundles) -> None:
    """`tinymlops fleet serve` killed with SIGKILL mid-rollout and started again on the same home:
    acknowledged reports survive, a report sent while it was down is accepted on retry (and only
    once), and the rollout carries on without assigning anyone twice."""
    import signal

    from tinymlops.fleet.api.serving import free_port, serve_in_process

    paths, _ = keys
    home = tmp_path / "home"
    env = {
        **os.environ,
        "TINYMLOPS_HOME": str(home),
        "TINYMLOPS_FLEET_ADMIN_TOKENS": f"alice:{ADMIN}",
        "TINYMLOPS_FLEET_PROVISIONING_TOKEN": PROVISION,
        "TINYMLOPS_FLEET_TRUST": str(paths.root_public),
    }
    env.pop("TINYMLOPS_FLEET_DB_URL", None)
    port, args = free_port(), ("--root", str(Path(__file__).parents[2]), "--tick-seconds", "0", "--vendor", "tinymlops")
    policy = fast_policy().model_copy(
        update={"groups": [g.model_copy(update={"min_soak_seconds": 0}) for g in fast_policy().groups]}
    )
    with serve_in_process(env, port=port, args=args) as (url, proc), FleetAdmin(url, ADMIN) as ops:
        for (release, device_class), path in bundles.items():
            ops.upload_bundle(release, device_class, path)
        devices = run(enrol_all(url, 40))
        ops.create_rollout("r2", rollback_release_id="r1b", policy=policy, rollout_id="kill")
        ops.verb("kill", "start")
        polls = run(poll_all(url, devices))
        canary = [d for d in devices if polls[d.device_id].status_code == 200]
        for d in canary:
            run(_report(url, d, "downloaded", f"{d.device_id}-downloaded"))
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        proc.wait()  # type: ignore[attr-defined]

    lost = canary[0]
    with pytest.raises(httpx.TransportError):  # the device's report while the server is dead
        run(_report(url, lost, "confirmed", "confirm-while-down"))

    with serve_in_process(env, port=port, args=args) as (url, _), FleetAdmin(url, ADMIN) as ops:
        state, report = ops.status("kill")
        assert state.status == "running" and report.counts.assigned == len(canary) == 2
        store = Store.open(f"sqlite:///{home / 'fleet' / 'fleet.db'}")
        with store.engine.connect() as c:
            kept = c.execute(select(func.count()).select_from(m.reports)).scalar_one()
        assert kept == len(canary)  # every acknowledged report survived the kill
        first = run(_report(url, lost, "confirmed", "confirm-while-down"))  # the device retries
        again = run(_report(url, lost, "confirmed", "confirm-while-down"))
        assert first["duplicate"] is False and again["duplicate"] is True
        for d in devices:
            d.etag = None  # they reboot too: ask afresh, then finish the install they were doing
        run(install(url, devices, run(poll_all(url, devices)), end=datetime.now(timezone.utc)))
        step = ops.step("kill")
        assert step.decision == "advance", step.reason
        with store.engine.connect() as c:
            members = c.execute(select(m.rollout_members.c.device_id)).scalars().all()
        assert len(members) == len(set(members)) == 20  # 50 % of each class, nobody twice
        store.close()


async def _report(url: str, d: AsyncDevice, stage: str, key: str) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        d.http = http
        return await d.report("r2", stage, key=key)


def test_cli_serve_refuses_a_missing_trust_anchor_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tinymlops import cli

    monkeypatch.setenv("TINYMLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TINYMLOPS_FLEET_DB_URL", raising=False)
    missing = tmp_path / "nowhere" / "root.pub"
    argv = ["tinymlops", "fleet", "serve", "--root", str(Path(__file__).parents[2]), "--trust", str(missing)]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setitem(cli.common.state, "debug", False)
    with pytest.raises(SystemExit) as done:
        cli.main()
    err = capsys.readouterr().err
    assert done.value.code == 1 and "Traceback" not in err
    assert err.strip() == f"error: {missing}: trust anchor file not found"
    assert not (tmp_path / "home" / "fleet" / "fleet.db").exists()  # nothing created


def test_an_install_log_is_reported_in_one_request_and_retries_are_safe(fleet: Fleet, bundles) -> None:
    upload_releases(fleet, bundles)
    devices = run(enrol_all(fleet.url, 20))
    fleet.admin.create_rollout("r2", rollback_release_id="r1b", rollout_id="batch")
    fleet.admin.verb("batch", "start")
    polls = run(poll_all(fleet.url, devices))
    d = next(x for x in devices if polls[x.device_id].status_code == 200)
    log = [("r2", stage, None, f"k-{stage}") for stage in ("downloaded", "verified", "installed", "confirmed")]

    async def send() -> list[dict]:
        async with httpx.AsyncClient(base_url=fleet.url) as http:
            d.http = http
            return [await d.report_many(log), await d.report_many(log)]

    first, again = run(send())
    assert first == {"accepted": True, "duplicate": [False] * 4} and again["duplicate"] == [True] * 4
    assert fleet.count(m.reports) == 4
    assert fleet.admin.status("batch")[1].counts.confirmed == 1
    with fleet.store.engine.connect() as c:
        row = c.execute(select(m.devices).where(m.devices.c.id == d.device_id)).one()
    assert (row.current_sequence, row.slot_state) == (2, "confirmed")
