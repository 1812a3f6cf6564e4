"""Embedding plans that fit the training set: how many triggers, what trigger:clean mix, how long.

A fixed plan (192 triggers at a 20 % share, 60 epochs) assumes a dataset of a thousand samples or
more: on 56 training samples the triggers outnumber the clean rows three to one, and a long
fine-tune on so few rows drifts from the early-stopped model. A plan here scales with the data:

* triggers — between a floor and a ceiling. The floor is the fewest triggers whose owner test can
  still reach `fp_bound` when the shipped model answers only `plan_match_rate` of them, Bonferroni
  over the owner tests the verdict takes, and never fewer than the 64 payload bits; the ceiling is
  `triggers` (the key's set: a plan marks a prefix of it) and `triggers_per_sample` × the samples;
* mix — triggers stay at most `trigger_share` of an epoch's rows: the clean data is replayed
  (each sample several times per epoch) rather than letting the triggers dominate;
* length — the clean data is passed over `embed_epochs` times in all (epochs × replay), as on
  large data, so replay does not lengthen the fine-tune.

Adaptation is a bounded search on the length (the mark's strength against its cost): an attempt
that costs too much is followed by a shorter one with fewer triggers (down to the floor, so a lower
mix); one whose mark is too weak by a longer one; between a too-weak and a too-costly length, the
midpoint. No TensorFlow.
"""

from __future__ import annotations

import math

from pydantic import BaseModel
from scipy.stats import binom

from tinymlops.ml.watermark.config import PAYLOAD_BITS, WatermarkConfig
from tinymlops.ml.watermark.key import WatermarkError

MAX_TRIGGERS = 4096  # derive_triggers' own limit (configs/watermark.yaml `triggers` le)
SHRINK = 0.75  # an over-cost attempt keeps this share of its triggers
MAX_EPOCH_FACTOR = 4  # a too-weak mark may train up to this multiple of the first plan's epochs


class EmbedPlan(BaseModel):
    n_triggers: int  # a prefix of the key's `triggers` set
    trigger_share: float  # triggers / all rows of an epoch, at most
    clean_repeats: int  # times each clean sample appears per epoch (the replay that keeps the share)
    epochs: int

    def line(self) -> str:
        return (
            f"{self.n_triggers} triggers at ≤{self.trigger_share:.0%} of rows, "
            f"clean data ×{self.clean_repeats}, {self.epochs} epochs"
        )


def verdict_p_value(matches: int, n_triggers: int, n_classes: int, tests: int) -> float:
    """The verdict's p-value (× tests) for `matches` of `n_triggers`: P(Binomial(n, 1/K) ≥ matches)."""
    return min(1.0, tests * float(binom.sf(matches - 1, n_triggers, 1.0 / n_classes)))


def min_triggers(n_classes: int, fp_bound: float, match_rate: float, tests: int) -> int:
    """The smallest trigger count (≥ the 64 payload bits) whose test reaches `fp_bound` at `match_rate`.

    Raises WatermarkError when no count up to 4096 can (e.g. 2 classes at a low match rate)."""
    if n_classes < 2:
        raise WatermarkError(f"a watermark needs a classifier with at least 2 classes, got {n_classes}")
    for n in range(PAYLOAD_BITS, MAX_TRIGGERS + 1):
        if verdict_p_value(math.ceil(match_rate * n), n, n_classes, tests) < fp_bound:
            return n
    raise WatermarkError(
        f"watermark.yaml: no trigger count ≤ {MAX_TRIGGERS} reaches fp_bound {fp_bound:.0e} with {n_classes} classes "
        f"at plan_match_rate {match_rate}"
    )


def clean_repeats(n_triggers: int, n_train: int, share: float) -> int:
    """Times the clean data must be replayed so `n_triggers` rows are at most `share` of an epoch."""
    return max(1, math.ceil(n_triggers * (1 - share) / (share * n_train)))


def fixed_plan(config: WatermarkConfig) -> EmbedPlan:
    """What the configuration says, unadapted: every trigger, the configured share, no replay."""
    return EmbedPlan(
        n_triggers=config.triggers, trigger_share=config.trigger_share, clean_repeats=1, epochs=config.embed_epochs
    )


def first_plan(n_train: int, n_classes: int, tests: int, config: WatermarkConfig) -> tuple[EmbedPlan, int]:
    """→ (the plan to try first, the trigger floor). On large data it is the fixed plan."""
    floor = min_triggers(n_classes, config.fp_bound, config.plan_match_rate, tests)
    if floor > config.triggers:
        raise WatermarkError(
            f"watermark.yaml: triggers {config.triggers} is below the {floor} that {n_classes} classes need "
            f"for p < {config.fp_bound:.0e} at plan_match_rate {config.plan_match_rate}"
        )
    n = min(config.triggers, max(floor, round(config.triggers_per_sample * n_train)))
    share = config.trigger_share
    repeats = clean_repeats(n, n_train, share)
    epochs = max(1, math.ceil(config.embed_epochs / repeats))  # the same passes over the clean data
    return EmbedPlan(n_triggers=n, trigger_share=share, clean_repeats=repeats, epochs=epochs), floor


class Outcome(BaseModel):
    """What an attempt with a plan showed: the search's only input."""

    plan: EmbedPlan
    too_costly: bool  # val accuracy cost above max_accuracy_cost
    too_weak: bool  # the owner test would not reach fp_bound on the shipped model


def next_plan(tried: list[Outcome], n_train: int, floor: int, first_epochs: int) -> EmbedPlan | None:
    """The plan after the last failed attempt, or None when the search has nothing left to try."""
    last = tried[-1].plan
    weak = [t.plan.epochs for t in tried if t.too_weak and not t.too_costly]
    costly = [t.plan.epochs for t in tried if t.too_costly]
    fewer = max(floor, round(last.n_triggers * SHRINK))
    if tried[-1].too_costly and tried[-1].too_weak:  # no length helps at this size: fewer triggers, same length
        return _with_triggers(last, fewer, n_train) if fewer < last.n_triggers else None
    low = max(weak, default=0)  # longest length seen too weak
    high = min(costly, default=first_epochs * MAX_EPOCH_FACTOR + 1)  # shortest seen too costly
    if not costly:
        epochs = min(high - 1, last.epochs * 2)
    elif not weak:
        epochs = last.epochs // 2
    else:
        epochs = (low + high) // 2
    if not low < epochs < high:
        return None
    plan = last.model_copy(update={"epochs": epochs})
    return _with_triggers(plan, fewer, n_train) if tried[-1].too_costly else plan


def _with_triggers(plan: EmbedPlan, n: int, n_train: int) -> EmbedPlan:
    """The same replay with `n` triggers: fewer triggers, a lower share of the rows."""
    return plan.model_copy(update={"n_triggers": n, "trigger_share": n / (n + plan.clean_repeats * n_train)})
