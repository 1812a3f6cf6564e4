"""The manifest: deterministic CBOR round trip, SUIT-style UUIDv5 ids, strict parsing, JSON view."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import cbor2
import pytest

from tinymlops.bundle import BundleError, Lineage, Manifest, Reason, SelfTest, class_uuid, vendor_uuid
from tinymlops.bundle import manifest as mf

T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)


def manifest(**changes) -> Manifest:
    fields = dict(
        model_name="kws",
        model_version="1.0.0",
        sequence=4,
        vendor_id=vendor_uuid("acme.example"),
        class_id=class_uuid("acme.example", "m4"),
        payload_sha256="ab" * 32,
        payload_size=14_784,
        created=T0,
        expires=T0 + timedelta(days=30),
        arena_bytes=24_000,
        ops=["CONV_2D", "SOFTMAX"],
        lineage=Lineage(mlflow_run_id="4626f315", git_sha="deadbeef", data_md5="18ed5c7d.dir", watermark_id="wm-1"),
        selftest=SelfTest(
            input_shape=[1, 4],
            output_shape=[3],
            inputs=bytes([1, 2, 3, 4, 5, 6, 7, 8]),
            expected=bytes([250, 0, 7, 1, 2, 3]),
            count=2,
            tolerance=1,
        ),
    )
    fields.update(changes)
    return Manifest(**fields)


def test_round_trip_is_exact_and_deterministic() -> None:
    m = manifest()
    encoded = mf.encode(m)
    assert mf.decode(encoded) == m
    assert mf.encode(mf.decode(encoded)) == encoded  # the GCM associated data relies on this


def test_uuids_are_rfc9124_uuidv5() -> None:
    vendor = vendor_uuid("acme.example")
    assert vendor == uuid.uuid5(uuid.NAMESPACE_DNS, "acme.example") and vendor.version == 5
    assert class_uuid("acme.example", "m4") == uuid.uuid5(vendor, "m4")
    assert class_uuid("acme.example", "m4") != class_uuid("acme.example", "m0")
    assert class_uuid("acme.example", "m4") != class_uuid("other.example", "m4")


def test_json_view_is_json_ready_and_hides_nothing_binary_raw() -> None:
    import json

    view = manifest().json_view()
    json.dumps(view)  # serialisable as is
    assert view["vendor_id"] == str(vendor_uuid("acme.example"))
    assert view["created"].startswith("2026-06-01T00:00:00")
    assert view["selftest"]["inputs"] == "AQIDBAUGBwg="  # base64
    assert view["payload_sha256"] == "ab" * 32


def test_selftest_sizes_must_match_shapes() -> None:
    with pytest.raises(ValueError, match="count × prod"):
        SelfTest(input_shape=[2, 2], output_shape=[3], inputs=bytes(7), expected=bytes(6), count=2, tolerance=0)


def test_encryption_fields_must_agree() -> None:
    with pytest.raises(ValueError, match="encrypted and encryption"):
        manifest(encrypted=True)
    with pytest.raises(ValueError, match="expires must be after"):
        manifest(expires=T0)


def wire(**changes) -> bytes:
    data = mf.to_wire(manifest())
    data.update(changes)
    return cbor2.dumps(data, canonical=True)  # the one accepted encoding: only the field is wrong


@pytest.mark.parametrize(
    ("changes", "reason", "words"),
    [
        ({"format_version": 2}, Reason.UNSUPPORTED_VERSION, "format_version 2"),
        ({"format_version": "1"}, Reason.MALFORMED, "format_version"),
        ({"sequence": "5"}, Reason.MALFORMED, "manifest.sequence"),
        ({"sequence": True}, Reason.MALFORMED, "manifest.sequence"),
        ({"sequence": -1}, Reason.MALFORMED, "manifest.sequence"),
        ({"sequence": 2**64}, Reason.MALFORMED, "manifest.sequence"),
        ({"vendor_id": b"short"}, Reason.MALFORMED, "manifest.vendor_id"),
        ({"payload_sha256": "ab" * 32}, Reason.MALFORMED, "manifest.payload_sha256"),
        ({"created": 1.5}, Reason.MALFORMED, "manifest.created"),
        ({"expires": 10**20}, Reason.MALFORMED, "manifest.expires"),
        ({"ops": "CONV_2D"}, Reason.MALFORMED, "manifest.ops"),
        ({"extra": 1}, Reason.MALFORMED, "unknown keys ['extra']"),
    ],
)
def test_strict_parsing_names_the_field(changes: dict, reason: Reason, words: str) -> None:
    with pytest.raises(BundleError) as info:
        mf.decode(wire(**changes))
    assert info.value.reason is reason
    assert words in str(info.value) and "\n" not in str(info.value)


def test_missing_field_is_named() -> None:
    data = mf.to_wire(manifest())
    del data["class_id"]
    with pytest.raises(BundleError, match=r"missing keys \['class_id'\]"):
        mf.decode(cbor2.dumps(data, canonical=True))


def test_trailing_bytes_and_duplicate_keys_are_refused() -> None:
    with pytest.raises(BundleError, match="trailing bytes"):
        mf.decode(mf.encode(manifest()) + b"\x00")
    # a map with "sequence" twice: a parser that kept the last one could be fooled
    with pytest.raises(BundleError, match="keys repeated"):
        mf.decode(b"\xa2\x68sequence\x01\x68sequence\x02")


def test_selftest_from_int8_arrays_is_row_major() -> None:
    import numpy as np

    x = np.arange(-12, 12, dtype=np.int8).reshape(3, 2, 4)
    y = np.array([[1, -2], [3, -4], [5, -6]], dtype=np.int8)
    st = SelfTest.from_arrays(x, y, tolerance=2)
    assert st.count == 3 and st.input_shape == [2, 4] and st.output_shape == [2] and st.tolerance == 2
    assert np.array_equal(np.frombuffer(st.inputs, dtype=np.int8).reshape(3, 2, 4), x)
    assert np.frombuffer(st.expected, dtype=np.int8).tolist() == [1, -2, 3, -4, 5, -6]
    with pytest.raises(ValueError, match="same count"):
        SelfTest.from_arrays(x, y[:2])
