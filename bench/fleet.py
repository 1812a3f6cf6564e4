"""Fleet server poll throughput and latency: the hot path devices hit every poll interval.

The server is the real `tinymlops fleet serve` (uvicorn, SQLite WAL under a temp home) in its own
process; the load generator is another process speaking raw HTTP/1.1 keep-alive over asyncio (a
lean client, so the generator is not what we measure). Phases:
  saturate — CONNECTIONS connections polling back to back: the most polls/s the server gives;
  paced    — an open-loop schedule at the goal rate (560 polls/s = 1,000,000 devices at a
             30-minute interval): p50/p99 when the server is asked for exactly that.
Prints the figures, the fleet size supported at a 30-minute interval, and logs them to MLflow.
Usage: python bench/fleet.py [--devices 20000] [--seconds 10] [--connections 32] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import tinymlops  # noqa: F401
from tinymlops.fleetsim.loadgen import PollConnection

REPO = Path(__file__).resolve().parents[1]
POLL_INTERVAL_S = 30 * 60
GOAL_RATE = 560.0
GOAL_P99_MS = 100.0
GOAL_SATURATION = 5600.0  # polls/s on 2 cores: 10,000,000 devices at a 30-minute interval


def seed(home: Path, n: int) -> list[tuple[str, str]]:
    from datetime import datetime, timezone

    from sqlalchemy import insert

    from tinymlops.fleet import models as m
    from tinymlops.fleet.auth import digest, new_credential
    from tinymlops.fleet.store import Store

    store = Store.open(f"sqlite:///{home / 'fleet' / 'fleet.db'}")
    creds = [(f"bench-{i:06d}", new_credential()) for i in range(n)]
    now = datetime.now(timezone.utc)
    rows = [
        dict(
            id=d,
            device_class="m4",
            credential_hash=digest(k),
            enrolled_at=now,
            current_sequence=0,
            slot_state="unknown",
        )
        for d, k in creds
    ]
    with store.write() as c:
        for i in range(0, len(rows), 1000):
            c.execute(insert(m.devices), rows[i : i + 1000])
    store.close()
    return creds


async def _generate(port: int, creds: list, seconds: float, connections: int, rate: float | None) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    interval = connections / rate if rate else 0.0  # each connection's share of the schedule

    async def conn(k: int) -> None:
        c = PollConnection("127.0.0.1", port)
        await c.open()
        due = start + k * (interval / connections if interval else 0)
        while time.perf_counter() < deadline:
            if interval:
                # open loop: latency counts from when the request was due, so queueing shows
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                t0, due = due, due + interval
            else:
                t0 = time.perf_counter()
            code = await c.poll(*random.choice(creds))
            latencies.append(time.perf_counter() - t0)
            statuses[code] = statuses.get(code, 0) + 1
        c.close()

    await asyncio.gather(*(conn(k) for k in range(connections)))
    elapsed = time.perf_counter() - start
    return {"latencies": latencies, "statuses": statuses, "elapsed": elapsed}


def _generator_process(port: int, creds: list, seconds: float, connections: int, rate: float | None, out) -> None:  # type: ignore[no-untyped-def]
    out.put(asyncio.run(_generate(port, creds, seconds, connections, rate)))


def run_phase(port: int, creds: list, seconds: float, connections: int, rate: float | None) -> dict:
    queue: mp.Queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(
        target=_generator_process, args=(port, creds, seconds, connections, rate, queue)
    )
    proc.start()
    result = queue.get()
    proc.join()
    lat = sorted(result["latencies"])
    n = len(lat)

    def q(p: float) -> float:
        return lat[min(n - 1, int(p * n))] * 1000 if n else float("nan")

    errors = sum(c for s, c in result["statuses"].items() if s >= 500)
    # only answered polls count: a fast 4xx (a broken credential check, say) must not look like speed
    refused = sum(c for s, c in result["statuses"].items() if s not in (200, 204, 304) and s < 500)
    answered = n - errors - refused
    return {
        "rate": answered / result["elapsed"],
        "p50_ms": q(0.50),
        "p99_ms": q(0.99),
        "polls": n,
        "5xx": errors,
        "4xx": refused,
    }


def rollout_wall_time(devices: int, work: Path) -> tuple[float, int, str]:
    """A four-group rollout (1 % → 10 % → 50 % → 100 %) of a good release on `devices` simulated
    devices: real server (in-thread), real HTTP, really signed bundles, accelerated clock (one
    simulated minute per round). → (wall seconds, rounds, final status)."""
    from datetime import datetime, timedelta, timezone

    from tinymlops import bundle as bl
    from tinymlops.fleet.api import create_app
    from tinymlops.fleet.api.serving import serve_in_thread
    from tinymlops.fleet.client import FleetAdmin
    from tinymlops.fleet.config import FleetSettings
    from tinymlops.fleet.policy import GroupPolicy, HealthPolicy, RolloutPolicy
    from tinymlops.fleetsim.simulator import SimulationConfig, Simulator, bundle_installer

    t0 = datetime.now(timezone.utc)
    keys = bl.init_keys(work / "keys", None)
    signer = bl.load_signer(work / "keys", None)
    draft = bl.ManifestDraft(
        model_name="bench",
        model_version="2",
        sequence=2,
        vendor="tinymlops",
        device_class="m4",
        arena_bytes=20_000,
        ops=["FULLY_CONNECTED"],
    )
    bl.build_bundle(b"\x01" * 20_000, draft, signer, work / "r2.bundle")  # the server only verifies it
    groups = [
        GroupPolicy(name=n, percent=p, min_soak_seconds=60, min_devices=1, error_threshold=0.05)
        for n, p in (("canary", 1), ("early", 10), ("half", 50), ("all", 100))
    ]
    policy = RolloutPolicy(groups=groups, health=HealthPolicy(min_inferences=200))
    settings = FleetSettings(
        db_url=f"sqlite:///{work / 'rollout.db'}",
        bundle_dir=work / "rollout-bundles",
        admin_tokens={"bench": "t" * 32},
        provisioning_token="p" * 32,
        trust_anchor=keys.root_public,
        tick_seconds=None,
        policy=policy,
    )
    now = [t0]
    app = create_app(settings, clock=lambda: now[0])
    config = SimulationConfig(devices=devices, classes=["m4"], concurrency=48, inferences_per_window=300)
    trust = bl.load_trust(keys.root_public)

    async def go() -> tuple[int, str]:
        async with Simulator(url, "p" * 32, config, bundle_installer(trust)) as sim:
            await sim.enrol()
            admin.create_rollout("r2", rollout_id="bench")
            admin.verb("bench", "start")
            for rounds in range(1, 20):
                now[0] += timedelta(seconds=61)
                await sim.round(now[0])
                report = await asyncio.to_thread(admin.step, "bench")
                if report.status != "running":
                    return rounds, report.status
        return rounds, "running"

    with serve_in_thread(app) as url, FleetAdmin(url, "t" * 32) as admin:
        admin.upload_bundle("r2", "m4", work / "r2.bundle")
        start = time.perf_counter()
        rounds, status = asyncio.run(go())
        return time.perf_counter() - start, rounds, status


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rollout-devices", type=int, default=1000, help="simulated fleet for the rollout wall time")
    args = ap.parse_args()

    from tinymlops.fleet.api.serving import free_port, serve_in_process

    work = Path(tempfile.mkdtemp(prefix="tinymlops-bench-fleet-"))
    home = work / "home"
    creds = seed(home, args.devices)
    env = {**os.environ, "TINYMLOPS_HOME": str(home)}
    env.pop("TINYMLOPS_FLEET_DB_URL", None)
    port = free_port()
    server_args = ("--root", str(REPO), "--tick-seconds", "0", "--vendor", "tinymlops", "--workers", str(args.workers))
    with serve_in_process(env, port=port, args=server_args):
        run_phase(port, creds, 2.0, args.connections, None)  # warm-up: connections, caches
        sat = run_phase(port, creds, args.seconds, args.connections, None)
        paced = run_phase(port, creds, args.seconds, args.connections, GOAL_RATE)

    rollout_s, rollout_rounds, rollout_status = rollout_wall_time(args.rollout_devices, work)
    held = paced["p99_ms"] < GOAL_P99_MS and paced["rate"] >= 0.95 * GOAL_RATE
    # The ceiling is what the server sustains flat out at a 30-minute interval; it is a promise
    # only when the paced run shows the goal rate served with p99 under 100 ms.
    ceiling = int(sat["rate"] * POLL_INTERVAL_S)
    supported = ceiling if held else 0
    print("\n== tinymlops fleet poll benchmark ==")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; server workers {args.workers}")
    print(f"fleet in store: {args.devices:,} devices; generator: {args.connections} keep-alive connections")
    print(
        f"saturation : {sat['rate']:7.0f} polls/s   p50 {sat['p50_ms']:6.1f} ms   p99 {sat['p99_ms']:6.1f} ms   "
        f"5xx {sat['5xx']}   4xx {sat['4xx']}"
    )
    print(
        f"paced {GOAL_RATE:.0f}/s: {paced['rate']:7.0f} polls/s   p50 {paced['p50_ms']:6.1f} ms   "
        f"p99 {paced['p99_ms']:6.1f} ms   5xx {paced['5xx']}   4xx {paced['4xx']}   goal p99 < {GOAL_P99_MS:.0f} ms: "
        f"{'met' if held else 'NOT met'}"
    )
    if held:
        verdict = "met" if sat["rate"] >= GOAL_SATURATION else "NOT met"
        print(
            f"fleet supported at a 30-minute poll interval: {supported:,} devices "
            f"(goal {int(GOAL_SATURATION * POLL_INTERVAL_S):,}, {GOAL_SATURATION:,.0f} polls/s): {verdict}"
        )
    else:
        print(
            f"fleet supported at a 30-minute poll interval: NOT established (p99 goal missed at {GOAL_RATE:.0f}/s); "
            f"saturation ceiling {ceiling:,} devices"
        )
    print(
        f"four-group rollout of {args.rollout_devices:,} simulated devices (enrol included): {rollout_s:.1f} s wall, "
        f"{rollout_rounds} rounds, ended {rollout_status} (goal for 10,000 devices: <= 60 s)"
    )
    figures = {
        "fleet_rollout_devices": float(args.rollout_devices),
        "fleet_rollout_wall_seconds": rollout_s,
        "fleet_poll_saturation_rate": sat["rate"],
        "fleet_poll_saturation_p50_ms": sat["p50_ms"],
        "fleet_poll_saturation_p99_ms": sat["p99_ms"],
        "fleet_poll_paced_rate": paced["rate"],
        "fleet_poll_paced_p50_ms": paced["p50_ms"],
        "fleet_poll_paced_p99_ms": paced["p99_ms"],
        "fleet_supported_devices_30min": float(supported),
        "fleet_ceiling_devices_30min": float(ceiling),
        "fleet_poll_5xx": float(sat["5xx"] + paced["5xx"]),
    }
    try:
        from tinymlops.settings import Environment, TrackingConfig
        from tinymlops.tracking import Tracker

        os.environ.pop("TINYMLOPS_HOME", None)
        env_ = Environment.from_env(REPO)
        tracker = Tracker.start(env_, TrackingConfig(experiment="tinymlops-bench"), "fleet", {"bench": "fleet"})
        tracker.metrics(figures)
        tracker.finish(True)
        print(f"logged to MLflow run {tracker.run_id} ({env_.tracking_uri})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
