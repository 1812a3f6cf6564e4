"""`tinymlops device …` and `tinymlops hil …` in-process, as a user meets them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cli_helpers import run_cli

REPO = Path(__file__).resolve().parents[3]


def test_device_install_status_boot(
    monkeypatch, capsys, profiles, int8_model, golden, make_bundle, key_paths, tmp_path
) -> None:
    nrf = profiles["nrf52840"]
    bundle = make_bundle(int8_model, nrf, version="7", sequence=7, selftest=golden)
    dev, trust = str(tmp_path / "dev"), str(key_paths.root_public)
    code, out, _ = run_cli(
        monkeypatch,
        capsys,
        "device",
        "install",
        str(bundle),
        "--dir",
        dev,
        "--profile",
        "nrf52840",
        "--trust",
        trust,
        "--root",
        str(REPO),
    )
    assert code == 0 and "confirmed" in out
    code, out, _ = run_cli(monkeypatch, capsys, "device", "status", "--dir", dev, "--json")
    status = json.loads(out)
    assert code == 0 and status["profile"] == "nrf52840" and status["state"]["min_sequence"] == 7
    assert status["slots"]["a"]["model_version"] == "7"
    code, out, _ = run_cli(monkeypatch, capsys, "device", "boot", "--dir", dev)
    assert code == 0 and out.startswith("booted")
    older = make_bundle(int8_model, nrf, version="6", sequence=6, selftest=golden)
    code, _, err = run_cli(monkeypatch, capsys, "device", "install", str(older), "--dir", dev, "--trust", trust)
    assert code == 1 and err.startswith("error: install refused at verify: rollback:") and err.count("\n") == 1


def test_device_commands_need_a_device(monkeypatch, capsys, tmp_path) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "device", "status", "--dir", str(tmp_path))
    assert code == 1 and "not an emulated device" in err


def test_hil_prints_the_matrix(
    monkeypatch, capsys, profiles, int8_model, golden, make_bundle, key_paths, prepared_dir, tmp_path
) -> None:
    bundles = tmp_path / "release"
    bundles.mkdir()
    for name in ("nrf52840", "stm32l072-lora"):
        shutil.copy(make_bundle(int8_model, profiles[name], selftest=golden), bundles / f"{name}.bundle")
    common = ["--trust", str(key_paths.root_public), "--root", str(REPO), "--prepared", str(prepared_dir)]
    code, out, _ = run_cli(
        monkeypatch, capsys, "hil", str(bundles), "--all", *common, "--report-dir", str(tmp_path / "reports"), "--json"
    )
    assert code == 0
    statuses = {r["profile"]: r["status"] for r in json.loads(out)}
    assert statuses["nrf52840"] == "passed" and statuses["stm32l072-lora"] == "excluded"
    assert statuses["stm32h7a3"] == "excluded"  # no bundle for its class in this release
    assert (tmp_path / "reports" / "hil.png").is_file() and (tmp_path / "reports" / "hil_nrf52840.json").is_file()
    code, out, _ = run_cli(
        monkeypatch, capsys, "hil", str(bundles / "nrf52840.bundle"), "--profile", "nrf52840", *common
    )
    assert code == 0 and "nrf52840" in out and "passed" in out
    code, _, err = run_cli(
        monkeypatch, capsys, "hil", str(bundles / "nrf52840.bundle"), "--profile", "stm32l4r5", *common
    )
    assert code == 1 and "HIL failed on 1 targeted profile(s); first: stm32l4r5: wrong_class" in err
