"""1,000 devices polling the real fleet server (`tinymlops fleet serve` in its own process) at
once (each on its own connection), mid-rollout: every answer is a 200 or a 204, never a 5xx, and no
connection is refused or dropped."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections import Counter
from pathlib import Path

import pytest

from tinymlops.fleet.api.serving import serve_in_process
from tinymlops.fleet.client import FleetAdmin
from tinymlops.fleetsim.loadgen import swarm

bundle_lib = pytest.importorskip("tinymlops.bundle", reason="bundle library not present")
DEVICES = 1000
ROUNDS = 3


def signed_release(tmp_path: Path) -> tuple[Path, Path]:
    keys = bundle_lib.init_keys(tmp_path / "keys", None)
    signer = bundle_lib.load_signer(tmp_path / "keys", None)
    draft = bundle_lib.ManifestDraft(
        model_name="digits",
        model_version="2",
        sequence=2,
        vendor="tinymlops",
        device_class="m4",
        arena_bytes=20_000,
        ops=["FULLY_CONNECTED"],
    )
    out = tmp_path / "r2.bundle"
    bundle_lib.build_bundle(b"model" * 1000, draft, signer, out)
    return keys.root_public, out


def seed_devices(home: Path) -> list[tuple[str, str]]:
    """Enrol DEVICES devices straight into the store (enrolment over HTTP is tested elsewhere;
    this test is about the polling hot path). → [(device id, credential)]."""
    from datetime import datetime, timezone

    from sqlalchemy import insert

    from tinymlops.fleet import models as m
    from tinymlops.fleet.auth import digest, new_credential
    from tinymlops.fleet.store import Store

    store = Store.open(f"sqlite:///{home / 'fleet' / 'fleet.db'}")
    creds = [(f"load-{i:04d}", new_credential()) for i in range(DEVICES)]
    now = datetime.now(timezone.utc)
    with store.write() as c:
        c.execute(
            insert(m.devices),
            [
                dict(
                    id=d,
                    device_class="m4",
                    credential_hash=digest(k),
                    enrolled_at=now,
                    current_sequence=0,
                    slot_state="unknown",
                )
                for d, k in creds
            ],
        )
    store.close()
    return creds


def test_thousand_concurrent_pollers_get_no_5xx(tmp_path: Path) -> None:
    trust, bundle = signed_release(tmp_path)
    admin = secrets.token_hex(16)
    home = tmp_path / "home"
    creds = seed_devices(home)
    env = {
        **os.environ,
        "TINYMLOPS_HOME": str(home),
        "TINYMLOPS_FLEET_ADMIN_TOKENS": f"ops:{admin}",
        "TINYMLOPS_FLEET_TRUST": str(trust),
    }
    env.pop("TINYMLOPS_FLEET_DB_URL", None)
    root = str(Path(__file__).resolve().parents[2])
    server = ("--root", root, "--tick-seconds", "0", "--vendor", "tinymlops")
    with serve_in_process(env, args=server) as (url, _), FleetAdmin(url, admin) as ops:
        ops.upload_bundle("r2", "m4", bundle)
        ops.create_rollout("r2", rollout_id="load")
        ops.verb("load", "start")  # the canary now has an assignment waiting
        stats = asyncio.run(swarm("127.0.0.1", int(url.rsplit(":", 1)[1]), creds, ROUNDS))
    codes = Counter(stats.statuses)
    assert sum(codes.values()) == DEVICES * ROUNDS, codes
    assert not [c for c in codes if not isinstance(c, int) or c >= 500], codes
    assert set(codes) <= {200, 204}, codes
    # the canary (1 % of the class) is told its assignment each time (these pollers send no ETag);
    # everyone else has nothing to do
    assert codes[200] == 10 * ROUNDS and codes[204] == (DEVICES - 10) * ROUNDS
