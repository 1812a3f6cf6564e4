"""Group commit: rows that concurrent requests want stored are written together, one transaction
for all that arrived while the previous one was being written.

A caller's `submit` returns only once a transaction holding its row has committed, so an
acknowledgement still means "stored". Nothing waits on a timer: a lone row is written at once, and
under load the batches grow by themselves. Each transaction costs the store far more than each
row in it (SQLAlchemy and a commit per request), which is what a fleet of devices sending
telemetry at once would otherwise pay per window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """`await batcher.submit(row)`; `write(rows)` (blocking, one transaction) runs in a worker thread."""

    def __init__(self, write: Callable[[Sequence[T]], None], max_batch: int = 500) -> None:
        self._write, self._max = write, max_batch
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, row: T) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await done

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            try:
                await asyncio.to_thread(self._write, [row for row, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                # One bad row must not fail its neighbours: write them one by one to find it.
                for row, done in batch:
                    try:
                        await asyncio.to_thread(self._write, [row])
                    except Exception as one:
                        _settle(done, one)
                    else:
                        _settle(done, None)
            else:
                for _, done in batch:
                    _settle(done, None)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():  # the caller has gone (client disconnected); its row is stored anyway
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
