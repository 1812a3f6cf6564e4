"""Owner key files: 0600, atomic, refuse to overwrite, strict parsing, and the secret never shows."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from tinymlops.ml.watermark.key import (
    KeyFileError,
    WatermarkError,
    ensure_dev_key,
    generate_key,
    load_key,
    write_key,
)


def secret_hex(key) -> str:
    return key.secret.get_secret_value().hex()


def test_round_trip_and_mode_0600(tmp_path: Path) -> None:
    key = generate_key(owner_id=42, serial=7)
    path = write_key(key, tmp_path / "keys" / "owner.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_key(path)
    assert loaded == key
    assert loaded.payload_id == "0000002a00000007"
    assert [p.name for p in path.parent.iterdir()] == ["owner.key"]  # no temp file left behind


def test_two_keys_have_different_secrets() -> None:
    assert secret_hex(generate_key(1, 1)) != secret_hex(generate_key(1, 1))


def test_payload_bits_are_owner_then_serial() -> None:
    bits = generate_key(owner_id=1, serial=0x80000000).payload_bits()
    assert len(bits) == 64
    assert bits[31] == 1 and bits[32] == 1 and bits.sum() == 2


def test_secret_never_in_repr_str_or_json() -> None:
    key = generate_key(3, 4)
    hidden = secret_hex(key)
    for text in (repr(key), str(key), key.model_dump_json(), f"{key}"):
        assert hidden not in text
        assert "3" in repr(key)  # the public part is still shown


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = write_key(generate_key(1, 1), tmp_path / "owner.key")
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        write_key(generate_key(1, 2), path)
    assert path.read_bytes() == before
    write_key(generate_key(1, 2), path, overwrite=True)
    assert load_key(path).serial == 2


def test_too_open_key_file_is_refused(tmp_path: Path) -> None:
    path = write_key(generate_key(1, 1), tmp_path / "owner.key")
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="0644 are too open"):
        load_key(path)


def _bad_key(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "bad.key"
    path.write_text(content)
    os.chmod(path, 0o600)
    return path


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("not json at all", "not JSON"),
        (json.dumps({"format": "other"}), "format is not"),
        (
            json.dumps({"format": "tinymlops-watermark-key/1", "owner_id": -1, "serial": 1, "secret": "00" * 32}),
            "'owner_id'",
        ),
        (
            json.dumps({"format": "tinymlops-watermark-key/1", "owner_id": 1, "serial": 1, "secret": "ab" * 31}),
            "'secret' must be 32 bytes",
        ),
        (
            json.dumps({"format": "tinymlops-watermark-key/1", "owner_id": 1, "serial": 1, "secret": "zz" * 32}),
            "'secret' must be 32 bytes",
        ),
        (
            json.dumps(
                {"format": "tinymlops-watermark-key/1", "owner_id": 1, "serial": 1, "secret": "00" * 32, "extra": 1}
            ),
            "unknown key 'extra'",
        ),
    ],
    ids=["not_json", "wrong_format", "bad_owner", "short_secret", "not_hex", "unknown_key"],
)
def test_bad_key_file_is_one_line_naming_the_file(tmp_path: Path, content: str, expected: str) -> None:
    path = _bad_key(tmp_path, content)
    with pytest.raises(KeyFileError) as info:
        load_key(path)
    message = str(info.value)
    assert expected in message and str(path) in message and "\n" not in message
    assert "ab" * 31 not in message and "zz" * 32 not in message  # a (bad) secret is never echoed


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not found"):
        load_key(tmp_path / "nope.key")


def test_ids_out_of_range() -> None:
    with pytest.raises(WatermarkError, match="serial"):
        generate_key(1, 2**32)


def test_ensure_dev_key_creates_once_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "home" / "keys" / "owner.key"
    with caplog.at_level(logging.INFO, logger="tinymlops.ml.watermark.key"):
        key, created = ensure_dev_key(path, owner_id=1, serial=1)
    assert created and path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "created a new watermark owner key" in caplog.text and str(path) in caplog.text
    assert key.payload_id in caplog.text and secret_hex(key) not in caplog.text
    again, created_again = ensure_dev_key(path, owner_id=1, serial=1)
    assert not created_again and again == key


def test_ensure_dev_key_keeps_an_existing_key_for_other_ids(tmp_path: Path) -> None:
    from tinymlops.ml.watermark.config import WatermarkConfig

    path = WatermarkConfig().key_path(tmp_path)
    assert path == tmp_path / "keys" / "watermark-owner.key"
    first, _ = ensure_dev_key(path, owner_id=1, serial=1)
    kept, created = ensure_dev_key(path, owner_id=9, serial=9)
    assert not created and kept == first  # never silently replaced: old watermarks stay provable
