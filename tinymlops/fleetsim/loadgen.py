"""A lean poll load generator: raw HTTP/1.1 keep-alive over asyncio streams, one connection per
simulated device. httpx's pool scans every connection per request, which at a thousand
connections costs more than the server being measured."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class PollConnection:
    host: str
    port: int
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def poll(self, device_id: str, credential: str, sequence: int = 0, slot: str = "unknown") -> int:
        """One assignment poll → HTTP status (body read and dropped)."""
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            f"GET /v1/devices/{device_id}/assignment?sequence={sequence}&slot={slot} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\nAuthorization: Bearer {credential}\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                if length:
                    await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class PollStats:
    statuses: dict[int | str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def add(self, status: int | str, seconds: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies.append(seconds)


async def swarm(host: str, port: int, devices: list[tuple[str, str]], rounds: int) -> PollStats:
    """Every device opens its own connection, then all poll `rounds` times at once."""
    stats = PollStats()
    conns = [PollConnection(host, port) for _ in devices]
    await asyncio.gather(*(c.open() for c in conns))
    go = asyncio.Event()

    async def device(conn: PollConnection, device_id: str, credential: str) -> None:
        await go.wait()
        for _ in range(rounds):
            t0 = time.perf_counter()
            try:
                status: int | str = await conn.poll(device_id, credential)
            except (OSError, asyncio.IncompleteReadError) as exc:
                status = type(exc).__name__
            stats.add(status, time.perf_counter() - t0)

    tasks = [asyncio.create_task(device(c, d, k)) for c, (d, k) in zip(conns, devices, strict=True)]
    await asyncio.sleep(0)
    go.set()
    await asyncio.gather(*tasks)
    for c in conns:
        c.close()
    return stats
