"""`tinymlops watermark keygen|verify` in-process, as a user meets them."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np

from tests.support.cli_helpers import run_cli


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_keygen_writes_a_0600_key_and_never_prints_the_secret(monkeypatch, capsys, tmp_path: Path) -> None:
    from tinymlops.ml.watermark.key import load_key

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
    test1 = report["watermark"]
    assert report["owned"] is True and test1["ber"] == 0 and test1["p_value"] < 1e-9
    assert test1["payload_id"] == "0000002a00000007" == test1["decoded_payload_id"]
    assert report["profile"] is None  # no probes outside a project: test 1 only


def test_verify_text_on_an_unmarked_file(monkeypatch, capsys, tflite_dir: Path, key_file: Path) -> None:
    model = tflite_dir / "model_int8.tflite"
    code, out, _ = run_cli(monkeypatch, capsys, "watermark", "verify", str(model), "--key", str(key_file))
    assert code == 0 and out.startswith("test 1, trigger watermark (192 queries): not owned")
    assert "p-value" in out and "BER" in out and "verdict: not owned" in out
    code, _, err = run_cli(monkeypatch, capsys, "watermark", "verify", str(model), "--key", str(key_file), "--strict")
    assert code == 1 and "not owned by 0000002a00000007" in one_error_line(err)


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


def test_verify_reports_both_tests_with_probes(monkeypatch, capsys, marked, key_file: Path, prepared_dir: Path) -> None:
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "watermark",
        "verify",
        str(marked["int8_path"]),
        "--key",
        str(key_file),
        "--probes",
        str(prepared_dir),
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("test 1, trigger watermark (192 queries): OWNED")
    assert lines[1].startswith("test 2, runner-up profile (1797 queries): OWNED")  # every prepared split
    assert lines[-1].startswith("verdict: OWNED")


def test_trace_names_the_instance_or_none(monkeypatch, capsys, instances, tflite_dir, key_file, tmp_path, prepared_dir):
    copy = tmp_path / "leaked.tflite"
    copy.write_bytes(instances[17]["int8"])
    args = ("watermark", "trace", str(copy), "--key", str(key_file), "--ids", "0-9,17", "--probes", str(prepared_dir))
    code, out, err = run_cli(monkeypatch, capsys, *args, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["instance_id"] == 17 and report["p_value"] < 1e-6 and report["candidates"] == 11
    unmarked = str(tflite_dir / "model_int8.tflite")
    code, out, _ = run_cli(monkeypatch, capsys, "watermark", "trace", unmarked, "--key", str(key_file), "--ids", "0-19")
    assert code == 0 and out.startswith("none: no instance of 20 identified")
    code, _, err = run_cli(monkeypatch, capsys, "watermark", "trace", unmarked, "--key", str(key_file), "--ids", "9-3")
    assert code == 1 and "--ids" in one_error_line(err)


def test_verify_reports_a_sealed_fingerprint(monkeypatch, capsys, marked, key_file, owner_key, tmp_path) -> None:
    """`--fingerprint` opens the sealed file with the key and reports its figure (generation is the
    bench's: minutes); here a fingerprint of inputs the model answers with its own labels."""
    from tinymlops.ml.watermark.fingerprint import Fingerprint, seal
    from tinymlops.ml.watermark.tuning import keras_predict

    rng = np.random.default_rng(5)
    x = (np.round(rng.random((40, 8, 8, 1)) * 255) / 255).astype(np.float32)
    targets = keras_predict(marked["model"])(x).argmax(axis=1)
    fp = Fingerprint(x=x, targets=targets, null_alpha=1.0, null_beta=9.0, n_classes=10)
    sealed = tmp_path / "fp.sealed"
    sealed.write_bytes(seal(fp, owner_key))
    args = ("watermark", "verify", str(marked["int8_path"]), "--key", str(key_file), "--fingerprint", str(sealed))
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    [line] = [line for line in out.splitlines() if line.startswith("fingerprint (40 queries)")]
    assert "conferrable examples answered" in line
    other = tmp_path / "other.key"
    from tests.support.wm_keys import fixed_key
    from tinymlops.ml.watermark.key import write_key

    write_key(fixed_key("someone-else"), other)
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "watermark",
        "verify",
        str(marked["int8_path"]),
        "--key",
        str(other),
        "--fingerprint",
        str(sealed),
    )
    assert code == 1 and "cannot open this fingerprint" in one_error_line(err)
