"""`tinymlops keys …` and `tinymlops bundle …` in-process, as a user meets them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.cli_helpers import run_cli
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


def test_keys_metering_signs_quotas_with_the_root_offline(home: Path, monkeypatch, capsys) -> None:
    """`keys metering`: a 0600, passphrase-encrypted quota-signing key whose statement the root
    signed; with root.key moved away, quota tokens are still issued and verify; revoked, it is refused."""
    import uuid
    from datetime import datetime, timedelta, timezone

    from tinymlops.bundle import KeyStoreError, load_trust
    from tinymlops.bundle.quota import QuotaToken, quota_issuer

    assert run(monkeypatch, capsys, "keys", "init")[0] == 0
    keys = home / "home" / "keys"
    code, out, err = run(monkeypatch, capsys, "keys", "metering", "--validity-days", "30")
    assert code == 0, err
    status = json.loads(run(monkeypatch, capsys, "keys", "show", "--json")[1])
    [meter] = status["metering_keys"]
    assert meter["current"] and not meter["revoked"] and meter["kid"] in out and "0600" in out
    private = keys / "metering" / f"{meter['kid']}.key"
    assert private.stat().st_mode & 0o777 == 0o600 and b"ENCRYPTED" in private.read_bytes()
    assert private.read_bytes().decode() not in out + err
    assert "metering key" in run(monkeypatch, capsys, "keys", "show")[1]
    (keys / "root.key").rename(home / "root.key.offline")  # the root goes offline
    issue = quota_issuer(keys, PASSPHRASE)
    assert issue is not None
    now = datetime.now(timezone.utc)
    token = QuotaToken(device_id=uuid.uuid4(), quota=10, expires=now + timedelta(days=1), serial=1)
    assert QuotaToken.verify(issue(token), load_trust(keys / "root.pub"), now=now) == token.model_copy(
        update={"expires": token.expires.replace(microsecond=0)}
    )
    (home / "root.key.offline").rename(keys / "root.key")  # back for the revocation ceremony
    assert run(monkeypatch, capsys, "keys", "revoke", meter["kid"])[0] == 0
    with pytest.raises(KeyStoreError, match="revoked"):
        quota_issuer(keys, PASSPHRASE)


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
    assert run(monkeypatch, capsys, "keys", "kek", "class", "--out", home / "class.kek")[0] == 0
    assert run(monkeypatch, capsys, "keys", "kek", "other", "--out", home / "other.kek")[0] == 0
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
    assert run(monkeypatch, capsys, "keys", "revoke", kid, "--force")[0] == 0  # the current key: deliberate
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
