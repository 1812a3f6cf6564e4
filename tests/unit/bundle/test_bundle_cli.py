"""`tinymlops keys …` and `tinymlops bundle …` in-process, as a user meets them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_helpers import run_cli

from tinymlops.bundle import class_uuid

PASSPHRASE = "tinymlops-test-passphrase-7f3a"


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert PASSPHRASE not in out + err  # never shown, whatever the command
    return code, out, err


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TINYMLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TINYMLOPS_KEY_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("COLUMNS", "200")
    (tmp_path / "model.tflite").write_bytes(os.urandom(20_000))
    return tmp_path


def build_args(home: Path, out: str, *extra: str) -> list[str]:
    return [
        "bundle",
        "build",
        home / "model.tflite",
        "--out",
        home / out,
        "--name",
        "kws",
        "--version",
        "1.2",
        "--sequence",
        "5",
        "--vendor",
        "acme.example",
        "--class",
        "m4",
        "--arena-bytes",
        "24000",
        "--ops",
        "CONV_2D,SOFTMAX",
        *extra,
    ]


def test_keys_lifecycle(home: Path, monkeypatch, capsys) -> None:
    code, out, err = run(monkeypatch, capsys, "keys", "init")
    assert code == 0, err
    keys = home / "home" / "keys"  # default: $TINYMLOPS_HOME/keys
    assert (keys / "root.pub").is_file() and "passphrase-encrypted" in out
    code, out, _ = run(monkeypatch, capsys, "keys", "show", "--json")
    status = json.loads(out)
    assert code == 0 and status["encrypted"] and len(status["signing_keys"]) == 1
    first = status["signing_keys"][0]["kid"]
    code, out, _ = run(monkeypatch, capsys, "keys", "rotate", "--revoke-previous")
    assert code == 0 and f"{first} revoked" in out
    code, out, _ = run(monkeypatch, capsys, "keys", "show")
    assert code == 0 and "REVOKED" in out and "revocation list sequence 1" in out
    code, out, err = run(monkeypatch, capsys, "keys", "init")
    assert code == 1 and err.startswith("error: ") and "refusing to overwrite" in err and len(err.splitlines()) == 1
    for path in keys.rglob("*"):  # the passphrase is in no file, and no output above showed it
        assert PASSPHRASE.encode() not in path.read_bytes() if path.is_file() else True


def test_build_verify_inspect(home: Path, monkeypatch, capsys) -> None:
    assert run(monkeypatch, capsys, "keys", "init")[0] == 0
    code, out, err = run(monkeypatch, capsys, *build_args(home, "m.bundle", "--json"))
    assert code == 0, err
    built = json.loads(out)
    assert built["manifest"]["sequence"] == 5 and len(built["bundle_sha256"]) == 64
    trust = home / "home" / "keys" / "root.pub"

    code, out, err = run(
        monkeypatch,
        capsys,
        "bundle",
        "verify",
        home / "m.bundle",
        "--trust",
        trust,
        "--class",
        "m4",
        "--vendor",
        "acme.example",
        "--min-sequence",
        "5",
        "--out",
        home / "plain",
    )
    assert code == 0 and out.startswith("OK "), err
    assert (home / "plain").read_bytes() == (home / "model.tflite").read_bytes()

    code, out, err = run(
        monkeypatch,
        capsys,
        "bundle",
        "verify",
        home / "m.bundle",
        "--trust",
        trust,
        "--class",
        str(class_uuid("acme.example", "m0")),
        "--out",
        home / "refused",
    )
    assert code == 1 and err.startswith("error: wrong_class: ") and len(err.splitlines()) == 1
    assert not (home / "refused").exists()  # nothing unverified is left behind

    code, out, _ = run(
        monkeypatch, capsys, "bundle", "verify", home / "m.bundle", "--trust", trust, "--min-sequence", "6", "--json"
    )
    result = json.loads(out)
    assert code == 1 and result["ok"] is False and result["reason"] == "rollback"

    code, out, _ = run(
        monkeypatch, capsys, "bundle", "verify", home / "m.bundle", "--trust", trust, "--now", "2099-01-01T00:00:00"
    )
    assert code == 1

    code, out, err = run(monkeypatch, capsys, "bundle", "inspect", home / "m.bundle", "--json")
    assert code == 0 and json.loads(out)["ops"] == ["CONV_2D", "SOFTMAX"]
    code, out, err = run(monkeypatch, capsys, "bundle", "inspect", home / "m.bundle")
    assert code == 0 and "UNVERIFIED" in err and "CONV_2D" in out


def test_encrypted_bundle_and_revocation(home: Path, monkeypatch, capsys) -> None:
    assert run(monkeypatch, capsys, "keys", "init")[0] == 0
    assert run(monkeypatch, capsys, "keys", "kek", home / "class.kek")[0] == 0
    assert run(monkeypatch, capsys, "keys", "kek", home / "other.kek")[0] == 0
    assert run(monkeypatch, capsys, *build_args(home, "e.bundle", "--kek", home / "class.kek"))[0] == 0
    trust = home / "home" / "keys" / "root.pub"
    code, out, err = run(
        monkeypatch,
        capsys,
        "bundle",
        "verify",
        home / "e.bundle",
        "--trust",
        trust,
        "--kek",
        home / "class.kek",
        "--out",
        home / "plain",
    )
    assert code == 0, err
    assert (home / "plain").read_bytes() == (home / "model.tflite").read_bytes()
    code, _, err = run(
        monkeypatch, capsys, "bundle", "verify", home / "e.bundle", "--trust", trust, "--kek", home / "other.kek"
    )
    assert code == 1 and err.startswith("error: wrong_kek: ")

    kid = json.loads(run(monkeypatch, capsys, "keys", "show", "--json")[1])["signing_keys"][0]["kid"]
    assert run(monkeypatch, capsys, "keys", "revoke", kid)[0] == 0
    code, _, err = run(
        monkeypatch,
        capsys,
        "bundle",
        "verify",
        home / "e.bundle",
        "--trust",
        trust,
        "--revocations",
        home / "home" / "keys" / "revocations.cose",
    )
    assert code == 1 and err.startswith("error: revoked_key: ") and kid in err
    code, _, err = run(monkeypatch, capsys, *build_args(home, "after.bundle"))
    assert code == 1 and "is revoked" in err  # the CLI signs nothing with a revoked key


def test_not_a_bundle_is_one_line(home: Path, monkeypatch, capsys) -> None:
    assert run(monkeypatch, capsys, "keys", "init")[0] == 0
    code, _, err = run(
        monkeypatch, capsys, "bundle", "verify", home / "model.tflite", "--trust", home / "home" / "keys" / "root.pub"
    )
    assert code == 1 and err.startswith("error: bad_magic: ") and "Traceback" not in err
