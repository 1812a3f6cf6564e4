"""configs/bundle.yaml: how releases are bundled. Never holds key material, only where it lives."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from tinymlops.settings import ConfigFile


class BundleConfig(ConfigFile):
    FILE: ClassVar[str] = "bundle.yaml"

    keys_dir: str = Field("keys", description="key directory, relative to $TINYMLOPS_HOME")
    manifest_lifetime_days: int = Field(365, ge=1, description="a device refuses the manifest after this")
    key_validity_days: int = Field(365, ge=1, description="validity of signing keys made by `keys init/rotate`")
    encrypt: bool = Field(False, description="encrypt payloads with the per-class KEK")
    kek_dir: str = Field("keys/kek", description="per-class KEK files <class>.kek, relative to $TINYMLOPS_HOME")
    selftest_count: int = Field(8, ge=0, le=256, description="golden vectors carried in the signed manifest")
    selftest_tolerance: int = Field(1, ge=0, le=255, description="max |Δ| per int8 output element on device")

    def keys_path(self, home: Path) -> Path:
        return home / self.keys_dir

    def kek_path(self, home: Path, device_class: str) -> Path:
        return home / self.kek_dir / f"{device_class}.kek"
