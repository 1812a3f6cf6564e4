"""Prefect events from the fleet server, over plain HTTP (`POST {api}/events`, what OSS Prefect's
own `emit_event` ends up calling): the fleet library never imports Prefect. A drift alarm becomes
one event whose payload carries the alarm; prefect.yaml's deployment trigger matches it and starts
`pipeline/retrain-on-drift` with the alarm as its typed parameter."""

from __future__ import annotations

import uuid

import httpx

from tinymlops.fleet.monitoring import DriftAlarm

RESOURCE = "tinymlops.fleet.alarm"


def alarm_event(alarm: DriftAlarm, event: str) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "occurred": alarm.raised_at.isoformat(),
        "event": event,
        "resource": {
            "prefect.resource.id": f"{RESOURCE}.{alarm.id}",
            "prefect.resource.name": alarm.summary,
            "tinymlops.device-class": alarm.device_class,
            "tinymlops.drift-kind": alarm.kind,
        },
        "related": [],
        "payload": {"alarm": alarm.model_dump(mode="json")},
    }


class PrefectEvents:
    """Sends events to a Prefect API (e.g. http://127.0.0.1:4200/api). Raises on any failure: the
    caller keeps the alarm unsent and retries on its next check."""

    def __init__(self, api_url: str, event: str, timeout: float = 10.0) -> None:
        self.url = api_url.rstrip("/") + "/events"
        self.event = event
        self.timeout = timeout

    def __call__(self, alarm: DriftAlarm) -> None:
        reply = httpx.post(self.url, json=[alarm_event(alarm, self.event)], timeout=self.timeout)
        if reply.status_code >= 300:
            raise RuntimeError(f"Prefect refused the event: HTTP {reply.status_code} {reply.text[:200]}")
