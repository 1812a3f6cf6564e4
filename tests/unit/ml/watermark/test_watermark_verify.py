"""Verification statistics: the chance p-value is the binomial tail, and the verdict follows it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from tests.support.wm_keys import fixed_key
from tinymlops.ml.watermark.config import WatermarkConfig
from tinymlops.ml.watermark.triggers import derive_triggers
from tinymlops.ml.watermark.verify import chance_p_value, score, verify_predict

SHAPE = (8, 8, 1)


@pytest.mark.parametrize(
    ("matches", "n", "k"), [(0, 192, 10), (19, 192, 10), (40, 192, 10), (192, 192, 10), (7, 64, 2)]
)
def test_p_value_is_the_binomial_upper_tail(matches: int, n: int, k: int) -> None:
    by_sum = float(sum(binom.pmf(m, n, 1 / k) for m in range(matches, n + 1)))
    assert chance_p_value(matches, n, k) == pytest.approx(by_sum, rel=1e-9, abs=1e-300)


def test_p_value_edges() -> None:
    assert chance_p_value(0, 192, 10) == 1.0
    assert chance_p_value(192, 192, 10) == pytest.approx(10.0**-192, rel=1e-6)
    # How many matches the default config needs before it will say "owned": far above chance (19).
    needed = next(m for m in range(193) if chance_p_value(m, 192, 10) < 1e-9)
    assert 45 <= needed <= 60


def test_perfect_answers_are_owned_with_ber_zero() -> None:
    key, config = fixed_key(), WatermarkConfig()
    t = derive_triggers(key, SHAPE, 10, config.triggers)
    report = score(t.targets(key.payload_bits()), t, key, config, "oracle")
    assert report.owned and report.ber == 0 and report.matches == 192
    assert report.decoded_payload_id == key.payload_id == "0000002a00000007"
    assert report.p_value < 1e-150 and "OWNED" in report.line()


def test_another_owners_key_does_not_match() -> None:
    """A model marked with key A, asked with key B's triggers, answers A-style labels: no match."""
    config = WatermarkConfig()
    a, b = fixed_key("owner-a"), fixed_key("owner-b")
    ta, tb = derive_triggers(a, SHAPE, 10, 192), derive_triggers(b, SHAPE, 10, 192)
    report = score(ta.targets(a.payload_bits()), tb, b, config, "wrong key")
    assert not report.owned and report.p_value > 1e-3


@pytest.mark.parametrize("constant", [0, 3, 9])
def test_a_constant_model_is_not_owned(constant: int) -> None:
    report = verify_predict(lambda x: np.full(len(x), constant), fixed_key(), WatermarkConfig(), SHAPE, 10)
    assert not report.owned and report.p_value > 1e-3
    assert 0 < report.ber and report.matches < 40


def test_random_scores_are_not_owned() -> None:
    rng = np.random.default_rng(1)
    report = verify_predict(lambda x: rng.random((len(x), 10)), fixed_key(), WatermarkConfig(), SHAPE, 10)
    assert not report.owned and report.p_value > 1e-3 and report.ber > 0.2


def test_fp_bound_decides_the_verdict() -> None:
    key = fixed_key()
    t = derive_triggers(key, SHAPE, 10, 192)
    answers = t.targets(key.payload_bits()).copy()
    answers[:150] = (answers[:150] + 1) % 10  # 42 matches left: p ~ 1e-7
    loose = score(answers, t, key, WatermarkConfig(fp_bound=1e-6), "x")
    strict = score(answers, t, key, WatermarkConfig(), "x")
    assert loose.p_value == strict.p_value and 1e-9 < strict.p_value < 1e-6
    assert loose.owned and not strict.owned


def test_raise_if_not_owned_is_one_line() -> None:
    from tinymlops.ml.watermark.key import WatermarkError

    report = verify_predict(lambda x: np.zeros(len(x)), fixed_key(), WatermarkConfig(), SHAPE, 10, "final int8")
    with pytest.raises(WatermarkError) as info:
        report.raise_if_not_owned()
    message = str(info.value)
    assert "\n" not in message and message.startswith("final int8: watermark 0000002a00000007 not detected")
