"""What lets a simulated rollout run the fleet server in processes of its own: the shared
accelerated clock, serve_fleet's worker processes, the simulator's lean HTTP client, and the
server's group commit for telemetry."""

from __future__ import annotations

import asyncio
import secrets
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tinymlops.fleet import FleetError
from tinymlops.fleet import models as m
from tinymlops.fleet.api.serving import serve_fleet
from tinymlops.fleet.clock import SharedClock
from tinymlops.fleet.config import FleetSettings
from tinymlops.fleet.group_commit import GroupCommit
from tinymlops.fleet.store import Store
from tinymlops.fleetsim.lean_http import LeanClient

T0 = datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def test_shared_clock_moves_for_every_reader(tmp_path: Path) -> None:
    clock = SharedClock.create(tmp_path / "clock", T0)
    reader = SharedClock(tmp_path / "clock")  # what a server process maps
    assert reader() == T0  # microseconds survive
    clock.now += timedelta(hours=1, seconds=1)
    assert reader.now == T0 + timedelta(hours=1, seconds=1)
    with pytest.raises(FleetError, match="must be timezone-aware"):
        clock.now = datetime(2026, 1, 1)
    (tmp_path / "junk").write_bytes(b"not a clock")
    with pytest.raises(FleetError, match="not a shared clock file"):
        SharedClock(tmp_path / "junk")


def test_server_processes_share_the_store_and_the_simulated_clock(tmp_path: Path) -> None:
    """Two server processes behind one port; whichever answers, it stamps the simulation's time."""
    clock = SharedClock.create(tmp_path / "clock", T0)
    provisioning = secrets.token_hex(16)
    settings = FleetSettings(
        db_url=f"sqlite:///{tmp_path / 'fleet.db'}",
        bundle_dir=tmp_path / "bundles",
        provisioning_token=provisioning,
        tick_seconds=None,
        clock_file=clock.path,
    )
    auth = {"Authorization": f"Bearer {provisioning}"}
    with serve_fleet(settings, workers=2) as url:
        for i in range(6):  # a connection each: the kernel spreads them over both processes
            body = {"device_id": f"d{i}", "device_class": "m4"}
            assert httpx.post(f"{url}/v1/enrol", json=body, headers=auth).status_code == 201
        clock.now = T0 + timedelta(days=1)
        assert httpx.post(f"{url}/v1/enrol", json={"device_id": "late", "device_class": "m4"}, headers=auth).is_success
    store = Store.open(settings.db_url)
    with store.engine.connect() as c:
        stamps = dict(c.execute(select(m.devices.c.id, m.devices.c.enrolled_at)).all())
    store.close()
    assert len(stamps) == 7 and stamps.pop("late").replace(tzinfo=timezone.utc) == T0 + timedelta(days=1)
    assert {t.replace(tzinfo=timezone.utc) for t in stamps.values()} == {T0}


def test_server_process_that_cannot_start_says_why(tmp_path: Path) -> None:
    settings = FleetSettings(db_url=f"sqlite:///{tmp_path / 'fleet.db'}", bundle_dir=tmp_path / "b")
    broken = settings.model_copy(update={"clock_file": tmp_path / "no-clock"})
    with pytest.raises(FleetError, match="did not start: .*no-clock: shared clock file not found"):
        with serve_fleet(broken):
            pass


async def _one_answer_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server that answers once (chunked), then closes without saying so, as an idle kept-alive
    connection is closed."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    await writer.drain()
    writer.close()


def test_lean_client_reads_chunked_bodies_and_survives_a_closed_keep_alive() -> None:
    async def scenario() -> list[bytes]:
        server = await asyncio.start_server(_one_answer_per_connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, LeanClient(f"http://127.0.0.1:{port}", connections=1) as http:
            first = await http.get("/a")
            await asyncio.sleep(0.05)  # the server has closed that connection meanwhile
            second = await http.post("/b", json={"x": 1})
        return [first.content, second.content]

    assert asyncio.run(scenario()) == [b"abcde", b"abcde"]


def test_lean_client_raises_httpx_transport_errors() -> None:
    async def refused() -> None:
        async with LeanClient("http://127.0.0.1:1") as http:
            await http.get("/")

    with pytest.raises(httpx.ConnectError):
        asyncio.run(refused())


def test_group_commit_writes_together_and_fails_only_the_bad_row() -> None:
    batches: list[list[int]] = []
    gate = threading.Event()

    def write(rows: list[int]) -> None:
        gate.wait(5)  # the first batch is slow: the rest queue up behind it
        if 13 in rows:
            raise ValueError("row 13 refused")
        batches.append(list(rows))

    async def scenario() -> list[object]:
        commit = GroupCommit(write)
        first = asyncio.create_task(commit.submit(0))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(commit.submit(i)) for i in (1, 2, 3)]
        gate.set()
        done = await asyncio.gather(first, *queued)
        mixed = await asyncio.gather(commit.submit(13), commit.submit(4), return_exceptions=True)
        return [*done, *mixed]

    results = asyncio.run(scenario())
    assert results[:4] == [None] * 4 and isinstance(results[4], ValueError) and results[5] is None
    assert batches == [[0], [1, 2, 3], [4]]  # one transaction for the three queued; 13 never stored


def test_group_commit_hands_each_caller_its_own_result() -> None:
    """Batched install logs: each report request learns which of its reports were new, even when
    its log shares a transaction with others, and even when a bad neighbour splits the batch."""

    def write(rows):  # type: ignore[no-untyped-def]
        if any(r < 0 for r in rows):
            raise ValueError("negative")
        return [r * 10 for r in rows]

    async def scenario() -> list[object]:
        commit = GroupCommit(write)
        together = await asyncio.gather(*(commit.submit(i) for i in (1, 2, 3)))
        split = await asyncio.gather(commit.submit(4), commit.submit(-1), commit.submit(5), return_exceptions=True)
        return [*together, *split]

    results = asyncio.run(scenario())
    assert results[:3] == [10, 20, 30] and results[3] == 40 and isinstance(results[4], ValueError)
    assert results[5] == 50
