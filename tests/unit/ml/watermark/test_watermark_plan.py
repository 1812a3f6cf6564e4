"""Embedding plans (no TensorFlow): the trigger floor is the fewest triggers whose owner test reaches
the bound, plans scale with the data between that floor and the configured set, and adaptation
moves towards cheaper plans without crossing the floor."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from tests.support.wm_keys import fixed_key
from tinymlops.ml.watermark.config import PAYLOAD_BITS, WatermarkConfig
from tinymlops.ml.watermark.key import WatermarkError
from tinymlops.ml.watermark.plan import (
    EmbedPlan,
    Outcome,
    clean_repeats,
    first_plan,
    fixed_plan,
    min_triggers,
    next_plan,
    verdict_p_value,
)
from tinymlops.ml.watermark.triggers import derive_triggers, owner_triggers


@pytest.mark.parametrize("n_classes", [2, 3, 4, 10])
@pytest.mark.parametrize("tests", [1, 2])
@pytest.mark.parametrize(("bound", "rate"), [(1e-9, 0.85), (1e-6, 0.7), (1e-30, 0.9)])
def test_floor_is_the_fewest_triggers_that_reach_the_bound(n_classes, tests, bound, rate) -> None:
    floor = min_triggers(n_classes, bound, rate, tests)

    def p(n: int) -> float:  # independently: tests × P(Binomial(n, 1/K) ≥ ⌈rate·n⌉)
        return tests * binom.sf(int(np.ceil(rate * n)) - 1, n, 1 / n_classes)

    assert p(floor) < bound and verdict_p_value(int(np.ceil(rate * floor)), floor, n_classes, tests) == pytest.approx(
        p(floor)
    )
    assert floor >= PAYLOAD_BITS  # one trigger per payload bit at least
    if floor > PAYLOAD_BITS:  # the statistic, not the payload, set it: one fewer does not reach the bound
        assert p(floor - 1) >= bound


def test_few_classes_need_more_triggers_than_the_payload() -> None:
    # 2 classes at a 60 % match rate: a chance model matches half, so the test needs many more.
    assert min_triggers(2, 1e-9, 0.6, 2) > 500
    assert min_triggers(2, 1e-9, 0.85, 2) > PAYLOAD_BITS == min_triggers(10, 1e-9, 0.85, 2)
    with pytest.raises(WatermarkError, match="fp_bound"):
        min_triggers(2, 1e-9, 0.5, 1)  # a chance model's own match rate: no count reaches it


def test_large_data_gets_the_configured_plan_small_data_a_scaled_one() -> None:
    config = WatermarkConfig()
    large, floor = first_plan(1257, 10, 2, config)  # the digits training split
    assert large == fixed_plan(config) and floor == PAYLOAD_BITS
    small, _ = first_plan(56, 4, 1, config)  # 80 samples, 4 classes (BasicMotions-sized)
    assert small.n_triggers == floor
    # the share is kept by replaying the clean data, not by letting triggers dominate …
    share = small.n_triggers / (small.n_triggers + small.clean_repeats * 56)
    assert share <= config.trigger_share and small.clean_repeats == 5
    # … and the replay does not lengthen the fine-tune: the same passes over the clean data
    assert small.epochs * small.clean_repeats == config.embed_epochs
    middle, _ = first_plan(300, 10, 2, config)
    assert floor < middle.n_triggers == round(config.triggers_per_sample * 300) < config.triggers


def test_a_set_too_small_for_the_test_is_refused_with_the_field() -> None:
    config = WatermarkConfig(triggers=64, plan_match_rate=0.7)
    with pytest.raises(WatermarkError, match=r"watermark.yaml: triggers 64 is below the \d+ that 2 classes need"):
        first_plan(1000, 2, 2, config)


def _search(first: EmbedPlan, floor: int, costly_from: int | None, weak_below: int, limit: int = 20) -> list[EmbedPlan]:
    """The plans next_plan walks through when every length ≥ costly_from costs too much and every
    length < weak_below marks too weakly (a stand-in for training, monotone as the real one is on average)."""
    tried: list[Outcome] = []
    plan: EmbedPlan | None = first
    while plan is not None and len(tried) < limit:
        costly = costly_from is not None and plan.epochs >= costly_from
        tried.append(Outcome(plan=plan, too_costly=costly, too_weak=plan.epochs < weak_below))
        if not tried[-1].too_costly and not tried[-1].too_weak:
            break
        plan = next_plan(tried, 56, floor, first.epochs)
    return [t.plan for t in tried]


def test_search_finds_a_length_between_weak_and_costly() -> None:
    first = EmbedPlan(n_triggers=100, trigger_share=0.2, clean_repeats=clean_repeats(100, 56, 0.2), epochs=12)
    walked = _search(first, 64, costly_from=40, weak_below=30)
    assert [p.epochs for p in walked] == [12, 24, 48, 36]  # longer, longer, too costly, midpoint
    assert 30 <= walked[-1].epochs < 40
    assert walked[-1].n_triggers == 75 < walked[0].n_triggers  # a costly attempt also cut the triggers …
    assert walked[-1].clean_repeats == first.clean_repeats  # … the replay stays, so the share falls
    assert walked[-1].trigger_share == 75 / (75 + first.clean_repeats * 56) < 100 / (100 + first.clean_repeats * 56)


def test_search_stops_without_crossing_the_floor() -> None:
    first = EmbedPlan(n_triggers=100, trigger_share=0.2, clean_repeats=5, epochs=12)
    walked = _search(first, 64, costly_from=1, weak_below=0)  # every length costs too much
    assert [p.epochs for p in walked] == [12, 6, 3, 1]
    assert min(p.n_triggers for p in walked) == 64  # never below the floor
    walked = _search(first, 64, costly_from=None, weak_below=10_000)  # no length marks strongly enough
    assert walked[-1].epochs == 4 * 12 and len(walked) < 6  # bounded: at most 4× the first length
    walked = _search(first, 64, costly_from=20, weak_below=21)  # weak below 21, costly from 20: no answer
    assert len(walked) < 8 and all(p.epochs < 21 or p.epochs >= 20 for p in walked)


def test_a_plan_marks_a_prefix_of_the_keys_set() -> None:
    key, shape = fixed_key(), (8, 8, 1)
    full = derive_triggers(key, shape, 10, 192)
    head = owner_triggers(key, shape, 10, WatermarkConfig().with_plan(64))
    assert len(head) == 64 and np.array_equal(head.x, full.x[:64])
    assert np.array_equal(head.one_label, full.one_label[:64])
    assert sorted(head.bit_index) == list(range(PAYLOAD_BITS))  # every payload bit still carried
    assert WatermarkConfig().with_plan(192).plan_triggers is None
    with pytest.raises(ValueError, match="plan_triggers 200 exceeds triggers 192"):
        WatermarkConfig(plan_triggers=200)
