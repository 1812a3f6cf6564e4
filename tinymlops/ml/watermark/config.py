"""configs/watermark.yaml: triggers and embedding, per-copy instances, the extraction-robust
fingerprint, and when to call a model ours."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from tinymlops.settings import ConfigFile
from tinymlops.settings.files import Strict

PAYLOAD_BITS = 64  # owner id (32 bits) + model serial (32 bits)
MAX_INSTANCE_ID = 2**32 - 1


class InstanceSettings(Strict):
    """Per-copy instances: a short fine-tune of the watermarked base per (owner key, instance id)."""

    triggers: int = Field(32, ge=8, le=1024, description="instance triggers: labels derived from (key, id)")
    profile_mass: float = Field(
        0.12, gt=0, lt=0.5, description="probability the instance gives its 3 shadow classes (per predicted class)"
    )
    epochs: int = Field(16, ge=1, le=200, description="fine-tune epochs from the watermarked base")
    learning_rate: float = Field(5e-4, gt=0)
    batch_size: int = Field(64, ge=1)
    trace_bound: float = Field(
        1e-6, gt=0, lt=1, description="trace names an instance only when its family-wise p-value is below"
    )


class FingerprintSettings(Strict):
    """Conferrable adversarial examples (Lukas, Zhang, Kerschbaum, ICLR 2021), the second owner test."""

    size: int = Field(100, ge=10, le=2000, description="fingerprints kept (queries the test uses)")
    candidates: int = Field(400, ge=10, le=20000, description="inputs the search starts from")
    epsilon: float = Field(0.2, gt=0, le=1, description="L-infinity bound of the perturbation (inputs in [0, 1])")
    steps: int = Field(100, ge=1, le=5000)
    surrogates: int = Field(3, ge=1, le=20, description="models distilled from the source (should agree)")
    references: int = Field(5, ge=1, le=40, description="independently trained models (should not agree)")
    calibration: int = Field(8, ge=3, le=100, description="held-out independent models that set the null rate")
    model_epochs: int = Field(20, ge=1, le=500, description="epochs for each surrogate and reference")
    fp_bound: float = Field(1e-6, gt=0, lt=1, description="verdict 'owned' only when the p-value is below")


class WatermarkConfig(ConfigFile):
    FILE: ClassVar[str] = "watermark.yaml"

    triggers: int = Field(192, ge=PAYLOAD_BITS, le=4096, description="trigger inputs; each payload bit gets ~n/64")
    fp_bound: float = Field(1e-9, gt=0, lt=1, description="verdict 'owned' only when the chance p-value is below")
    embed_epochs: int = Field(60, ge=1, le=1000, description="fine-tune epochs that mix triggers into clean data")
    trigger_share: float = Field(0.2, gt=0, lt=1, description="average share of triggers in a training batch")
    profile_mass: float = Field(
        0.16, gt=0, lt=0.5, description="probability the owner's 2 shadow classes get on clean data (owner test 2)"
    )
    learning_rate: float = Field(1e-3, gt=0, description="fine-tune learning rate")
    batch_size: int = Field(32, ge=1)
    max_rounds: int = Field(3, ge=1, le=20, description="embed → int8 → verify rounds before giving up")
    max_accuracy_cost: float = Field(
        0.03, ge=0, le=1, description="val accuracy the mark may cost against the unmarked model (0.03 = 3 pt)"
    )
    triggers_per_sample: float = Field(
        0.5, gt=0, le=10, description="small data: at most this many triggers per training sample (floor: the test's)"
    )
    plan_match_rate: float = Field(
        0.85, gt=0, le=1, description="share of triggers a plan assumes the int8 model answers (sets the minimum)"
    )
    adapt_attempts: int = Field(4, ge=1, le=10, description="embed attempts, each plan adapted from the last")
    on_refusal: Literal["fail", "ship_unmarked"] = Field(
        "fail", description="no plan keeps accuracy and a meaningful test: fail the run, or ship unmarked (tagged)"
    )
    plan_triggers: int | None = Field(
        None, ge=PAYLOAD_BITS, description="set from an embed plan, not by hand: the marked prefix (none: all)"
    )
    key_file: str = Field("keys/watermark-owner.key", description="owner key, relative to TINYMLOPS_HOME")
    dev_owner_id: int = Field(1, ge=0, le=2**32 - 1, description="owner id for a key made on first use")
    dev_serial: int = Field(1, ge=0, le=2**32 - 1, description="model serial for a key made on first use")
    instance: InstanceSettings = InstanceSettings()
    fingerprint: FingerprintSettings = FingerprintSettings()
    instances: list[int] = Field(
        default_factory=list,
        description="instance ids the pipeline derives and bundles, one per customer or fleet (empty: none)",
    )

    @model_validator(mode="after")
    def _prefix_within_set(self) -> WatermarkConfig:
        if self.plan_triggers is not None and self.plan_triggers > self.triggers:
            raise ValueError(f"plan_triggers {self.plan_triggers} exceeds triggers {self.triggers}")
        return self

    def active_triggers(self) -> int:
        """How many of the key's triggers the model carries (a prefix; all unless a plan chose fewer)."""
        return self.plan_triggers or self.triggers

    def with_plan(self, n_triggers: int) -> WatermarkConfig:
        """This config, checking the first `n_triggers` (what an embed plan marked)."""
        return self.model_copy(update={"plan_triggers": None if n_triggers == self.triggers else n_triggers})

    def key_path(self, home: Path | str) -> Path:
        """Where the owner key lives: `key_file` under TINYMLOPS_HOME (Environment.home), unless absolute."""
        return Path(home) / self.key_file
