"""configs/rollout.yaml: the staged rollout policy (groups, thresholds, health-gate limits)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from tinymlops.settings.files import ConfigFile, Strict

FINITE = ConfigDict(**Strict.model_config, allow_inf_nan=False)  # a limit of NaN or Infinity is no limit

Action = Literal["pause", "abort_and_rollback"]


class GroupPolicy(Strict):
    model_config = FINITE
    name: str = Field(min_length=1, max_length=64)
    percent: float = Field(gt=0, le=100, description="cumulative share of each device class")
    success_threshold: float = Field(0.95, ge=0, le=1, description="share confirmed and healthy to pass")
    error_threshold: float = Field(0.05, ge=0, le=1, description="share failed or reverted that trips")
    error_action: Action = "abort_and_rollback"
    min_soak_seconds: float = Field(600, ge=0)
    min_devices: int = Field(5, ge=1, description="finished devices before judging")


class HealthPolicy(Strict):
    model_config = FINITE
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


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min" if minutes else f"{seconds:.0f} s"


def minimum_seconds(policy: RolloutPolicy) -> float:
    """The least time a rollout under `policy` takes: every group soaks at least its min_soak_seconds."""
    return sum(g.min_soak_seconds for g in policy.groups)


def describe(policy: RolloutPolicy) -> str:
    """One line saying how long the policy needs at least, for a user about to wait on it."""
    soaks = " + ".join(f"{g.name} {_duration(g.min_soak_seconds)}" for g in policy.groups)
    return (
        f"the rollout policy needs at least {_duration(minimum_seconds(policy))} ({soaks} of soak), plus install time"
    )


def demo_policy() -> RolloutPolicy:
    """A fast policy for demos and a first try on a small fleet: three groups (10 %, 50 %, 100 %),
    30 s soaks, 2 devices and 200 inferences before judging — minutes, not hours. The health
    gates and error thresholds are the defaults: a bad model is still stopped. Not for production:
    30 s of telemetry from two devices says little about a model."""
    return RolloutPolicy(
        groups=[
            GroupPolicy(name=name, percent=percent, min_soak_seconds=30, min_devices=2)
            for name, percent in (("canary", 10.0), ("half", 50.0), ("all", 100.0))
        ],
        health=HealthPolicy(min_inferences=200),
    )
