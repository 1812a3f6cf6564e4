"""Differential: Python `verify_bundle` and the C agent agree on accept/reject and on the reason,
over a hypothesis-generated corpus of valid and mutated bundles (5 × 1,100 = 5,500 cases).

Both sides see the same device: trust anchor, class, minimum sequence 0, clock, revocation list
and class KEK. The C device is fresh (no model yet) with an unbounded fast-forward policy, so its
device-only rules do not fire, except one: a manifest declaring more than a model slot is
`too_large` on the device where Python, streaming, finds the payload `payload_truncated` — one
class. Mutations: byte flips, cuts and appended bytes anywhere in the file; manifest fields (also
nested ones) replaced by generated values and re-signed with the genuine key; raw byte edits of
the signed manifest re-signed (non-canonical encodings included); protected-header edits re-signed.
"""

from __future__ import annotations

import functools
import io
from datetime import timedelta

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.device.agent import rig
from tests.unit.device.agent.rig import CLASS_ID, NOW
from tinymlops.bundle import cbor, container, cose, generate_kek, verify_bundle
from tinymlops.bundle.keys import _issue_revocations, _read_private
from tinymlops.bundle.trust import RevocationList
from tinymlops.device.agent import Layout, SimDevice

EXAMPLES = 1100
SLOT = 16 * 1024
SAME_CLASS = {"too_large": "payload_truncated"}
CASES = {"n": 0, "accepted": 0, "reasons": {}}
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@functools.cache
def world():
    kek = generate_kek()
    root = _read_private(rig.keydir() / "root.key", None)
    revoked = "0123456789abcdef"  # some other key: the list is there, and checked
    revocations = RevocationList.verify(_issue_revocations(root, 3, [revoked], NOW), rig.trust())
    layout = Layout.for_slot(SLOT, page_size=1024, meta_bytes=8192)
    template = SimDevice(rig.lib(), layout)
    template.provision(rig.trust().public_key, rig.DEVICE_ID, CLASS_ID, kek=kek, ff_bound=2**64 - 1)
    assert template.install_revocations(revocations.signed).reason == "ok"
    bases = [
        rig.bundle(8),
        rig.bundle(9, kek=kek),
        rig.bundle(10, selftest=None),
        rig.bundle(11, device_class="other-class"),
        rig.bundle(12, lifetime_days=0.1, now=NOW - timedelta(hours=3)),  # expired
        rig.bundle(13, payload=rig.model(2, 64, 16)),  # ~1 KB image
    ]
    return kek, revocations, layout, bytes(template.flash), bases


def agree(data: bytes) -> None:
    kek, revocations, layout, flash, _ = world()
    py = verify_bundle(
        io.BytesIO(data), rig.trust(), device_class=CLASS_ID, min_sequence=0, now=NOW,
        revocations=revocations, kek=kek, sink=io.BytesIO(),
    )  # fmt: skip
    dev = SimDevice(rig.lib(), layout, bytearray(flash))
    c = dev.install(data, NOW, chunk=509).reason
    c_class = SAME_CLASS.get(c, c)
    py_class = "pending" if py.ok else py.reason.value
    assert c_class == py_class, f"C agent: {c}, Python: {py_class} ({py.detail})"
    CASES["n"] += 1
    CASES["accepted"] += py.ok
    CASES["reasons"][py_class] = CASES["reasons"].get(py_class, 0) + 1


def split(data: bytes) -> tuple[bytes, bytes]:
    fp = io.BytesIO(data)
    signed = container.read_signed_manifest(fp)
    return signed, fp.read()


def resign_payload(signed: bytes, payload: bytes, protected: bytes | None = None) -> bytes:
    """The same COSE_Sign1 with another payload (and protected header), validly signed."""
    prot, unprot, _, _ = cbor2.loads(signed).value
    protected = prot if protected is None else protected
    sig = rig.signer()._key.sign(cose.sig_structure(protected, payload))
    return b"\xd2\x84" + cbor2.dumps(protected) + cbor.dumps(dict(unprot)) + cbor2.dumps(payload) + cbor2.dumps(sig)


def near(value):
    """Values close to what a field holds: other sizes, edges, other types."""
    ints = st.sampled_from([0, 1, 7, 8, 255, 256, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -1, -(2**64), 253402300799,
                            253402300800, int(NOW.timestamp())])  # fmt: skip
    texts = st.one_of(
        st.text(max_size=4),
        st.sampled_from(["", "a" * 256, "a" * 257, "é" * 256, "é" * 257, "😀" * 200, "A256GCM", "A256KW",
                         "0123456789abcdef", "0123456789ABCDEF", "0123456789abcde\n", "bundle-signing"]),
    )  # fmt: skip
    blobs = st.one_of(st.binary(max_size=4), st.sampled_from([bytes(n) for n in (11, 12, 15, 16, 17, 31, 32, 33, 40)]))
    leaf = st.one_of(st.none(), st.booleans(), ints, texts, blobs)
    nested = st.one_of(
        st.lists(st.one_of(ints, texts), max_size=9),
        st.dictionaries(st.sampled_from(["input_shape", "count", "alg", "x", "tolerance"]), leaf, max_size=3),
    )
    return st.one_of(leaf, nested)


