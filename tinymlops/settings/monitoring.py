"""configs/monitoring.yaml: how the fleet server watches production against each release's baseline
(tinymlops.fleet.monitoring computes the scores; these are the limits that raise an alarm)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ConfigDict, Field

from tinymlops.settings.files import ConfigFile, Strict

FINITE = ConfigDict(**Strict.model_config, allow_inf_nan=False)


class DriftThresholds(Strict):
    """One limit per drift kind. Class drift needs both: a PSI large enough to matter and a
    chi-square p-value small enough not to be noise (huge samples make any difference significant;
    small ones make PSI noisy)."""

    model_config = FINITE
    class_psi: float = Field(0.2, gt=0, description="population stability index of the class mix")
    class_chi2_pvalue: float = Field(0.001, gt=0, le=1, description="chi-square goodness of fit p-value")
    confidence_drop: float = Field(0.1, gt=0, le=1, description="fall of the mean top-1 confidence")
    latency_ratio: float = Field(1.5, gt=1, description="production p95 latency ÷ the baseline's")
    error_rate_increase: float = Field(0.02, gt=0, le=1, description="errors per inference above the baseline's")


class MonitoringConfig(ConfigFile):
    """configs/monitoring.yaml."""

    FILE: ClassVar[str] = "monitoring.yaml"
    model_config = FINITE
    enabled: bool = True
    check_seconds: float = Field(60, gt=0, description="how often the server compares production with baselines")
    window_hours: float = Field(24, gt=0, le=24 * 14, description="the production telemetry judged: this trailing span")
    min_inferences: int = Field(500, ge=1, description="fewer inferences in the window: no judgement")
    min_devices: int = Field(3, ge=1, description="fewer reporting devices: no judgement")
    thresholds: DriftThresholds = DriftThresholds()
    event: str = Field("tinymlops.drift.alarm", min_length=1, description="the Prefect event an alarm emits")
