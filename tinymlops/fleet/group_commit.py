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
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """`await batcher.submit(row)` → the row's result; `write(rows)` (blocking, one transaction) runs
    in a worker thread and returns one result per row, or None when rows have none."""

    def __init__(self, write: Callable[[Sequence[T]], Sequence[Any] | None], max_batch: int = 500) -> None:
        self._write, self._max = write, max_batch
        self._pending: list[tuple[T, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, row: T) -> Any:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((row, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await done

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            try:
                results = await asyncio.to_thread(self._write, [row for row, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                # One bad row must not fail its neighbours: write them one by one to find it.
                for row, done in batch:
                    try:
                        one = await asyncio.to_thread(self._write, [row])
                    except Exception as error:
                        _settle(done, error)
                    else:
                        _settle(done, None, None if one is None else one[0])
            else:
                for i, (_, done) in enumerate(batch):
                    _settle(done, None, None if results is None else results[i])


def _settle(done: asyncio.Future[Any], error: BaseException | None, result: Any = None) -> None:
    if done.done():  # the caller has gone (client disconnected); its row is stored anyway
        return
    if error is None:
        done.set_result(result)
    else:
        done.set_exception(error)
