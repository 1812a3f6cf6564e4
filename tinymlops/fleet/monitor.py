"""The monitor: production telemetry against each release's baseline, over the store.

Each check takes every baseline whose class and model some device runs, aggregates the trailing
window of production telemetry under the rollout gates' trust rules (only devices the server knows
run that model, windows bounded in time and by physics, trimmed per-device means), scores it
(tinymlops.fleet.monitoring), keeps the scores (drift over time), stores new alarms and emits a
Prefect event for each alarm not yet sent (retried on the next check until accepted)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from tinymlops.fleet.monitoring import Assessment, Baseline, DriftAlarm, alarms_for, assess
from tinymlops.fleet.store import Store
from tinymlops.fleet.telemetry import Aggregate, Window, robust_side
from tinymlops.settings.monitoring import MonitoringConfig

log = logging.getLogger("tinymlops.fleet.monitor")
Emit = Callable[[DriftAlarm], None]


class MonitorService:
    def __init__(
        self,
        store: Store,
        config: MonitoringConfig,
        clock: Callable[[], datetime],
        min_latency_ms: Callable[[str], float],
        skew: timedelta,
        emit: Emit | None = None,
        alarm_url: Callable[[str], str | None] = lambda _id: None,
    ) -> None:
        self.store, self.config, self.clock = store, config, clock
        self.min_latency_ms, self.skew, self.emit, self.alarm_url = min_latency_ms, skew, emit, alarm_url

    # -- baselines ----------------------------------------------------------------------------------
    def put_baseline(self, baseline: Baseline, actor: str) -> None:
        self.store.put_baseline(baseline.model_dump(mode="json"), actor, self.clock())

    def baselines(self) -> list[Baseline]:
        return [Baseline.model_validate(b) for b in self.store.baselines()]

    def baseline(self, device_class: str, sequence: int) -> Baseline | None:
        return next((b for b in self.baselines() if (b.device_class, b.sequence) == (device_class, sequence)), None)

    # -- production ---------------------------------------------------------------------------------
    def production(self, device_class: str, sequence: int, until: datetime, hours: float | None = None) -> Aggregate:
        """The robust aggregate of one class and model over `hours` (the configured window) up to `until`."""
        span = timedelta(hours=hours or self.config.window_hours)
        since = until - span
        rows = self.store.production_windows(device_class, sequence, since, until + self.skew)
        floor = self.min_latency_ms(device_class)
        windows = [Window(d, packed, (end - start).total_seconds(), floor) for d, _k, packed, start, end in rows]
        return robust_side(windows, (span + self.skew).total_seconds())

    def check(self) -> list[Assessment]:
        """Score every live class and model, store the scores and new alarms, send pending events."""
        now = self.clock()
        running = self.store.running()
        out: list[Assessment] = []
        for baseline in self.baselines():
            if running.get((baseline.device_class, baseline.sequence), 0) == 0:
                continue
            assessment = assess(
                baseline,
                self.production(baseline.device_class, baseline.sequence, now),
                self.config.thresholds,
                now,
                min_inferences=self.config.min_inferences,
                min_devices=self.config.min_devices,
            )
            out.append(assessment)
            if not assessment.judged:
                continue
            self.store.add_scores(
                [
                    dict(
                        at=now,
                        device_class=assessment.device_class,
                        sequence=assessment.sequence,
                        kind=s.kind,
                        value=s.value,
                        threshold=s.threshold,
                        devices=assessment.devices,
                        inferences=assessment.inferences,
                    )
                    for s in assessment.scores
                ]
            )
            open_kinds = self.store.open_alarm_kinds(baseline.device_class, baseline.sequence)
            new = [
                a.model_copy(update={"url": self.alarm_url(a.id)}) for a in alarms_for(assessment, baseline, open_kinds)
            ]
            if new:
                for body in self.store.add_alarms([a.model_dump(mode="json") for a in new], now):
                    log.warning("drift alarm %s: %s", body["id"], DriftAlarm.model_validate(body).summary)
        self.send_pending()
        return out

    def send_pending(self) -> int:
        """Emit the event of every open alarm not yet accepted by Prefect; → how many were sent."""
        if self.emit is None:
            return 0
        sent = 0
        for body in self.store.unemitted_alarms():
            alarm = DriftAlarm.model_validate(body)
            try:
                self.emit(alarm)
            except Exception as exc:  # Prefect down or refusing: keep it pending, say why
                self.store.mark_emitted(alarm.id, None, f"{type(exc).__name__}: {exc}")
                log.warning("drift alarm %s: event not sent (%s); retrying on the next check", alarm.id, exc)
                continue
            self.store.mark_emitted(alarm.id, self.clock(), None)
            sent += 1
        return sent

    # -- alarms -------------------------------------------------------------------------------------
    def alarms(self, *, status: str | None = None, device_class: str | None = None, limit: int = 100) -> list[dict]:
        return self.store.alarms(status=status, device_class=device_class, limit=limit)

    def set_alarm_status(self, alarm_id: str, status: str, actor: str) -> dict:
        self.store.set_alarm_status(alarm_id, status, actor, self.clock())
        return self.store.alarm(alarm_id)

    def history(self, device_class: str, days: float = 14) -> list[dict]:
        return self.store.drift_history(device_class, self.clock() - timedelta(days=days))
