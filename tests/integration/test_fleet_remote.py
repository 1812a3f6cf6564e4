"""A rollout driven by URL, as the rollout flow does with `fleet_url`: `tinymlops fleet serve` runs
on its own (a real process, SQLite under its home), simulated devices live on the real clock. The
caller dies mid-rollout, the server is killed with SIGKILL and started again, and following again
resumes the same rollout: nothing re-uploaded, nothing re-created, nobody assigned twice."""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support.bundle_keys import sign_releases
from tinymlops.fleet.api.serving import free_port, serve_in_process
from tinymlops.fleet.client import FleetAdmin
from tinymlops.fleet.engine import RolloutReport
from tinymlops.fleet.policy import GroupPolicy, HealthPolicy, RolloutPolicy
from tinymlops.fleet.remote import follow_rollout
from tinymlops.fleetsim.farm import DeviceFarm
from tinymlops.fleetsim.simulator import SimulationConfig

bundle_lib = pytest.importorskip("tinymlops.bundle", reason="bundle library not present")
from tests.support.paths import REPO  # noqa: E402

ADMIN, PROVISION = "admin-" + secrets.token_hex(8), "prov-" + secrets.token_hex(8)
CLASSES = ("m4", "m7")
POLICY = RolloutPolicy(
    groups=[
        GroupPolicy(name="canary", percent=10, min_soak_seconds=1, min_devices=2),
        GroupPolicy(name="half", percent=50, min_soak_seconds=1, min_devices=2),
        GroupPolicy(name="all", percent=100, min_soak_seconds=1, min_devices=2),
    ],
    health=HealthPolicy(min_inferences=300),
)


class CallerDied(Exception):
    """The flow's process goes away in the middle of following."""


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Signed bundles per class: r2 (sequence 2), and r1b — the old model at sequence 3."""
    work = tmp_path_factory.mktemp("remote")
    keys = bundle_lib.init_keys(work / "keys", None, now=datetime.now(timezone.utc) - timedelta(days=1))
    made = sign_releases(bundle_lib.load_signer(work / "keys", None), work, {"r2": 2, "r1b": 3}, CLASSES)
    by_release: dict[str, dict[str, Path]] = {}
    for (name, device_class), path in made.items():
        by_release.setdefault(name, {})[device_class] = path
    return keys.root_public, by_release


def test_a_crashed_rollout_resumes_from_the_server_after_sigkill(tmp_path: Path, release) -> None:  # type: ignore[no-untyped-def]
    trust, bundles = release
    home = tmp_path / "home"
    env = {
        **os.environ,
        "TINYMLOPS_HOME": str(home),
        "TINYMLOPS_FLEET_ADMIN_TOKENS": f"flow:{ADMIN}",
        "TINYMLOPS_FLEET_PROVISIONING_TOKEN": PROVISION,
        "TINYMLOPS_FLEET_TRUST": str(trust),
    }
    env.pop("TINYMLOPS_FLEET_DB_URL", None)
    port, args = free_port(), ("--root", str(REPO), "--tick-seconds", "0", "--vendor", "tinymlops")
    devices = SimulationConfig(devices=40, classes=list(CLASSES), window_seconds=1, inferences_per_window=200)
    follow = dict(
        rollout_id="r2-resume",
        release_id="r2",
        release_bundles=bundles["r2"],
        rollback_id="r1b",
        rollback_bundles=bundles["r1b"],
        policy=POLICY,
        timeout_seconds=120,
        interval_seconds=0.3,
    )
    seen: list[RolloutReport] = []

    def die_in_the_second_group(report: RolloutReport) -> None:
        seen.append(report)
        if report.group_index >= 1:
            raise CallerDied

    with serve_in_process(env, port=port, args=args) as (url, proc):
        with DeviceFarm(url, PROVISION, devices, trust, interval_seconds=0.3) as farm:
            with FleetAdmin(url, ADMIN) as admin, pytest.raises(CallerDied):
                follow_rollout(admin, **follow, on_report=die_in_the_second_group)  # type: ignore[arg-type]
            assert seen[-1].group_name == "half" and seen[-1].status == "running"
            proc.kill()  # SIGKILL: no shutdown, no flush
            proc.wait()
            with serve_in_process(env, port=port, args=args), FleetAdmin(url, ADMIN) as admin:
                result = follow_rollout(admin, **follow)  # type: ignore[arg-type]
                audit = [e for e in admin.audit(1000) if e["target"] == "r2-resume"]

    assert result.resumed and result.uploaded == [], result
    assert result.status == "succeeded", result.reports[-1].reason
    assert result.reports[-1].counts.assigned == 40 and result.reports[-1].counts.confirmed == 40
    assert [e["action"] for e in audit].count("create") == 1 and [e["action"] for e in audit].count("start") == 1
    engine = create_engine(f"sqlite:///{home / 'fleet' / 'fleet.db'}")
    with engine.connect() as c:
        members = c.execute(text("SELECT device_id FROM rollout_members WHERE rollout_id = 'r2-resume'")).all()
        uploads = c.execute(text("SELECT count(*) FROM release_bundles")).scalar_one()
    engine.dispose()
    assert len(members) == len(set(members)) == 40  # every device once, none twice
    assert uploads == 4  # two releases × two classes, sent once
    assert {d.sequence for d in farm.devices} == {2}  # the whole simulated fleet runs the release


def test_cli_devices_enrol_and_poll_until_told_to_stop(
    tmp_path: Path, release, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.cli_helpers import run_cli
    from tinymlops.device.profiles import load_profiles
    from tinymlops.fleet.api import create_app
    from tinymlops.fleet.api.serving import serve_in_thread
    from tinymlops.fleet.config import FleetSettings

    trust, _ = release
    classes = len({p.device_class for p in load_profiles(REPO)})  # the classes of configs/devices.yaml
    db = tmp_path / "fleet.db"
    settings = FleetSettings(
        db_url=f"sqlite:///{db}", bundle_dir=tmp_path / "bundles", provisioning_token=PROVISION, tick_seconds=None
    )
    monkeypatch.delenv("TINYMLOPS_FLEET_PROVISIONING_TOKEN", raising=False)
    with serve_in_thread(create_app(settings)) as url:
        args = ("fleet", "devices", "--url", url, "--devices", 12, "--trust", trust, "--interval", 0.2)
        code, _, err = run_cli(monkeypatch, capsys, *args, "--seconds", 1, "--root", REPO)
        assert code == 1 and err.strip().count("\n") == 0 and "TINYMLOPS_FLEET_PROVISIONING_TOKEN" in err
        monkeypatch.setenv("TINYMLOPS_FLEET_PROVISIONING_TOKEN", PROVISION)
        code, out, err = run_cli(monkeypatch, capsys, *args, "--seconds", 1.5, "--root", REPO)
        assert code == 0, err
        assert f"12 devices of {classes} classes enrolled" in out and "stopped after" in out
        # a second process of devices shares the server under its own prefix
        code, _, err = run_cli(monkeypatch, capsys, *args, "--seconds", 0.5, "--prefix", "b", "--root", REPO)
        assert code == 0, err
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as c:
        enrolled = c.execute(text("SELECT count(*), count(DISTINCT device_class) FROM devices")).one()
    engine.dispose()
    assert tuple(enrolled) == (24, min(classes, 12))
    assert PROVISION not in out + err  # the token is never printed
