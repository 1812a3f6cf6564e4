"""The two owner tests together, and extraction: a copy distilled from an instance's answers, which
the trigger watermark (test 1) misses, is still claimed by the runner-up profile (test 2) and traced
to its instance; independently trained models are claimed by neither and trace to none."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.wm_keys import fixed_key
from tinymlops.ml.watermark.profile import (
    PROFILE_MIN_CLASSES,
    instance_p_value,
    instance_shadows,
    owner_p_value,
    owner_shadows,
    rank_sum_p_value,
    runner_up_order,
    soft_targets,
)


def ownership(data: bytes, key, wm_config, probes):
    from tinymlops.ml.watermark.ownership import verify_ownership
    from tinymlops.ml.watermark.verify import tflite_predict

    predict, shape, n_classes = tflite_predict(data)
    return verify_ownership(predict, key, wm_config, shape, n_classes, probes)


def test_shadow_sets_are_keyed_and_disjoint() -> None:
    owner, inst = owner_shadows(fixed_key(), 10), instance_shadows(fixed_key(), 3, 10)
    assert np.array_equal(owner, owner_shadows(fixed_key(), 10))
    assert not np.array_equal(owner, owner_shadows(fixed_key("x"), 10))
    for c in range(10):
        assert c not in owner[c] and c not in inst[c] and not set(owner[c]) & set(inst[c])
    rows = soft_targets(10, owner, 0.14, inst, 0.12)
    assert np.allclose(rows.sum(axis=1), 1) and np.all(rows.argmax(axis=1) == np.arange(10))
    # the owner's shadows rank above the instance's, so the two tests read different ranks
    assert rows[0, owner[0][0]] > rows[0, inst[0][0]] > 0


@pytest.mark.parametrize("n_classes", [2, 3, PROFILE_MIN_CLASSES - 1])
def test_with_too_few_classes_for_a_profile_the_marks_are_the_triggers_alone(n_classes: int) -> None:
    """A 3-class sensor dataset has no room for 2 owner and 3 instance shadow classes: clean inputs
    keep their hard labels, and the profile tests abstain (p = 1) instead of refusing the model."""
    owner, inst = owner_shadows(fixed_key(), n_classes), instance_shadows(fixed_key(), 3, n_classes)
    assert owner.shape == (n_classes, 0) and inst.shape == (n_classes, 0)
    assert np.array_equal(soft_targets(n_classes, owner, 0.14, inst, 0.12), np.eye(n_classes))
    orders = runner_up_order(np.tile(np.eye(n_classes), (2, 1)), n_classes)
    assert owner_p_value(orders, owner, n_classes) == (1.0, 0, 0)
    assert instance_p_value(orders, owner, inst, n_classes) == (1.0, 0, 0)


def test_profile_null_is_the_exact_rank_sum_convolution() -> None:
    # one class, 2 shadows among 9: rank sums 3..17 over the 36 pairs; the best (ranks 1, 2) is 1/36
    assert rank_sum_p_value(0, 1, 9, 2) == pytest.approx(1 / 36)
    assert rank_sum_p_value(1, 1, 9, 2) == pytest.approx(2 / 36)  # {1,2} and {1,3}
    assert rank_sum_p_value(0, 10, 9, 2) == pytest.approx(36.0**-10)
    assert rank_sum_p_value(0, 10, 7, 3) == pytest.approx(35.0**-10)
    assert rank_sum_p_value(10**6, 10, 9, 2) == pytest.approx(1.0)
    # Monte Carlo check of the convolution for 3 classes
    rng = np.random.default_rng(0)
    draws = np.array([sum(rng.choice(9, 2, replace=False).sum() + 2 - 3 for _ in range(3)) for _ in range(20000)])
    for t in (3, 6, 9):
        assert rank_sum_p_value(t, 3, 9, 2) == pytest.approx(np.mean(draws <= t), abs=0.01)


def test_runner_up_order_uses_mean_scores_and_needs_two_probes() -> None:
    scores = np.array([[0.8, 0.05, 0.15, 0.0], [0.7, 0.1, 0.2, 0.0], [0.1, 0.9, 0.0, 0.0]])
    orders = runner_up_order(scores, 4)
    assert list(orders) == [0] and list(orders[0]) == [2, 1, 3]  # class 1 has a single probe: no vote
    tied = runner_up_order(np.array([[0.9, 0.0, 0.0, 0.1], [0.9, 0.0, 0.0, 0.1]]), 4)
    assert list(tied[0]) == [3, 1, 2]  # ties break by class index


def test_both_tests_claim_the_base_and_the_instances(marked, instances, owner_key, wm_config, splits) -> None:
    for data in [marked["int8"]] + [i["int8"] for i in instances.values()]:
        report = ownership(data, owner_key, wm_config, splits["test"].x)
        print(" | ".join(report.lines()))
        assert report.owned and report.watermark.p_value < 1e-9 and report.watermark.n_triggers == 192
        assert report.profile.p_value < 1e-6 and report.profile.n_queries == len(splits["test"].x)


def test_a_distilled_copy_is_found_by_the_second_test(instances, owner_key, wm_config, splits, to_int8) -> None:
    """Extraction: a fresh cnn_small trained only on instance 3's int8 answers to every training input."""
    from tinymlops.ml.watermark.attacks import distill
    from tinymlops.ml.watermark.instances import trace
    from tinymlops.ml.watermark.tuning import accuracy
    from tinymlops.ml.watermark.verify import tflite_predict

    teacher, _, _ = tflite_predict(instances[3]["int8"], dequantize=True)
    student = to_int8(distill(teacher, splits["train"].x, "cnn_small", 10, epochs=20, seed=3))
    predict, shape, n_classes = tflite_predict(student)
    test = splits["test"]
    print(f"teacher accuracy {accuracy(teacher, test.x, test.y):.4f}, copy {accuracy(predict, test.x, test.y):.4f}")
    assert accuracy(predict, test.x, test.y) >= accuracy(teacher, test.x, test.y) - 0.03
    report = ownership(student, owner_key, wm_config, test.x)
    traced = trace(predict, owner_key, range(20), shape, n_classes, wm_config.instance, test.x)
    for line in [*report.lines(), traced.line()]:
        print(line)
    assert report.watermark.p_value > 1e-6  # test 1 misses it: the triggers were never queried
    assert report.profile.p_value < 1e-6 and report.owned  # test 2 does not
    assert traced.instance_id == 3 and traced.p_value < 1e-6, traced.line()


def test_independent_models_are_not_claimed(independent, owner_key, wm_config, splits) -> None:
    from tinymlops.ml.watermark.instances import trace
    from tinymlops.ml.watermark.verify import tflite_predict

    for data in independent:
        report = ownership(data, owner_key, wm_config, splits["test"].x)
        print(" | ".join(report.lines()))
        assert not report.owned and report.watermark.p_value > 1e-3 and report.profile.p_value > 1e-3
        predict, shape, n_classes = tflite_predict(data)
        traced = trace(predict, owner_key, range(20), shape, n_classes, wm_config.instance, splits["test"].x)
        assert traced.instance_id is None and traced.p_value > 1e-3


def test_a_foreign_key_claims_nothing(instances, owner_key, wm_config, splits) -> None:
    report = ownership(instances[3]["int8"], fixed_key("someone-else"), wm_config, splits["test"].x)
    assert not report.owned and report.watermark.p_value > 1e-3 and report.profile.p_value > 1e-3
