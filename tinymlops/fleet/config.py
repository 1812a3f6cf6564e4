"""FleetSettings: what one fleet server runs with — the machine's settings (tinymlops.settings
.FleetEnv: database, secrets, trust anchor) and the project's (configs/rollout.yaml, the vendor of
configs/devices.yaml) — one frozen model, handed to server processes as JSON, never through the
environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from tinymlops.fleet.policy import RolloutPolicy
from tinymlops.settings.monitoring import MonitoringConfig


class FleetSettings(BaseModel):
    """Where the server keeps its state and whom it trusts. Secrets are SecretStr: never printed."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    db_url: str
    bundle_dir: Path
    admin_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    provisioning_token: SecretStr | None = None
    trust_anchor: Path | None = None  # the root public key bundles must chain to
    revocations: Path | None = None  # root-signed revocation list; re-read on every upload
    vendor: str = "tinymlops"
    max_bundle_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_json_bytes: int = Field(64 * 1024, ge=1024, description="limit of every JSON request body")
    tick_seconds: float | None = Field(5.0, gt=0, description="background rollout ticks; None: only on request")
    policy: RolloutPolicy = RolloutPolicy()
    # Physics bounds telemetry: a window holds at most its length ÷ the class's minimum latency
    # inferences. Per class where known; the default is a generous floor (10,000 inferences/s).
    min_latency_ms: dict[str, float] = Field(default_factory=dict)
    default_min_latency_ms: float = Field(0.1, gt=0)
    clock_skew_seconds: float = Field(300, ge=0, description="how far ahead a device's clock may run")
    # Device identity and attestation (tinymlops.fleet.identity): enrolment needs a batch token and
    # the device key; "confirmed" needs fresh evidence; only signed telemetry counts.
    attestation: bool = False
    # Simulations only (never read from the environment): the server's "now" comes from this
    # tinymlops.fleet.clock.SharedClock file, which the simulation moves. None: the wall clock.
    clock_file: Path | None = None
    # Production monitoring (configs/monitoring.yaml) and where its alarms go: a Prefect API URL
    # (TINYMLOPS_FLEET_EVENTS_URL) receives one event per alarm; None: alarms are only stored.
    monitoring: MonitoringConfig = MonitoringConfig()
    events_url: str | None = None
    public_url: str | None = Field(None, description="this server's URL as people reach it (links in alarms)")
    session_hours: float = Field(8, gt=0, le=24 * 7, description="a dashboard login lasts this long")

    def min_latency_for(self, device_class: str) -> float:
        return self.min_latency_ms.get(device_class, self.default_min_latency_ms)

    @classmethod
    def from_env(cls, home: Path, **overrides: Any) -> FleetSettings:
        """The machine's settings (TINYMLOPS_FLEET_*, see tinymlops.settings.FleetEnv) under `home`."""
        from tinymlops.settings import FleetEnv

        env = FleetEnv.from_env(home)
        values: dict[str, Any] = env.model_dump(exclude={"vendor"})
        if env.vendor:
            values["vendor"] = env.vendor
        return cls(**{**values, **overrides})

    @classmethod
    def for_project(cls, root: Path, **overrides: Any) -> FleetSettings:
        """The settings of the project at `root`: its home (TINYMLOPS_HOME or <root>/.tinymlops),
        the environment's TINYMLOPS_FLEET_*, then configs/ (policy; the vendor unless
        TINYMLOPS_FLEET_VENDOR names one), then `overrides` (None values are ignored)."""
        from tinymlops.settings import Environment, FleetEnv

        env = Environment.from_env(root)
        defaults = project_defaults(env.root)
        if FleetEnv.from_env(env.home).vendor:
            defaults.pop("vendor", None)  # set explicitly: it wins over configs/devices.yaml
        return cls.from_env(env.home, **{**defaults, **{k: v for k, v in overrides.items() if v is not None}})


def project_defaults(root: Path) -> dict[str, Any]:
    """What the project at `root` says about its fleet: the rollout policy (configs/rollout.yaml) and
    the vendor that device class ids are derived from (configs/devices.yaml), where present."""
    from tinymlops.device.profiles import load_profiles

    found: dict[str, Any] = {}
    if (Path(root) / "configs" / RolloutPolicy.FILE).is_file():
        found["policy"] = RolloutPolicy.load_from(root)
    if (Path(root) / "configs" / MonitoringConfig.FILE).is_file():
        found["monitoring"] = MonitoringConfig.load_from(root)
    if (Path(root) / "configs" / "devices.yaml").is_file() and (profiles := load_profiles(root)):
        found["vendor"] = profiles[0].vendor
    return found
