"""Fuzzing the parser and verifier: no input may crash them. verify_bundle always returns a
VerificationResult (ok=False for anything not genuine); read_manifest raises only BundleError."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.bundle_keys import sample_draft
from tinymlops.bundle import (
    BundleError,
    Reason,
    VerificationResult,
    build_bundle,
    container,
    cose,
    init_keys,
    load_signer,
    load_trust,
    read_manifest,
    verify_bundle,
)
from tinymlops.bundle import manifest as mf

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
# database=None: no .hypothesis/ folder in the checkout; failures print their reproducing example
FUZZ = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=24)
    | st.binary(max_size=48)
)
cbor_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=12) | st.integers(-30, 30), inner, max_size=6)
        | st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 3, 4, 18, 24, 28, 29, 37, 258, 55799]), inner)
    ),
    max_leaves=24,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("keys")
    init_keys(directory, now=NOW - timedelta(days=1))
    signer = load_signer(directory, now=NOW)
    out = directory.parent / "fuzz.bundle"
    draft = sample_draft(sequence=3, arena_bytes=1024, ops=["CONV_2D"])
    build_bundle(bytes(range(256)) * 8, draft, signer, out, now=NOW)
    return signer, load_trust(directory / "root.pub"), out.read_bytes()


def verify(data: bytes, trust) -> VerificationResult:
    result = verify_bundle(io.BytesIO(data), trust, now=NOW, sink=io.BytesIO())
    assert isinstance(result, VerificationResult)
    assert result.ok or isinstance(result.reason, Reason)
    return result


def parse_only(data: bytes) -> None:
    try:
        read_manifest(io.BytesIO(data))
    except BundleError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(data=st.binary(max_size=512))
def test_random_bytes_never_crash(world, data: bytes) -> None:
    _, trust, _ = world
    assert not verify(data, trust).ok
    parse_only(data)


@FUZZ
@given(body=st.binary(max_size=512), declared=st.integers(0, 2**32 - 1))
def test_random_manifest_in_a_valid_container_never_crashes(world, body: bytes, declared: int) -> None:
    _, trust, _ = world
    data = container.MAGIC + container.VERSION.to_bytes(2, "big") + declared.to_bytes(4, "big") + body
    assert not verify(data, trust).ok
    parse_only(data)


@FUZZ
@given(value=cbor_values)
def test_any_cbor_value_as_cose_message_never_crashes(world, value) -> None:
    _, trust, _ = world
    encoded = cbor2.dumps(value)
    assert not verify(container.header(len(encoded)) + encoded, trust).ok


@FUZZ
@given(value=cbor_values)
def test_any_cbor_value_signed_as_manifest_is_malformed(world, value) -> None:
    """Even a correctly signed message cannot crash the manifest parser with its content."""
    signer, trust, _ = world
    signed = signer.sign(cbor2.dumps(value))
    result = verify(container.header(len(signed)) + signed, trust)
    assert not result.ok and result.reason in (Reason.MALFORMED, Reason.UNSUPPORTED_VERSION)
    with pytest.raises(BundleError):
        mf.decode(cbor2.dumps(value))


@FUZZ
@given(field=st.sampled_from(list(mf.Manifest.model_fields)), value=cbor_values)
def test_one_field_replaced_by_anything(world, field: str, value) -> None:
    """A genuine manifest with one field swapped for an arbitrary CBOR value, then signed."""
    signer, trust, bundle = world
    signed, payload = _split(bundle)
    wire = cbor2.loads(cose.decode_sign1(signed, "fuzz", cose.CONTENT_MANIFEST).payload)
    wire[field] = value
    resigned = signer.sign(cbor2.dumps(wire))
    result = verify(container.header(len(resigned)) + resigned + payload, trust)
    try:
        mf.decode(cbor2.dumps(wire))
    except BundleError:
        # a value the manifest schema refuses: the verifier refuses the bundle as malformed
        assert not result.ok and result.reason in (Reason.MALFORMED, Reason.UNSUPPORTED_VERSION)
    else:
        # a value the schema accepts: any refusal is about what it says, never a parser failure
        assert result.ok or result.reason not in (Reason.MALFORMED, Reason.IO_ERROR)


@FUZZ
@given(position=st.integers(min_value=0), flip=st.integers(1, 255), cut=st.booleans())
def test_mutated_genuine_bundle_is_rejected(world, position: int, flip: int, cut: bool) -> None:
    _, trust, bundle = world
    data = bytearray(bundle)
    position %= len(data)
    if cut:
        del data[position:]
    else:
        data[position] ^= flip
    assert not verify(bytes(data), trust).ok


def _split(bundle: bytes) -> tuple[bytes, bytes]:
    fp = io.BytesIO(bundle)
    return container.read_signed_manifest(fp), fp.read()


@FUZZ
@given(data=st.binary(max_size=300) | cbor_values.map(cbor2.dumps))
def test_key_statement_and_revocation_parsers_never_crash(world, data: bytes) -> None:
    from tinymlops.bundle import RevocationList
    from tinymlops.bundle.trust import verify_statement

    _, trust, _ = world
    for parse in (lambda: verify_statement(data, trust), lambda: RevocationList.verify(data, trust)):
        with pytest.raises(BundleError):
            parse()
