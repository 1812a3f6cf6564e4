"""A simulated clock that several processes share: the simulation moves it, fleet server processes
read it.

A simulated rollout jumps the clock past each group's soak instead of waiting for it. When the
fleet server runs in processes of its own (so it does not share a GIL with the simulated devices),
"now" lives in an 8-byte file (UTC microseconds since the epoch) that each server process maps
once; reading it is a memory load, not a system call. The server only ever reads it, and only when
FleetSettings.clock_file names it: the default is the wall clock.
"""

from __future__ import annotations

import mmap
import os
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tinymlops.fleet import FleetError

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FORMAT = "<q"  # signed 64-bit microseconds: exact, unlike a float of seconds
_SIZE = struct.calcsize(_FORMAT)


def _micros(when: datetime) -> int:
    if when.tzinfo is None:
        raise FleetError("shared clock: time must be timezone-aware (UTC)")
    return (when - _EPOCH) // timedelta(microseconds=1)


class SharedClock:
    """Callable like every fleet clock (→ aware UTC datetime); `now` can be read and set."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            raise FleetError(f"{self.path}: shared clock file not found") from None
        try:
            if os.fstat(fd).st_size != _SIZE:
                raise FleetError(f"{self.path}: not a shared clock file ({_SIZE} bytes expected)")
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)  # the mapping keeps the file open

    @classmethod
    def create(cls, path: Path, start: datetime) -> SharedClock:
        """A new clock file at `path` showing `start`."""
        Path(path).write_bytes(struct.pack(_FORMAT, _micros(start)))
        return cls(path)

    def __call__(self) -> datetime:
        return _EPOCH + timedelta(microseconds=struct.unpack_from(_FORMAT, self._map)[0])

    @property
    def now(self) -> datetime:
        return self()

    @now.setter
    def now(self, when: datetime) -> None:
        # One aligned 8-byte store; the simulation moves the clock between rounds, while nobody reads.
        struct.pack_into(_FORMAT, self._map, 0, _micros(when))

    def close(self) -> None:
        self._map.close()
