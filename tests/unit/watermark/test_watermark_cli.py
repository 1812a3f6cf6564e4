"""`tinymlops watermark keygen|verify` in-process, as a user meets them."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from cli_helpers import run_cli


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_keygen_writes_a_0600_key_and_never_prints_the_secret(monkeypatch, capsys, tmp_path: Path) -> None:
    from tinymlops.watermark.key import load_key

    path = tmp_path / "owner.key"
    code, out, err = run_cli(
        monkeypatch, capsys, "watermark", "keygen", "--owner-id", "42", "--serial", "7", "--out", str(path)
    )
    assert code == 0, err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_key(path)
    assert "0000002a00000007" in out
    assert key.secret.get_secret_value().hex() not in out + err
    code, _, err = run_cli(
        monkeypatch, capsys, "watermark", "keygen", "--owner-id", "1", "--serial", "1", "--out", str(path)
    )
    assert code == 1 and "already exists" in one_error_line(err)
    assert load_key(path) == key


def test_verify_json_on_the_marked_int8_file(monkeypatch, capsys, marked, key_file: Path) -> None:
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "watermark",
        "verify",
        str(marked["int8_path"]),
        "--key",
        str(key_file),
        "--json",
        "--strict",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["owned"] is True and report["ber"] == 0 and report["p_value"] < 1e-9
    assert report["payload_id"] == "0000002a00000007" == report["decoded_payload_id"]


def test_verify_text_on_an_unmarked_file(monkeypatch, capsys, tflite_dir: Path, key_file: Path) -> None:
    model = tflite_dir / "model_int8.tflite"
    code, out, _ = run_cli(monkeypatch, capsys, "watermark", "verify", str(model), "--key", str(key_file))
    assert code == 0 and out.startswith("not owned") and "p-value" in out and "BER" in out
    code, _, err = run_cli(monkeypatch, capsys, "watermark", "verify", str(model), "--key", str(key_file), "--strict")
    assert code == 1 and "not detected" in one_error_line(err)


def test_verify_bad_key_file_is_one_line(monkeypatch, capsys, tflite_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("{}")
    os.chmod(bad, 0o600)
    code, _, err = run_cli(
        monkeypatch, capsys, "watermark", "verify", str(tflite_dir / "model_int8.tflite"), "--key", str(bad)
    )
    assert code == 1 and str(bad) in one_error_line(err)


def test_verify_not_a_model_is_one_line(monkeypatch, capsys, key_file: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"this is not a flatbuffer" * 10)
    code, _, err = run_cli(monkeypatch, capsys, "watermark", "verify", str(junk), "--key", str(key_file))
    line = one_error_line(err)
    assert code == 1 and str(junk) in line and "not a valid TFLite model" in line
