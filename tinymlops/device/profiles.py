"""Device profiles (configs/devices.yaml): what one device class offers a model.

A profile is the emulated twin of a board: its tensor-arena RAM after the firmware's own reserve,
the flash of one model slot, the ops its firmware registers, and its kernel library's speed and
energy, for the estimate. The class id is the bundle contract's UUIDv5 of (vendor, device class),
so a bundle built for a class is refused by every other class.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar
from uuid import UUID

from pydantic import Field, model_validator

from tinymlops.errors import ConfigError
from tinymlops.settings import ConfigFile, Strict


class DeviceProfile(Strict):
    name: str = Field(min_length=1, description="profile name, e.g. nrf52840")
    device_class: str = Field(min_length=1, description="device class name; with the vendor → class UUID")
    core: str
    clock_hz: int = Field(gt=0)
    ram_bytes: int = Field(gt=0, description="total SRAM")
    firmware_reserve_bytes: int = Field(ge=0, description="RAM the firmware keeps for itself")
    flash_model_bytes: int = Field(gt=0, description="size of one model slot")
    ops: list[str] = Field(min_length=1, description="ops the firmware's op resolver registers")
    cycles_per_mac: float = Field(gt=0)
    overhead_cycles_per_op: int = Field(ge=0)
    energy_pj_per_cycle: float = Field(gt=0)
    target: bool = Field(True, description="releases target this class (a failure stops the release)")
    vendor: str = Field("", description="filled from the file's top-level vendor")

    @model_validator(mode="after")
    def _reserve_leaves_ram(self) -> DeviceProfile:
        if self.firmware_reserve_bytes >= self.ram_bytes:
            raise ValueError("firmware_reserve_bytes must be below ram_bytes")
        return self

    @property
    def arena_budget_bytes(self) -> int:
        """RAM available to the TFLM tensor arena."""
        return self.ram_bytes - self.firmware_reserve_bytes

    @property
    def class_id(self) -> UUID:
        return class_uuid(self.vendor, self.device_class)


class DevicesConfig(ConfigFile):
    """configs/devices.yaml."""

    FILE: ClassVar[str] = "devices.yaml"
    vendor: str = Field(min_length=1)
    profiles: list[DeviceProfile] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> DevicesConfig:
        names = [p.name for p in self.profiles]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate profile name {dupes[0]!r}")
        return self

    def resolved(self) -> list[DeviceProfile]:
        return [p.model_copy(update={"vendor": self.vendor}) for p in self.profiles]


def class_uuid(vendor: str, device_class: str) -> UUID:
    from tinymlops.bundle import class_uuid as bundle_class_uuid

    return bundle_class_uuid(vendor, device_class)


def load_profiles(root: Path | str) -> list[DeviceProfile]:
    """Every profile of <root>/configs/devices.yaml, with the file's vendor filled in."""
    return DevicesConfig.load_from(root).resolved()


def get_profile(profiles: list[DeviceProfile], name: str) -> DeviceProfile:
    for p in profiles:
        if p.name == name:
            return p
    raise ConfigError(f"devices.yaml: no profile named {name!r} (have: {', '.join(p.name for p in profiles)})")
