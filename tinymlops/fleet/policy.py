"""configs/rollout.yaml: the staged rollout policy (groups, thresholds, health-gate limits)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from tinymlops.settings import ConfigFile, Strict

Action = Literal["pause", "abort_and_rollback"]


class GroupPolicy(Strict):
    name: str = Field(min_length=1, max_length=64)
    percent: float = Field(gt=0, le=100, description="cumulative share of each device class")
    success_threshold: float = Field(0.95, ge=0, le=1, description="share confirmed and healthy to pass")
    error_threshold: float = Field(0.05, ge=0, le=1, description="share failed or reverted that trips")
    error_action: Action = "abort_and_rollback"
    min_soak_seconds: float = Field(600, ge=0)
    min_devices: int = Field(5, ge=1, description="finished devices before judging")


class HealthPolicy(Strict):
    min_inferences: int = Field(500, ge=1)
    max_p95_latency_ratio: float = Field(1.25, gt=0)
    max_confidence_drop: float = Field(0.05, ge=0, le=1)
    max_class_psi: float = Field(0.2, ge=0)
    min_class_chi2_pvalue: float = Field(0.0, ge=0, le=1)
    max_error_rate_increase: float = Field(0.01, ge=0, le=1)
    max_revert_rate: float = Field(0.02, ge=0, le=1)
    action: Action = "abort_and_rollback"


def _default_groups() -> list[GroupPolicy]:
    return [
        GroupPolicy(name="canary", percent=1),
        GroupPolicy(name="early", percent=10),
        GroupPolicy(name="half", percent=50),
        GroupPolicy(name="all", percent=100),
    ]


class RolloutPolicy(ConfigFile):
    """configs/rollout.yaml. Groups are cumulative: group i covers `percent` of every class."""

    FILE: ClassVar[str] = "rollout.yaml"
    groups: list[GroupPolicy] = Field(default_factory=_default_groups)
    health: HealthPolicy = HealthPolicy()

    @model_validator(mode="after")
    def _groups_grow_to_everyone(self) -> RolloutPolicy:
        if not self.groups:
            raise ValueError("needs at least one group")
        shares = [g.percent for g in self.groups]
        if any(b <= a for a, b in zip(shares[:-1], shares[1:], strict=True)):
            raise ValueError(f"group percents must strictly increase, got {shares}")
        if shares[-1] != 100:
            raise ValueError(f"the last group must cover 100 percent, got {shares[-1]}")
        if len({g.name for g in self.groups}) != len(self.groups):
            raise ValueError("group names must be unique")
        return self
