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


class McuSpec(Strict):
    """The part as the instruction-level emulator sees it (tinymlops/device/mcu). Absent for a core
    the registries have no emulator for (the profile then stays on the host reference runtime)."""

    flash_base: int = Field(ge=0, description="address of internal flash (code, model slots)")
    flash_bytes: int = Field(gt=0)
    flash_page_bytes: int = Field(gt=0, description="erase granularity of the flash controller")
    ram_base: int = Field(ge=0, description="address of the SRAM that holds stack, static data and arena")
    ram_bytes: int | None = Field(None, gt=0, description="contiguous SRAM at ram_base (default: the profile's)")
    reserved_ram_bytes: int = Field(
        ge=0, description="RAM kept by firmware parts not emulated (radio stack, RTOS): top of RAM"
    )
    stack_bytes: int = Field(gt=0, description="stack region the firmware is linked with")
    flash_wait_states: int = Field(ge=0, description="flash wait states at clock_hz")
    flash_line_bytes: int = Field(gt=0, description="bytes one flash read (line) returns")
    flash_cache_lines: int = Field(ge=0, description="data lines the flash accelerator/cache keeps (0: none)")
    icache: bool = Field(description="instruction fetches hit a cache/accelerator (no fetch wait states)")


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
    max_latency_ms: float | None = Field(
        None, gt=0, description="the application's deadline for one inference (estimated latency); null: none"
    )
    target: bool = Field(True, description="releases target this class (a failure stops the release)")
    vendor: str = Field("", description="filled from the file's top-level vendor")
    mcu: McuSpec | None = Field(None, description="emulated part: memory map and flash timing")
    emulation_note: str = Field("", description="why the profile has no emulator, when it has none")

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
