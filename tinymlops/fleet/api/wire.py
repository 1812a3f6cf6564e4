"""What travels over HTTP: request and response bodies. Every integer is bounded by the column it
is stored in; every name is safe as a path segment and a file name."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tinymlops.fleet.engine import RolloutReport, RolloutState, Status
from tinymlops.fleet.policy import RolloutPolicy
from tinymlops.fleet.telemetry import INT64_MAX

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # ids that are safe as path segments and file names
LINK_NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$"
LINK = r"^https?://[^\s<>\"']+$"  # only http(s): never javascript: or data: in a dashboard link
SlotState = Literal["unknown", "confirmed", "trial", "reverted", "empty"]


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


HEX_KEY = r"^[0-9a-f]{64}$"


class EnrolRequest(Wire):
    device_id: str = Field(pattern=NAME)
    device_class: str = Field(pattern=NAME)
    public_key: str | None = Field(None, pattern=HEX_KEY, description="the device's Ed25519 public key (hex)")
    ueid: str | None = Field(None, pattern=r"^[0-9a-f]{32}$", description="its 16-byte device id (hex)")


class EnrolResponse(Wire):
    device_id: str
    credential: str  # shown once; the server keeps only its digest


class Assignment(Wire):
    release_id: str
    sequence: int = Field(ge=0, le=INT64_MAX)
    sha256: str
    size: int = Field(ge=0, le=INT64_MAX)
    url: str
    nonce: str | None = Field(None, description="attestation on: the nonce the confirming evidence must carry")


class InstallReport(Wire):
    idempotency_key: str = Field(pattern=NAME)
    release_id: str = Field(pattern=NAME)
    stage: Literal["downloaded", "verified", "installed", "confirmed", "reverted", "failed"]
    reason: str | None = Field(None, max_length=255)
    evidence: str | None = Field(None, max_length=2048, description="base64 COSE_Sign1 evidence (confirmed)")

    @model_validator(mode="after")
    def _failures_say_why(self) -> InstallReport:
        if self.stage in ("failed", "reverted") and not self.reason:
            raise ValueError(f"stage {self.stage} needs a reason")
        return self


class InstallReports(Wire):
    """Several reports in one request, in the order they happened (a device that stores its install
    log and sends it once: fewer round trips per install)."""

    reports: list[InstallReport] = Field(min_length=1, max_length=8)


class Ack(Wire):
    accepted: bool
    duplicate: bool = False


class BatchAck(Wire):
    accepted: bool
    duplicate: list[bool] = Field(description="per report, in order: its idempotency key was seen before")


class BundleInfo(Wire):
    release_id: str
    device_class: str
    sequence: int
    sha256: str
    size: int
    model_name: str
    model_version: str


class CreateRollout(Wire):
    rollout_id: str | None = Field(None, pattern=NAME)
    release_id: str = Field(pattern=NAME)
    rollback_release_id: str | None = Field(None, pattern=NAME)
    policy: RolloutPolicy | None = None
    supersedes: str | None = Field(
        None, pattern=NAME, description="the open rollout of the same classes to abort in favour of this one"
    )
    links: dict[Annotated[str, Field(pattern=LINK_NAME)], Annotated[str, Field(pattern=LINK, max_length=1024)]] = Field(
        default_factory=dict,
        max_length=8,
        description="where the rollout came from ('MLflow run', 'Prefect flow run'): http(s) URLs the dashboard shows",
    )


class VerbRequest(Wire):
    reason: str = Field("", max_length=255)


class RolloutStatus(Wire):
    state: RolloutState
    report: RolloutReport


class AuditEntry(Wire):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: str


class ReleaseInfo(Wire):
    id: str
    sequence: int
    model_name: str
    model_version: str
    created_at: datetime
    created_by: str
    classes: list[str]


class RolloutInfo(Wire):
    id: str
    release_id: str
    rollback_release_id: str | None
    status: Status
    created_at: datetime
    updated_at: datetime


class DeviceInfo(Wire):
    id: str
    device_class: str
    enrolled_at: datetime
    current_sequence: int
    slot_state: str


class Page(Wire):
    total: int = Field(description="how many match the filters")
    limit: int
    offset: int


class ReleasePage(Page):
    items: list[ReleaseInfo]


class RolloutPage(Page):
    items: list[RolloutInfo]


class DevicePage(Page):
    items: list[DeviceInfo]


class TokenCreate(Wire):
    batch: str = Field(pattern=NAME)
    classes: list[str] = Field(min_length=1, max_length=64)
    expires_at: datetime
    max_uses: int = Field(ge=1, le=1_000_000)
    customer: str | None = Field(None, pattern=NAME)

    @model_validator(mode="after")
    def _names(self) -> TokenCreate:
        import re

        if not all(re.match(NAME, c) for c in self.classes):
            raise ValueError("class names must match the id pattern")
        return self


class TokenCreated(Wire):
    batch: str
    token: str = Field(description="shown once; the server keeps only its digest")


class TokenInfo(Wire):
    batch: str
    classes: list[str]
    customer: str | None
    expires_at: datetime
    max_uses: int
    uses: int
    revoked_at: datetime | None
    created_by: str
    created_at: datetime


class UsageDevice(Wire):
    id: str
    device_class: str
    customer: str | None
    inference_count: int | None
    boot_count: int | None = None
    evidence_at: datetime | None
    counter_alarm: str | None


class Usage(Wire):
    devices: list[UsageDevice]
    customers: dict[str, int] = Field(description="inferences per customer, from verified evidence")


class Challenge(Wire):
    nonce: str


class EvidenceAck(Wire):
    inference_count: int
    quota_serial: int
    boot_count: int
