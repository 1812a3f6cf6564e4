"""Device profiles: the shipped file loads, ids are the bundle contract's, mistakes fail in one line."""

from __future__ import annotations

import pytest
import yaml

from tests.support.paths import REPO  # noqa: E402
from tinymlops.bundle import class_uuid
from tinymlops.device.profiles import DevicesConfig, get_profile, load_profiles
from tinymlops.errors import ConfigError
from tinymlops.settings import parse


def test_shipped_profiles_cover_the_issue_parts(profiles) -> None:
    assert len(profiles) >= 5
    cores = {p.core for p in profiles.values()}
    assert {"cortex-m4f", "cortex-m7", "xtensa-lx7", "cortex-m0plus"} <= cores
    nrf = profiles["nrf52840"]
    assert (nrf.clock_hz, nrf.ram_bytes) == (64_000_000, 256 * 1024)
    for p in profiles.values():
        assert 0 < p.arena_budget_bytes < p.ram_bytes
        assert p.vendor == "tinymlops-devices"


def test_class_id_is_the_bundle_contracts_uuid5(profiles) -> None:
    p = profiles["stm32h7a3"]
    assert p.class_id == class_uuid("tinymlops-devices", "stm32h7-vision")
    assert len({q.class_id for q in profiles.values()}) == len(profiles)


def test_every_figure_has_a_source_comment() -> None:
    """Each numeric figure line of devices.yaml carries a comment (its public source or 'assumption')."""
    lines = (REPO / "configs" / "devices.yaml").read_text().splitlines()
    figures = ("clock_hz:", "ram_bytes:", "firmware_reserve_bytes:", "flash_model_bytes:", "energy_pj_per_cycle:")
    for i, line in enumerate(lines):
        if line.strip().startswith(figures):
            commented = "#" in line or lines[i - 1].strip().startswith("#")
            assert commented, f"devices.yaml line {i + 1} has no source: {line.strip()}"


def test_reserve_above_ram_fails_in_one_line() -> None:
    data = yaml.safe_load((REPO / "configs" / "devices.yaml").read_text())
    data["profiles"][0]["firmware_reserve_bytes"] = data["profiles"][0]["ram_bytes"]
    with pytest.raises(ConfigError, match="devices.yaml: profiles.0: Value error, firmware_reserve_bytes") as exc:
        parse(DevicesConfig, data, "devices.yaml")
    assert "\n" not in str(exc.value)


def test_duplicate_names_and_unknown_profile_fail() -> None:
    data = yaml.safe_load((REPO / "configs" / "devices.yaml").read_text())
    data["profiles"].append(dict(data["profiles"][0]))
    with pytest.raises(ConfigError, match="duplicate profile name 'nrf52840'"):
        parse(DevicesConfig, data, "devices.yaml")
    with pytest.raises(ConfigError, match="no profile named 'nope'"):
        get_profile(load_profiles(REPO), "nope")
