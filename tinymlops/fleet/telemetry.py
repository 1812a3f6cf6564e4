"""Privacy-preserving telemetry: fixed-bin aggregates a device sends, never raw inputs.

Bins are fixed here (not chosen by devices), so aggregates from any device and any window add up
bin by bin, and a canary and its control are always compared on the same grid.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Annotated, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# Upper edges in milliseconds; one more bin catches everything above the last edge.
LATENCY_EDGES_MS: tuple[float, ...] = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 250, 500, 1000)
LATENCY_BINS = len(LATENCY_EDGES_MS) + 1
CONFIDENCE_BINS = 20  # top-1 probability in [0, 1], 0.05 wide
MAX_CLASSES = 256
# pack(): the counters, then the fixed bins, then the class bins (as many as the device sent)
PACKED_HEAD = 5 + LATENCY_BINS + CONFIDENCE_BINS
INT64_MAX = 2**63 - 1  # what the store's BIGINT columns and the packed counts hold
MAX_WINDOW = timedelta(days=1)  # a device sends a window at least daily
Count = Field(0, ge=0, le=INT64_MAX)
# Robust aggregation (see robust_side): each side's per-device distributions are averaged with this
# share trimmed from each end, bin by bin, so k lying devices move a gate by at most their share.
TRIM = 0.2


class ErrorCounters(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    invoke: int = Field(0, ge=0, le=INT64_MAX, description="interpreter Invoke() failures")
    input: int = Field(0, ge=0, le=INT64_MAX, description="sensor frames rejected before inference")
    watchdog: int = Field(0, ge=0, le=INT64_MAX, description="watchdog resets")

    @property
    def total(self) -> int:
        return self.invoke + self.input + self.watchdog

    def __add__(self, other: ErrorCounters) -> ErrorCounters:
        return ErrorCounters(
            invoke=self.invoke + other.invoke, input=self.input + other.input, watchdog=self.watchdog + other.watchdog
        )


class TelemetryAggregate(BaseModel):
    """What one device saw over one window, on one model (`sequence`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    sequence: int = Field(ge=0, le=INT64_MAX, description="manifest sequence of the model that ran")
    window_start: datetime
    window_end: datetime
    inference_count: int = Field(0, ge=0, le=INT64_MAX)
    latency_hist: list[Annotated[int, Field(ge=0, le=INT64_MAX)]] = Field(
        default_factory=lambda: [0] * LATENCY_BINS, min_length=LATENCY_BINS, max_length=LATENCY_BINS
    )
    confidence_hist: list[Annotated[int, Field(ge=0, le=INT64_MAX)]] = Field(
        default_factory=lambda: [0] * CONFIDENCE_BINS, min_length=CONFIDENCE_BINS, max_length=CONFIDENCE_BINS
    )
    class_hist: list[Annotated[int, Field(ge=0, le=INT64_MAX)]] = Field(default_factory=list, max_length=MAX_CLASSES)
    errors: ErrorCounters = ErrorCounters()
    boot_count: int = Field(0, ge=0, le=INT64_MAX)

    @model_validator(mode="before")
    @classmethod
    def _bins_named(cls, data: object) -> object:
        """Wrong bin counts and negative counts get a message that names the field."""
        if isinstance(data, dict):
            for name, width in (("latency_hist", LATENCY_BINS), ("confidence_hist", CONFIDENCE_BINS)):
                if isinstance(data.get(name), list) and len(data[name]) != width:
                    raise ValueError(f"{name} needs {width} bins, got {len(data[name])}")
            for name in ("latency_hist", "confidence_hist", "class_hist"):
                hist = data.get(name)
                if isinstance(hist, list) and any(isinstance(c, int) and c < 0 for c in hist):
                    raise ValueError(f"{name} has a negative count")
        return data

    @model_validator(mode="after")
    def _bins_fit(self) -> TelemetryAggregate:
        if self.window_start.tzinfo is None or self.window_end.tzinfo is None:
            raise ValueError("window_start and window_end need a time zone (UTC)")
        if self.window_end < self.window_start:
            raise ValueError("window_end is before window_start")
        if self.window_end - self.window_start > MAX_WINDOW:
            raise ValueError(f"a window spans at most {MAX_WINDOW.total_seconds():.0f} s")
        if len(self.latency_hist) != LATENCY_BINS:
            raise ValueError(f"latency_hist needs {LATENCY_BINS} bins, got {len(self.latency_hist)}")
        if len(self.confidence_hist) != CONFIDENCE_BINS:
            raise ValueError(f"confidence_hist needs {CONFIDENCE_BINS} bins, got {len(self.confidence_hist)}")
        for name in ("latency_hist", "confidence_hist", "class_hist"):
            hist = getattr(self, name)
            if any(c < 0 for c in hist):
                raise ValueError(f"{name} has a negative count")
            if name != "class_hist" and sum(hist) > self.inference_count:
                raise ValueError(f"{name} counts more than inference_count")
        return self


class Aggregate(BaseModel):
    """Many TelemetryAggregates summed: the side of a canary-vs-control comparison."""

    model_config = ConfigDict(frozen=True)
    devices: int = 0
    inference_count: int = 0
    latency_hist: list[int] = Field(default_factory=lambda: [0] * LATENCY_BINS)
    confidence_hist: list[int] = Field(default_factory=lambda: [0] * CONFIDENCE_BINS)
    class_hist: list[int] = Field(default_factory=list)
    errors: ErrorCounters = ErrorCounters()
    boot_count: int = 0

    @classmethod
    def of(cls, items: list[TelemetryAggregate], devices: int | None = None) -> Aggregate:
        width = max((len(t.class_hist) for t in items), default=0)
        lat, conf, cls_ = [0] * LATENCY_BINS, [0] * CONFIDENCE_BINS, [0] * width
        errors, count, boots = ErrorCounters(), 0, 0
        for t in items:
            _add(lat, t.latency_hist)
            _add(conf, t.confidence_hist)
            _add(cls_, t.class_hist)
            errors, count, boots = errors + t.errors, count + t.inference_count, boots + t.boot_count
        return cls(
            devices=len(items) if devices is None else devices,
            inference_count=count,
            latency_hist=lat,
            confidence_hist=conf,
            class_hist=cls_,
            errors=errors,
            boot_count=boots,
        )

    @classmethod
    def of_packed(cls, packed: Iterable[bytes], devices: int) -> Aggregate:
        """The sum of many pack()ed aggregates, added as int64 vectors (one numpy sum per width)."""
        by_width: dict[int, list[bytes]] = {}
        for blob in packed:
            by_width.setdefault(len(blob), []).append(blob)
        sums = [
            np.frombuffer(b"".join(blobs), "<i8").reshape(len(blobs), -1).sum(axis=0) for blobs in by_width.values()
        ]
        width = max((len(v) for v in sums), default=PACKED_HEAD)
        total = np.zeros(width, dtype=np.int64)
        for v in sums:
            total[: len(v)] += v
        t = [int(x) for x in total]
        lat, conf = 5 + LATENCY_BINS, PACKED_HEAD
        return cls(
            devices=devices,
            inference_count=t[0],
            boot_count=t[1],
            errors=ErrorCounters(invoke=t[2], input=t[3], watchdog=t[4]),
            latency_hist=t[5:lat],
            confidence_hist=t[lat:conf],
            class_hist=t[conf:],
        )

    def latency_quantile(self, q: float) -> float | None:
        """Quantile in ms, linear inside the bin (the open last bin reports its lower edge)."""
        total = sum(self.latency_hist)
        if total == 0:
            return None
        target, seen = q * total, 0.0
        for i, count in enumerate(self.latency_hist):
            if count and seen + count >= target:
                lo = 0.0 if i == 0 else LATENCY_EDGES_MS[i - 1]
                if i >= len(LATENCY_EDGES_MS):
                    return lo
                return lo + (LATENCY_EDGES_MS[i] - lo) * (target - seen) / count
            seen += count
        return LATENCY_EDGES_MS[-1]

    def mean_confidence(self) -> float | None:
        total = sum(self.confidence_hist)
        if total == 0:
            return None
        width = 1.0 / CONFIDENCE_BINS
        return sum((i + 0.5) * width * c for i, c in enumerate(self.confidence_hist)) / total

    def error_rate(self) -> float:
        return self.errors.total / self.inference_count if self.inference_count else 0.0


def pack(t: TelemetryAggregate) -> bytes:
    """The aggregate's counts as little-endian int64 (see PACKED_HEAD): what the store keeps beside
    the JSON, so summing thousands of windows needs no parsing."""
    e, values = t.errors, (*t.latency_hist, *t.confidence_hist, *t.class_hist)
    return struct.pack(f"<{5 + len(values)}q", t.inference_count, t.boot_count, e.invoke, e.input, e.watchdog, *values)


def _add(into: list[int], values: list[int]) -> None:
    for i, v in enumerate(values):
        into[i] += v


def bin_latency(ms: float) -> int:
    for i, edge in enumerate(LATENCY_EDGES_MS):
        if ms <= edge:
            return i
    return len(LATENCY_EDGES_MS)


def bin_confidence(p: float) -> int:
    return min(int(max(p, 0.0) * CONFIDENCE_BINS), CONFIDENCE_BINS - 1)


# -- robust aggregation: what the health gates judge ----------------------------------------------
_LOWER_EDGES_MS = np.array([0.0, *LATENCY_EDGES_MS])  # the least time one inference in each bin took
_SCALE = 1_000_000  # robust distributions become pseudo-counts on this scale (resolution 1e-6)


class Window(NamedTuple):
    """One stored window as the gates see it: whose, its packed counts, how long, and the least
    latency its device class can physically reach. (A tuple: a late tick reads ~100k of them.)"""

    device_id: str
    packed: bytes
    seconds: float
    min_latency_ms: float


def plausible(counts: np.ndarray, seconds: np.ndarray, min_latency_ms: np.ndarray) -> np.ndarray:
    """Rows of packed counts (float64) a device could have produced: no more inferences than the
    window's length ÷ its class's minimum latency, and no more time spent inferring (each latency
    bin's lower edge × its count) than the window lasted."""
    ms = seconds * 1000.0
    busy = counts[:, 5 : 5 + LATENCY_BINS] @ _LOWER_EDGES_MS
    return (counts[:, 0] <= ms / min_latency_ms) & (busy <= ms)


def robust_side(windows: Sequence[Window], period_seconds: float, trim: float = TRIM) -> Aggregate:
    """One side of a canary-vs-control comparison, robust to lying devices.

    Implausible windows are dropped (see `plausible`); a device's windows are summed in float64
    (no int64 wrap-around), and its total is capped at what it could do in `period_seconds`. Then
    every device weighs the same: its histograms become shares, and each bin's share is the
    trimmed mean over devices (`trim` cut from each end). So k devices move a gate by at most
    their share, and not at all while they stay inside the trimmed tails. Returned as an Aggregate
    of pseudo-counts (distributions on a 1e6 scale) with the real, capped inference count."""
    if not windows:
        return Aggregate()
    width = max(len(w.packed) for w in windows) // 8
    counts = np.zeros((len(windows), width), dtype=np.float64)
    for i, w in enumerate(windows):
        row = np.frombuffer(w.packed, "<i8")
        counts[i, : len(row)] = row
    seconds = np.array([w.seconds for w in windows])
    min_latency = np.array([w.min_latency_ms for w in windows])
    ok = plausible(counts, seconds, min_latency) & (counts[:, 0] > 0)
    if not ok.any():
        return Aggregate()
    ids = np.array([w.device_id for w in windows], dtype=object)[ok]
    counts, min_latency = counts[ok], min_latency[ok]
    order = np.argsort(ids, kind="stable")
    ids, counts, min_latency = ids[order], counts[order], min_latency[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    per_device = np.add.reduceat(counts, starts, axis=0)
    cap = period_seconds * 1000.0 / np.minimum.reduceat(min_latency, starts)
    per_device *= np.minimum(1.0, cap / per_device[:, 0])[:, None]  # shares stay, the total is capped
    per_device = per_device[per_device[:, 0] > 0]
    if not len(per_device):
        return Aggregate()

    def shares(block: np.ndarray) -> np.ndarray:
        total = block.sum(axis=1, keepdims=True)
        return np.divide(block, total, out=np.zeros_like(block), where=total > 0)

    def trimmed(block: np.ndarray) -> np.ndarray:
        n = block.shape[0]
        k = int(n * trim)
        return np.sort(block, axis=0)[k : n - k].mean(axis=0)

    def pseudo(block: np.ndarray) -> list[int]:
        m = trimmed(shares(block))
        total = m.sum()
        return [int(round(x)) for x in (m / total * _SCALE if total > 0 else m)]

    n = per_device[:, 0]
    lat, conf = 5 + LATENCY_BINS, PACKED_HEAD
    rates = np.minimum(trimmed(per_device[:, 2:5] / n[:, None]), 1.0)
    inferences = int(n.sum())
    return Aggregate(
        devices=len(per_device),
        inference_count=inferences,
        boot_count=int(per_device[:, 1].sum()),
        errors=ErrorCounters(
            **{k: int(round(r * inferences)) for k, r in zip(("invoke", "input", "watchdog"), rates, strict=True)}
        ),
        latency_hist=pseudo(per_device[:, 5:lat]),
        confidence_hist=pseudo(per_device[:, lat:conf]),
        class_hist=pseudo(per_device[:, conf:]) if width > PACKED_HEAD else [],
    )
