"""HTTP clients for the fleet server: the admin side (a Prefect flow or a script drives rollouts
with it) and the device side (the simulator and load tests poll with it)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from datetime import datetime
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

    def releases(self, model_version: str | None = None) -> list[dict[str, Any]]:
        """Every stored release (page by page) with its sequence and the classes it has bundles for."""
        params = {"model_version": model_version} if model_version else {}
        return self._all("/v1/admin/releases", params)

    def rollouts(self, status: str | None = None, release_id: str | None = None) -> list[dict[str, Any]]:
        """Every rollout (page by page), filtered by status and release."""
        params = {k: v for k, v in (("status", status), ("release_id", release_id)) if v}
        return self._all("/v1/admin/rollouts", params)

    def devices(self, device_class: str | None = None, sequence: int | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"class": device_class} if device_class else {}
        if sequence is not None:
            params["sequence"] = sequence
        return self._all("/v1/admin/devices", params)

    def _all(self, path: str, params: dict[str, Any], limit: int = 1000) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = _check(self._http.get(path, params={**params, "limit": limit, "offset": len(items)})).json()
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
                return items

    def create_rollout(
        self,
        release_id: str,
        rollback_release_id: str | None = None,
        policy: RolloutPolicy | None = None,
        rollout_id: str | None = None,
        supersedes: str | None = None,
        links: dict[str, str] | None = None,
    ) -> RolloutState:
        body: dict[str, Any] = {"release_id": release_id, "rollback_release_id": rollback_release_id}
        if links:
            body["links"] = links
        if supersedes is not None:
            body["supersedes"] = supersedes
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

    def timeline(self, rollout_id: str) -> dict[str, Any]:
        """tinymlops.fleet.timeline.RolloutTimeline as JSON: per group, its devices' states over time."""
        return _check(self._http.get(f"/v1/admin/rollouts/{rollout_id}/timeline")).json()

    # -- identity and usage ------------------------------------------------------------------------
    def create_token(
        self, batch: str, classes: list[str], expires_at: datetime, max_uses: int, customer: str | None = None
    ) -> str:
        """A provisioning token for one batch (returned once)."""
        body = {"batch": batch, "classes": classes, "expires_at": expires_at.isoformat(), "max_uses": max_uses}
        if customer is not None:
            body["customer"] = customer
        return _check(self._http.post("/v1/admin/provisioning-tokens", json=body)).json()["token"]

    def tokens(self) -> list[dict[str, Any]]:
        return _check(self._http.get("/v1/admin/provisioning-tokens")).json()

    def revoke_token(self, batch: str) -> None:
        _check(self._http.delete(f"/v1/admin/provisioning-tokens/{batch}"))

    def usage(self, customer: str | None = None) -> dict[str, Any]:
        params = {"customer": customer} if customer else {}
        return _check(self._http.get("/v1/admin/usage", params=params)).json()

    def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        return _check(self._http.get("/v1/admin/audit", params={"limit": limit})).json()

    # -- production monitoring -------------------------------------------------------------------
    def put_baseline(self, baseline: dict[str, Any]) -> None:
        """A release's baseline for one class and model (tinymlops.fleet.monitoring.Baseline as JSON)."""
        _check(self._http.put("/v1/admin/baselines", json=baseline))

    def alarms(self, status: str | None = None, device_class: str | None = None, limit: int = 100) -> list[dict]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if device_class:
            params["class"] = device_class
        return _check(self._http.get("/v1/admin/alarms", params=params)).json()

    def alarm_action(self, alarm_id: str, action: str) -> dict[str, Any]:
        return _check(self._http.post(f"/v1/admin/alarms/{alarm_id}/{action}")).json()

    def check_drift(self) -> list[dict[str, Any]]:
        return _check(self._http.post("/v1/admin/monitoring/check")).json()


class AsyncDevice:
    """One device's side of the protocol over a shared httpx.AsyncClient."""

    def __init__(self, http: httpx.AsyncClient, device_id: str, device_class: str) -> None:
        self.http, self.device_id, self.device_class = http, device_id, device_class
        self.credential: str | None = None
        self.sequence, self.slot, self.etag = 0, "unknown", None

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}

    async def enrol(self, provisioning_token: str, public_key: bytes | None = None, ueid: bytes | None = None) -> None:
        """With attestation: the device's Ed25519 public key and 16-byte device id go along."""
        body: dict[str, str] = {"device_id": self.device_id, "device_class": self.device_class}
        if public_key is not None and ueid is not None:
            body |= {"public_key": public_key.hex(), "ueid": ueid.hex()}
        r = await self.http.post("/v1/enrol", json=body, headers={"Authorization": f"Bearer {provisioning_token}"})
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

    async def report_many(self, reports: list[tuple[str, str, str | None, str]], evidence: bytes | None = None) -> dict:
        """(release, stage, reason, idempotency key) reports in order, in one request; `evidence`
        (a signed evidence report) goes with the "confirmed" one."""
        proof = base64.b64encode(evidence).decode() if evidence is not None else None
        body = {
            "reports": [
                {"idempotency_key": key, "release_id": release_id, "stage": stage, "reason": reason}
                | ({"evidence": proof} if proof is not None and stage == "confirmed" else {})
                for release_id, stage, reason, key in reports
            ]
        }
        r = await self.http.post(f"/v1/devices/{self.device_id}/reports/batch", json=body, headers=self._auth)
        return _check(r).json()

    async def telemetry(self, aggregate: TelemetryAggregate, sign: Callable[[bytes], bytes] | None = None) -> None:
        """One window; with `sign` (the device key's COSE_Sign1 over the JSON) as application/cose."""
        body = aggregate.model_dump_json().encode()
        if sign is not None:
            body, kind = sign(body), "application/cose"
        else:
            kind = "application/json"
        r = await self.http.post(
            f"/v1/devices/{self.device_id}/telemetry", content=body, headers={**self._auth, "Content-Type": kind}
        )
        _check(r)
