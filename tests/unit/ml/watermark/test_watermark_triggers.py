"""Trigger derivation (HKDF-SHA256) and the payload code: deterministic, key-separated, in the input
domain, uniform labels, and a repetition code that survives a few wrong answers."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.wm_keys import fixed_key
from tinymlops.ml.watermark.key import WatermarkError
from tinymlops.ml.watermark.triggers import UNDECIDED, decode_bits, derive_triggers, hkdf

SHAPE = (8, 8, 1)


def test_same_key_same_triggers() -> None:
    a = derive_triggers(fixed_key(), SHAPE, 10, 192)
    b = derive_triggers(fixed_key(), SHAPE, 10, 192)
    assert np.array_equal(a.x, b.x)
    assert np.array_equal(a.zero_label, b.zero_label) and np.array_equal(a.one_label, b.one_label)


def test_different_secret_different_triggers() -> None:
    a = derive_triggers(fixed_key("owner-a"), SHAPE, 10, 192)
    b = derive_triggers(fixed_key("owner-b"), SHAPE, 10, 192)
    assert np.mean(a.x == b.x) < 0.02  # only chance coincidences on a 256-level grid
    assert np.mean(a.zero_label == b.zero_label) < 0.25


def test_model_shape_and_classes_separate_trigger_sets() -> None:
    base = derive_triggers(fixed_key(), SHAPE, 10, 192)
    other_classes = derive_triggers(fixed_key(), SHAPE, 12, 192)
    other_shape = derive_triggers(fixed_key(), (8, 8, 3), 10, 192)
    assert not np.array_equal(base.x, other_classes.x)
    assert not np.array_equal(base.x[:, :, :, 0], other_shape.x[:, :, :, 0])


def test_hkdf_is_rfc5869_hkdf_sha256() -> None:
    """RFC 5869 test case 1 (salt/info differ, so check via the library directly), and long
    outputs extend short ones: the first block of a long expansion is the short one."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    secret = bytes(range(32))
    expected = HKDF(hashes.SHA256(), 42, b"tinymlops/ml/watermark/v1", b"purpose/block/0").derive(secret)
    assert hkdf(secret, b"purpose", 42) == expected
    long = hkdf(secret, b"purpose", 20_000)
    assert len(long) == 20_000 and long[:8160] == hkdf(secret, b"purpose", 8160)
    assert hkdf(secret, b"purpose", 64) != hkdf(secret, b"other", 64)


def test_triggers_are_in_the_input_domain() -> None:
    t = derive_triggers(fixed_key(), SHAPE, 10, 192)
    assert t.x.dtype == np.float32 and t.x.shape == (192, *SHAPE)
    assert t.x.min() >= 0.0 and t.x.max() <= 1.0
    assert np.allclose(t.x * 255, np.round(t.x * 255), atol=1e-4)  # on the int8 input grid


def test_labels_are_uniform_and_the_two_candidates_differ() -> None:
    t = derive_triggers(fixed_key(), SHAPE, 10, 4096)
    assert np.all(t.zero_label != t.one_label)
    for labels in (t.zero_label, t.one_label, t.targets(fixed_key().payload_bits())):
        share = np.bincount(labels, minlength=10) / len(labels)
        assert labels.min() >= 0 and labels.max() < 10
        assert np.all(np.abs(share - 0.1) < 0.03), share


def test_every_bit_is_carried_by_several_triggers() -> None:
    t = derive_triggers(fixed_key(), SHAPE, 10, 192)
    assert np.all(np.bincount(t.bit_index, minlength=64) == 3)


def test_payload_round_trip() -> None:
    key = fixed_key()
    t = derive_triggers(key, SHAPE, 10, 192)
    assert np.array_equal(decode_bits(t.targets(key.payload_bits()), t), key.payload_bits())


def test_a_few_wrong_answers_do_not_flip_bits() -> None:
    key = fixed_key()
    bits = key.payload_bits()
    t = derive_triggers(key, SHAPE, 10, 192)
    answers = t.targets(bits).copy()
    rng = np.random.default_rng(0)
    # One trigger of each of 20 bits answers the *other* candidate, 20 more answer a third label.
    flipped = rng.choice(64, 40, replace=False)
    for n, bit in enumerate(flipped):
        i = np.flatnonzero(t.bit_index == bit)[n % 3]
        if n < 20:
            answers[i] = t.zero_label[i] if bits[bit] else t.one_label[i]
        else:
            answers[i] = next(c for c in range(10) if c not in (t.zero_label[i], t.one_label[i]))
    assert np.array_equal(decode_bits(answers, t), bits)


def test_two_of_three_wrong_flip_the_bit_and_ties_are_undecided() -> None:
    key = fixed_key()
    bits = key.payload_bits()
    t = derive_triggers(key, SHAPE, 10, 192)
    answers = t.targets(bits).copy()
    i0, i1, _ = np.flatnonzero(t.bit_index == 5)
    for i in (i0, i1):
        answers[i] = t.zero_label[i] if bits[5] else t.one_label[i]
    j0, j1, _ = np.flatnonzero(t.bit_index == 9)
    answers[j0] = t.zero_label[j0] if bits[9] else t.one_label[j0]
    answers[j1] = next(c for c in range(10) if c not in (t.zero_label[j1], t.one_label[j1]))
    decoded = decode_bits(answers, t)
    assert decoded[5] == 1 - bits[5]
    assert decoded[9] == UNDECIDED
    assert np.sum(decoded != bits) == 2


def test_trigger_set_repr_hides_the_triggers() -> None:
    t = derive_triggers(fixed_key(), SHAPE, 10, 64)
    assert repr(t) == "TriggerSet(n=64, shape=(8, 8, 1), classes=10)" and str(t) == repr(t)


@pytest.mark.parametrize(("classes", "n", "word"), [(1, 192, "2 classes"), (10, 63, "at least 64")])
def test_impossible_watermarks_are_refused(classes: int, n: int, word: str) -> None:
    with pytest.raises(WatermarkError, match=word):
        derive_triggers(fixed_key(), SHAPE, classes, n)
