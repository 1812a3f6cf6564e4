"""`tinymlops device …` and `tinymlops hil …` in-process, as a user meets them."""

from __future__ import annotations

import json
import shutil

from tests.support.cli_helpers import run_cli
from tests.support.paths import REPO  # noqa: E402


def _fc_bundle(keys, profile, tmp_path, sequence: int) -> str:
    """A bundle whose payload is a model image for the C runtime (a small FULLY_CONNECTED model)."""
    from datetime import timedelta

    from tinymlops.bundle import ManifestDraft, SelfTest, build_bundle
    from tinymlops.device.agent.images import fc_image

    image, x, y = fc_image(16, 4, seed=sequence)
    draft = ManifestDraft(
        model_name="fc", model_version=str(sequence), sequence=sequence, vendor=profile.vendor,
        device_class=profile.device_class, arena_bytes=256, ops=["FULLY_CONNECTED"],
        selftest=SelfTest.from_arrays(x, y), lifetime=timedelta(days=30),
    )  # fmt: skip
    path = tmp_path / f"fc-{sequence}.bundle"
    build_bundle(image, draft, keys[0], path)
    return str(path)


def test_device_install_status_boot_on_the_emulated_firmware(monkeypatch, capsys, profiles, keys, key_paths, tmp_path):
    nrf = profiles["nrf52840"]
    dev, trust = str(tmp_path / "dev"), str(key_paths.root_public)
    common = ["--dir", dev, "--trust", trust, "--root", str(REPO)]
    code, out, _ = run_cli(
        monkeypatch, capsys, "device", "install", _fc_bundle(keys, nrf, tmp_path, 7), "--profile", "nrf52840", *common
    )
    assert code == 0 and "install pending; boot confirmed (ok), running sequence 7" in out
    assert (tmp_path / "dev" / "flash.bin").stat().st_size > 128 * 1024  # the flash is a file
    code, out, _ = run_cli(monkeypatch, capsys, "device", "status", "--dir", dev, "--json")
    status = json.loads(out)
    assert code == 0 and status["profile"] == "nrf52840" and status["state"]["floor"] == 7
    assert status["slots"]["a"]["model_version"] == "7" and status["state"]["active"] == 0
    code, out, _ = run_cli(monkeypatch, capsys, "device", "boot", "--dir", dev)
    assert code == 0 and out.startswith("none: ok, running sequence 7")
    code, _, err = run_cli(monkeypatch, capsys, "device", "install", _fc_bundle(keys, nrf, tmp_path, 6), *common)
    assert code == 1 and err.startswith("error: install refused: rollback") and err.count("\n") == 1


def test_device_root_key_is_pinned_at_provisioning(monkeypatch, capsys, profiles, keys, key_paths, tmp_path):
    """An attacker's --trust (and bundle) on a device that is already provisioned: refused."""
    from tinymlops.bundle import init_keys, load_signer

    nrf = profiles["nrf52840"]
    dev = str(tmp_path / "dev")
    first = ["--dir", dev, "--trust", str(key_paths.root_public), "--root", str(REPO)]
    assert run_cli(monkeypatch, capsys, "device", "install", _fc_bundle(keys, nrf, tmp_path, 7), "--profile",
                   "nrf52840", *first)[0] == 0  # fmt: skip
    attacker = init_keys(tmp_path / "attacker", None)
    evil = _fc_bundle((load_signer(attacker.dir, None), None), nrf, tmp_path / "attacker", 8)
    code, _, err = run_cli(
        monkeypatch, capsys, "device", "install", evil, "--dir", dev, "--trust", str(attacker.root_public)
    )
    assert code == 1 and "cannot change it" in err and "install refused: untrusted_key" in err
    code, out, _ = run_cli(monkeypatch, capsys, "device", "status", "--dir", dev, "--json")
    assert json.loads(out)["state"]["floor"] == 7


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
