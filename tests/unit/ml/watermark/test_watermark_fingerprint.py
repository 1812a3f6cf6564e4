"""The conferrable-example fingerprint (reported alongside the owner tests): its Beta-binomial null
is conservative and the sealed file opens only with the owner key. Its generation and its figures
under attack are measured in bench/watermark.py (minutes, so not here)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import betabinom

from tests.support.wm_keys import fixed_key
from tinymlops.ml.watermark.config import WatermarkConfig
from tinymlops.ml.watermark.fingerprint import (
    Fingerprint,
    fingerprint_p_value,
    fit_null,
    score_fingerprint,
    seal,
    unseal,
)
from tinymlops.ml.watermark.key import WatermarkError


def small_fingerprint() -> Fingerprint:
    rng = np.random.default_rng(0)
    x = (np.round(rng.random((50, 8, 8, 1)) * 255) / 255).astype(np.float32)
    return Fingerprint(x=x, targets=rng.integers(0, 10, 50), null_alpha=3.0, null_beta=7.0, n_classes=10)


def test_p_value_is_the_beta_binomial_tail_of_a_conservative_null() -> None:
    assert fingerprint_p_value(40, 100, 3.0, 7.0) == pytest.approx(betabinom.sf(39, 100, 3.0, 7.0))
    assert fingerprint_p_value(0, 100, 3.0, 7.0) == 1.0
    rates = [0.1, 0.2, 0.3, 0.25, 0.35, 0.15]
    alpha, beta = fit_null(rates, 100)
    mean, var = alpha / (alpha + beta), alpha * beta / ((alpha + beta) ** 2 * (alpha + beta + 1))
    assert mean > np.mean(rates) and var > np.var(rates, ddof=1)  # both raised to upper bounds
    # a suspect at the calibration models' worst rate is nowhere near significant
    assert fingerprint_p_value(35, 100, alpha, beta) > 0.05


def test_score_counts_target_answers() -> None:
    fp = small_fingerprint()
    settings = WatermarkConfig().fingerprint
    exact = score_fingerprint(fp.targets, fp, settings, "copy")
    assert exact.matches == 50 and exact.n_queries == 50 and exact.p_value < 1e-6 and exact.owned
    other = score_fingerprint((fp.targets + 1) % 10, fp, settings, "other")
    assert other.matches == 0 and other.p_value == 1.0 and not other.owned
    with pytest.raises(WatermarkError, match="answers for"):
        score_fingerprint(fp.targets[:10], fp, settings, "short")


def test_seal_round_trip_and_wrong_key() -> None:
    fp, key = small_fingerprint(), fixed_key()
    sealed = seal(fp, key)
    opened = unseal(sealed, key)
    assert np.array_equal(opened.x, fp.x) and np.array_equal(opened.targets, fp.targets)
    assert opened.null_rate == fp.null_rate and fp.x.tobytes()[:64] not in sealed
    with pytest.raises(WatermarkError, match="cannot open"):
        unseal(sealed, fixed_key("someone-else"))
    with pytest.raises(WatermarkError, match="not a tinymlops fingerprint"):
        unseal(b"junk" * 20, key)