FIELD_PATHS = [
    ("format_version",), ("model_name",), ("model_version",), ("sequence",), ("vendor_id",), ("class_id",),
    ("payload_sha256",), ("payload_size",), ("encrypted",), ("ciphertext_sha256",), ("ciphertext_size",),
    ("encryption",), ("created",), ("expires",), ("arena_bytes",), ("ops",), ("lineage",), ("selftest",),
    ("encryption", "alg"), ("encryption", "key_wrap"), ("encryption", "kek_id"), ("encryption", "wrapped_key"),
    ("encryption", "nonce"), ("selftest", "input_shape"), ("selftest", "output_shape"), ("selftest", "inputs"),
    ("selftest", "expected"), ("selftest", "count"), ("selftest", "tolerance"), ("lineage", "git_sha"),
    ("ops", 0), ("selftest", "input_shape", 0), ("extra_field",), ("selftest", "extra"),
]  # fmt: skip


def base_index():
    return st.integers(0, 5)


@SETTINGS
@given(which=base_index(), position=st.integers(0, 2**31), flip=st.integers(1, 255))
def test_byte_flips_anywhere(which: int, position: int, flip: int) -> None:
    data = bytearray(world()[4][which])
    data[position % len(data)] ^= flip
    agree(bytes(data))


@SETTINGS
@given(which=base_index(), cut=st.integers(0, 2**31), tail=st.binary(max_size=24), unchanged=st.booleans())
def test_cuts_appends_and_genuine(which: int, cut: int, tail: bytes, unchanged: bool) -> None:
    data = world()[4][which]
    if unchanged:
        agree(data + tail)
    else:
        agree(data[: cut % (len(data) + 1)])


@SETTINGS
@given(which=base_index(), path=st.sampled_from(FIELD_PATHS), data=st.data(), delete=st.booleans())
def test_manifest_field_replaced_and_resigned(which: int, path: tuple, data, delete: bool) -> None:
    signed, body = split(world()[4][which])
    wire = cbor2.loads(cbor2.loads(signed).value[2])
    target = wire
    for key in path[:-1]:
        target = target.get(key) if isinstance(target, dict) else None
        if not isinstance(target, dict | list):
            target = None
            break
    last = path[-1]
    if isinstance(target, dict):
        if delete and last in target:
            del target[last]
        else:
            target[last] = data.draw(near(target.get(last)))
    elif isinstance(target, list) and isinstance(last, int) and target:
        target[last] = data.draw(near(target[0]))
    payload = cbor.dumps(wire)
    agree(container.header(len(s := resign_payload(signed, payload))) + s + body)


@SETTINGS
@given(which=base_index(), position=st.integers(0, 2**31), value=st.integers(0, 255), mode=st.integers(0, 2))
def test_manifest_bytes_edited_and_resigned(which: int, position: int, value: int, mode: int) -> None:
    """Raw edits of the manifest's CBOR (non-canonical forms, broken items), validly signed."""
    signed, body = split(world()[4][which])
    payload = bytearray(cbor2.loads(signed).value[2])
    i = position % len(payload)
    if mode == 0:
        payload[i] = value
    elif mode == 1:
        payload.insert(i, value)
    else:
        del payload[i]
    s = resign_payload(signed, bytes(payload))
    agree(container.header(len(s)) + s + body)


PROTECTED = [
    {1: -8, 3: cose.CONTENT_MANIFEST},
    {1: -7, 3: cose.CONTENT_MANIFEST, 4: None},
    {1: -8, 2: [1], 3: cose.CONTENT_MANIFEST, 4: None},
    {1: -8, 3: cose.CONTENT_KEY_STATEMENT, 4: None},
    {1: -8, 3: cose.CONTENT_MANIFEST, 4: b""},
    {1: -8, 3: cose.CONTENT_MANIFEST, 4: None, 5: b"iv"},
    {1: "EdDSA", 3: cose.CONTENT_MANIFEST, 4: None},
    {1: -8, 3: cose.CONTENT_MANIFEST, 4: None},
]


@SETTINGS
@given(which=base_index(), header=st.sampled_from(PROTECTED), raw_edit=st.integers(-1, 40), value=st.integers(0, 255))
def test_protected_header_edited_and_resigned(which: int, header: dict, raw_edit: int, value: int) -> None:
    signed, body = split(world()[4][which])
    header = {k: (bytes.fromhex(rig.signer().kid) if v is None else v) for k, v in header.items()}
    protected = bytearray(cbor.dumps(header))
    if raw_edit >= 0:
        protected[raw_edit % len(protected)] = value
    s = resign_payload(signed, cbor2.loads(signed).value[2], bytes(protected))
    agree(container.header(len(s)) + s + body)


@pytest.fixture(scope="module", autouse=True)
def corpus_size_and_coverage():  # type: ignore[no-untyped-def]
    """After the module's last test (whatever order they ran in): the corpus was at least 5,000
    bundles, both outcomes occurred, and the rejections spread over many reasons."""
    yield
    if CASES["n"] == 0:  # only a -k selection that ran none of the corpus tests
        return
    print(f"\ndifferential corpus: {CASES}")
    assert CASES["n"] >= 5000, CASES
    assert CASES["accepted"] > 50 and CASES["n"] - CASES["accepted"] > 2500, CASES
    assert len(CASES["reasons"]) >= 10, CASES["reasons"]
