"""Embed with a plan that fits the data, adapt it while the mark costs too much, or refuse.

Each attempt is a full embedding from the unmarked model (same seed, so attempts differ by their
plan, not by luck), judged on the validation split against the unmarked model, and on the float
model's owner test with a margin for int8: the test must reach `fp_bound` even if the int8 file
keeps only `plan_match_rate` of the float model's matching triggers. The first attempt that keeps
both is accepted; when none does within `adapt_attempts`, the report says why in one line and the
caller refuses (configs/watermark.yaml `on_refusal`). The int8 file itself is checked later, by
the pipeline's verify stage.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from tinymlops.ml.data.split import Split
from tinymlops.ml.model.train import EpochCallback
from tinymlops.ml.tf import tf
from tinymlops.ml.watermark.config import WatermarkConfig
from tinymlops.ml.watermark.embed import EmbedReport, embed
from tinymlops.ml.watermark.key import OwnerKey, WatermarkError
from tinymlops.ml.watermark.plan import EmbedPlan, Outcome, first_plan, next_plan, verdict_p_value
from tinymlops.ml.watermark.profile import owner_tests

COST_SLACK = 1e-9  # accuracies are ratios of small integers: equal costs must compare equal


class Attempt(BaseModel):
    plan: EmbedPlan
    val_accuracy_before: float
    val_accuracy_after: float
    accuracy_cost: float  # in [0, 1]; negative: the fine-tune improved the model
    matches: int  # triggers the float model answers with their target
    p_value: float  # float model's owner test 1, × the owner tests the verdict takes
    p_int8_margin: float  # the same if only plan_match_rate of those matches survive int8
    owned: bool  # p_int8_margin < fp_bound
    seconds: float


class AdaptiveReport(BaseModel):
    accepted: bool
    reason: str  # why the plan was accepted, or the one-line refusal
    n_train: int
    n_val: int
    n_classes: int
    min_triggers: int  # the floor a meaningful owner test needs (plan.py)
    owner_tests: int
    max_accuracy_cost: float
    attempts: list[Attempt]
    chosen: int | None  # index into attempts of the plan shipped (None: refused)
    embed: EmbedReport | None = None  # the accepted attempt's full report

    @property
    def plan(self) -> EmbedPlan | None:
        return self.attempts[self.chosen].plan if self.chosen is not None else None

    def best(self) -> Attempt:
        """The owned attempt with the lowest cost (else the lowest cost at all): the refusal's figure."""
        owned = [a for a in self.attempts if a.owned] or self.attempts
        return min(owned, key=lambda a: a.accuracy_cost)

    def raise_if_refused(self) -> None:
        if not self.accepted:
            raise WatermarkError(self.reason)


def _refusal(report: AdaptiveReport, config: WatermarkConfig, searched: bool) -> str:
    """`searched`: the search ran out of plans (else out of attempts)."""
    best = report.best()
    point = 100 / max(1, report.n_val)  # one validation sample, in points
    costly = best.accuracy_cost > config.max_accuracy_cost + COST_SLACK
    why = []
    if costly:
        why.append(
            f"cost {best.accuracy_cost * 100:.1f} pt > max_accuracy_cost {config.max_accuracy_cost * 100:.1f} pt"
        )
    if not best.owned:
        why.append(f"owner test only p {best.p_int8_margin:.1e} ≥ fp_bound {config.fp_bound:.0e} with the int8 margin")
    if costly:
        need = f"max_accuracy_cost ≥ {best.accuracy_cost * 100:.1f} pt"
    else:
        need = f"embed_epochs > {config.embed_epochs}" if searched else f"adapt_attempts > {config.adapt_attempts}"
    return (
        f"watermark refused: {report.n_train} training samples, {report.n_classes} classes: "
        f"{len(report.attempts)} plan(s) tried, best {best.plan.line()}: {' and '.join(why)} "
        f"(one val sample = {point:.1f} pt); needs more training data, or watermark.yaml {need}, "
        f"or on_refusal: ship_unmarked"
    )


def embed_adaptive(
    model: tf.keras.Model,
    train: Split,
    val: Split,
    key: OwnerKey,
    config: WatermarkConfig,
    seed: int,
    on_epoch: EpochCallback | None = None,
) -> tuple[tf.keras.Model | None, AdaptiveReport]:
    """→ (the marked copy, report), or (None, report) with `report.reason` when refused."""
    n_classes = int(model.output_shape[-1])
    tests = owner_tests(n_classes)
    plan: EmbedPlan | None
    plan, floor = first_plan(len(train.x), n_classes, tests, config)
    first_epochs = plan.epochs
    tried: list[Outcome] = []
    report = AdaptiveReport(
        accepted=False,
        reason="",
        n_train=len(train.x),
        n_val=len(val.x),
        n_classes=n_classes,
        min_triggers=floor,
        owner_tests=tests,
        max_accuracy_cost=config.max_accuracy_cost,
        attempts=[],
        chosen=None,
    )
    while plan is not None and len(report.attempts) < config.adapt_attempts:
        marked, done = embed(model, train, val, key, config, seed, on_epoch, plan=plan)
        check = done.float_check
        kept = math.floor(check.matches * config.plan_match_rate)
        margin = verdict_p_value(kept, check.n_triggers, n_classes, tests)
        attempt = Attempt(
            plan=plan,
            val_accuracy_before=done.val_accuracy_before,
            val_accuracy_after=done.val_accuracy_after,
            accuracy_cost=done.accuracy_cost,
            matches=check.matches,
            p_value=min(1.0, tests * check.p_value),
            p_int8_margin=margin,
            owned=margin < config.fp_bound,
            seconds=done.seconds,
        )
        report.attempts.append(attempt)
        too_costly = attempt.accuracy_cost > config.max_accuracy_cost + COST_SLACK
        if attempt.owned and not too_costly:
            report.accepted, report.chosen, report.embed = True, len(report.attempts) - 1, done
            report.reason = f"plan {len(report.attempts)}: {plan.line()}, cost {attempt.accuracy_cost * 100:+.1f} pt"
            return marked, report
        tried.append(Outcome(plan=plan, too_costly=too_costly, too_weak=not attempt.owned))
        plan = next_plan(tried, len(train.x), floor, first_epochs)
    report.reason = _refusal(report, config, searched=plan is None)
    return None, report
