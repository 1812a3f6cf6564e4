"""configs/watermark.yaml: how many triggers, how hard to embed them, and when to call a model ours."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from tinymlops.settings import ConfigFile

PAYLOAD_BITS = 64  # owner id (32 bits) + model serial (32 bits)


class WatermarkConfig(ConfigFile):
    FILE: ClassVar[str] = "watermark.yaml"

    triggers: int = Field(192, ge=PAYLOAD_BITS, le=4096, description="trigger inputs; each payload bit gets ~n/64")
    fp_bound: float = Field(1e-9, gt=0, lt=1, description="verdict 'owned' only when the chance p-value is below")
    embed_epochs: int = Field(60, ge=1, le=1000, description="fine-tune epochs that mix triggers into clean data")
    trigger_share: float = Field(0.2, gt=0, lt=1, description="average share of triggers in a training batch")
    learning_rate: float = Field(1e-3, gt=0, description="fine-tune learning rate")
    batch_size: int = Field(32, ge=1)
    max_rounds: int = Field(3, ge=1, le=20, description="embed → int8 → verify rounds before giving up")
    key_file: str = Field("keys/watermark-owner.key", description="owner key, relative to TINYMLOPS_HOME")
    dev_owner_id: int = Field(1, ge=0, le=2**32 - 1, description="owner id for a key made on first use")
    dev_serial: int = Field(1, ge=0, le=2**32 - 1, description="model serial for a key made on first use")

    def key_path(self, home: Path | str) -> Path:
        """Where the owner key lives: `key_file` under TINYMLOPS_HOME (Environment.home), unless absolute."""
        return Path(home) / self.key_file
