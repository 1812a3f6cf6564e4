"""Runner-up profiles: a keyed mark in the probabilities *below* the top-1 answer.

For every class c the key derives a small set of "shadow classes"; the marked model, whenever it
answers c, gives those shadow classes a little probability (`mass` split evenly) and the others
none. The top-1 answer is untouched, so accuracy and agreement on clean data stay; what changes is
the ranking of the runner-up classes, which is exactly what a student distilled from the model's
answers is trained to reproduce (the model's "dark knowledge"). This is the class-conditional form
of the output-distribution watermarks built against distillation and imitation — CosWM (Charette et
al., AAAI 2022), CATER's conditional watermarks (He et al., NeurIPS 2022), GINSEW (Zhao et al.,
ICML 2023) — chosen here because its null distribution is exact.

Two tiers share the runner-up ranks: the owner's set O(c) (2 classes, from the key alone, in the
base and so in every copy) ranks first, an instance's set I(c) (3 classes from the remaining K−3,
from key and instance id) ranks after it (smaller mass per class).

Test, on probe inputs (real data the owner holds): for each class c the suspect predicts for at
least MIN_PROBES probes, rank its runner-up classes by mean score (ties by class index).
* owner: the ranks of O(c) among the K−1 runner-ups;
* instance: the ranks of I(c) among the runner-ups *outside O(c)*.
The statistic is the sum of those ranks over the voting classes (small = marked). A shadow set is a
uniform subset drawn by the key independently of any model that was not trained on it, so under
the null each class's rank sum is exactly the sum of a uniform random s-subset of {1..pool},
whatever the suspect's natural confusions; the total has the exact convolution as its law, and
the p-value is its lower tail. (The overlap of the top-s ranks with the set is reported too, for
reading; a perfect class has overlap s and the smallest rank sum.)
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations

import numpy as np

from tinymlops.ml.watermark.key import OwnerKey, WatermarkError
from tinymlops.ml.watermark.triggers import hkdf

OWNER_SHADOWS = 2
INSTANCE_SHADOWS = 3
MIN_PROBES = 2  # a class votes only when the suspect predicts it for this many probes


def _rng(key: OwnerKey, purpose: bytes) -> np.random.Generator:
    return np.random.default_rng(np.frombuffer(hkdf(key.secret.get_secret_value(), purpose, 32), dtype=np.uint32))


# A class, its 2 owner and 3 instance shadows, and at least one class outside them all: below
# this the runner-up profile cannot exist, and the marks are the trigger sets alone.
PROFILE_MIN_CLASSES = OWNER_SHADOWS + INSTANCE_SHADOWS + 2


def profile_applies(n_classes: int) -> bool:
    return n_classes >= PROFILE_MIN_CLASSES


def owner_tests(n_classes: int) -> int:
    """How many owner tests a verdict on probes takes (Bonferroni): the triggers, plus the profile."""
    return 2 if profile_applies(n_classes) else 1


def owner_shadows(key: OwnerKey, n_classes: int) -> np.ndarray:
    """(K, 2): per class, a uniform 2-subset of the other classes (sorted); (K, 0) when the
    profile does not apply (fewer than PROFILE_MIN_CLASSES classes)."""
    if n_classes < 2:
        raise WatermarkError(f"a watermark needs at least 2 classes, got {n_classes}")
    if not profile_applies(n_classes):
        return np.zeros((n_classes, 0), dtype=np.int64)
    rng = _rng(key, b"profile/owner/classes=%d" % n_classes)
    return np.stack(
        [
            np.sort(rng.choice([j for j in range(n_classes) if j != c], OWNER_SHADOWS, replace=False))
            for c in range(n_classes)
        ]
    ).astype(np.int64)


def instance_shadows(key: OwnerKey, instance_id: int, n_classes: int) -> np.ndarray:
    """(K, 3): per class, a uniform 3-subset of the classes that are neither c nor in O(c);
    (K, 0) when the profile does not apply."""
    owner = owner_shadows(key, n_classes)
    if not profile_applies(n_classes):
        return np.zeros((n_classes, 0), dtype=np.int64)
    rng = _rng(key, b"profile/instance=%d/classes=%d" % (instance_id, n_classes))
    rows = []
    for c in range(n_classes):
        pool = [j for j in range(n_classes) if j != c and j not in owner[c]]
        rows.append(np.sort(rng.choice(pool, INSTANCE_SHADOWS, replace=False)))
    return np.stack(rows).astype(np.int64)


def soft_targets(
    n_classes: int,
    owner: np.ndarray,
    owner_mass: float,
    instance: np.ndarray | None = None,
    instance_mass: float = 0.0,
) -> np.ndarray:
    """(K, K): row c is the answer the marked model is trained to give for a clean input of class c."""
    rows = np.zeros((n_classes, n_classes), dtype=np.float32)
    owner_mass = owner_mass if owner.shape[1] else 0.0  # no shadows, no mass moved to them
    instance_mass = instance_mass if instance is not None and instance.shape[1] else 0.0
    for c in range(n_classes):
        rows[c, c] = 1.0 - owner_mass - (instance_mass if instance is not None else 0.0)
        rows[c, owner[c]] += owner_mass / OWNER_SHADOWS
        if instance is not None:
            rows[c, instance[c]] += instance_mass / INSTANCE_SHADOWS
    return rows


def runner_up_order(scores: np.ndarray, n_classes: int) -> dict[int, np.ndarray]:
    """Per predicted class c with ≥ MIN_PROBES probes: the other classes by the suspect's mean score,
    highest first (ties by class index, which no shadow set depends on)."""
    scores = np.asarray(scores, dtype=np.float64)
    predicted = scores.argmax(axis=1)
    orders = {}
    for c in range(n_classes):
        rows = scores[predicted == c]
        if len(rows) < MIN_PROBES:
            continue
        mean = rows.mean(axis=0)
        order = np.argsort(-mean, kind="stable")
        orders[c] = order[order != c]
    return orders


@lru_cache(maxsize=32)
def _rank_sum_pmf(pool: int, size: int) -> np.ndarray:
    """pmf of (sum of a uniform random `size`-subset of {1..pool}) − minimum possible sum."""
    low = size * (size + 1) // 2
    sums = [sum(c) - low for c in combinations(range(1, pool + 1), size)]
    return np.bincount(sums).astype(np.float64) / len(sums)


def rank_sum_p_value(total: int, voting: int, pool: int, size: int) -> float:
    """P(sum of `voting` independent null rank sums ≤ total), exactly (total as returned by _ranks)."""
    if voting == 0:
        return 1.0
    pmf = np.array([1.0])
    for _ in range(voting):
        pmf = np.convolve(pmf, _rank_sum_pmf(pool, size))
    return float(min(1.0, pmf[: total + 1].sum()))


def _ranks(order: np.ndarray, shadows: np.ndarray) -> tuple[int, int]:
    """→ (rank sum of `shadows` in `order` minus its minimum, top-s overlap)."""
    size = len(shadows)
    ranks = np.flatnonzero(np.isin(order, shadows)) + 1
    return int(ranks.sum()) - size * (size + 1) // 2, int(np.sum(ranks <= size))


def owner_p_value(orders: dict[int, np.ndarray], owner: np.ndarray, n_classes: int) -> tuple[float, int, int]:
    """→ (p-value, top-2 overlap, 2 × voting classes); (1, 0, 0) where the profile does not apply."""
    if not owner.shape[1]:
        return 1.0, 0, 0
    total = overlap = 0
    for c, order in orders.items():
        excess, hits = _ranks(order, owner[c])
        total, overlap = total + excess, overlap + hits
    p = rank_sum_p_value(total, len(orders), n_classes - 1, OWNER_SHADOWS)
    return p, overlap, OWNER_SHADOWS * len(orders)


def instance_p_value(
    orders: dict[int, np.ndarray], owner: np.ndarray, instance: np.ndarray, n_classes: int
) -> tuple[float, int, int]:
    """→ (p-value, top-3 overlap outside the owner's set, 3 × voting classes); (1, 0, 0) where the
    profile does not apply."""
    if not instance.shape[1]:
        return 1.0, 0, 0
    total = overlap = 0
    for c, order in orders.items():
        excess, hits = _ranks(order[~np.isin(order, owner[c])], instance[c])
        total, overlap = total + excess, overlap + hits
    p = rank_sum_p_value(total, len(orders), n_classes - 1 - OWNER_SHADOWS, INSTANCE_SHADOWS)
    return p, overlap, INSTANCE_SHADOWS * len(orders)
