"""HTTP clients for the fleet server: the admin side (a Prefect flow or a script drives rollouts
with it) and the device side (the simulator and load tests poll with it)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from tinymlops.fleet import FleetError
from tinymlops.fleet.engine import RolloutReport, RolloutState
from tinymlops.fleet.policy import RolloutPolicy
from tinymlops.fleet.telemetry import TelemetryAggregate


class FleetHTTPError(FleetError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"fleet server answered {status}: {detail}")
        self.status = status


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        text = detail if isinstance(detail, str) else str(detail)
        raise FleetHTTPError(response.status_code, " ".join(text.split())[:300])
    return response


class FleetAdmin:
    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self._http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    @property
    def base_url(self) -> str:
        return str(self._http.base_url).rstrip("/")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FleetAdmin:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def upload_bundle(self, release_id: str, device_class: str, bundle: Path | str) -> dict[str, Any]:
        with open(bundle, "rb") as f:
            r = self._http.put(
                f"/v1/admin/releases/{release_id}/bundles/{device_class}",
                content=f.read(),
                headers={"Content-Type": "application/octet-stream"},
            )
        return _check(r).json()

    def releases(self) -> list[dict[str, Any]]:
        """Every stored release with its sequence and the classes it has bundles for."""
        return _check(self._http.get("/v1/admin/releases")).json()

    def create_rollout(
        self,
        release_id: str,
        rollback_release_id: str | None = None,
        policy: RolloutPolicy | None = None,
        rollout_id: str | None = None,
    ) -> RolloutState:
        body: dict[str, Any] = {"release_id": release_id, "rollback_release_id": rollback_release_id}
        if policy is not None:
            body["policy"] = policy.model_dump(mode="json")
        if rollout_id is not None:
            body["rollout_id"] = rollout_id
        return RolloutState.model_validate(_check(self._http.post("/v1/admin/rollouts", json=body)).json())

    def verb(self, rollout_id: str, verb: str, reason: str = "") -> RolloutReport:
        r = self._http.post(f"/v1/admin/rollouts/{rollout_id}/{verb}", json={"reason": reason})
        return RolloutReport.model_validate(_check(r).json())

    def step(self, rollout_id: str) -> RolloutReport:
        return RolloutReport.model_validate(_check(self._http.post(f"/v1/admin/rollouts/{rollout_id}/step")).json())

    def status(self, rollout_id: str) -> tuple[RolloutState, RolloutReport]:
        body = _check(self._http.get(f"/v1/admin/rollouts/{rollout_id}")).json()
        return RolloutState.model_validate(body["state"]), RolloutReport.model_validate(body["report"])

    def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        return _check(self._http.get("/v1/admin/audit", params={"limit": limit})).json()


class AsyncDevice:
    """One device's side of the protocol over a shared httpx.AsyncClient."""

    def __init__(self, http: httpx.AsyncClient, device_id: str, device_class: str) -> None:
        self.http, self.device_id, self.device_class = http, device_id, device_class
        self.credential: str | None = None
        self.sequence, self.slot, self.etag = 0, "unknown", None

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}

    async def enrol(self, provisioning_token: str) -> None:
        r = await self.http.post(
            "/v1/enrol",
            json={"device_id": self.device_id, "device_class": self.device_class},
            headers={"Authorization": f"Bearer {provisioning_token}"},
        )
        self.credential = _check(r).json()["credential"]

    async def poll(self) -> httpx.Response:
        headers = dict(self._auth)
        if self.etag:
            headers["If-None-Match"] = self.etag
        r = await self.http.get(
            f"/v1/devices/{self.device_id}/assignment",
            params={"sequence": self.sequence, "slot": self.slot},
            headers=headers,
        )
        if r.status_code == 200:
            self.etag = r.headers.get("ETag")
        return r

    async def download(self, url: str, start: int = 0) -> httpx.Response:
        headers = dict(self._auth)
        if start:
            headers["Range"] = f"bytes={start}-"
        return await self.http.get(url, headers=headers)

    async def report(self, release_id: str, stage: str, reason: str | None = None, key: str | None = None) -> dict:
        body = {"idempotency_key": key or uuid.uuid4().hex, "release_id": release_id, "stage": stage, "reason": reason}
        r = await self.http.post(f"/v1/devices/{self.device_id}/reports", json=body, headers=self._auth)
        return _check(r).json()

    async def telemetry(self, aggregate: TelemetryAggregate) -> None:
        r = await self.http.post(
            f"/v1/devices/{self.device_id}/telemetry",
            content=aggregate.model_dump_json(),
            headers={**self._auth, "Content-Type": "application/json"},
        )
        _check(r)
