"""Per-copy instances: many functionally equivalent copies of the watermarked base, each traceable.

An instance is a short, seeded fine-tune of the shared watermarked base, derived from (owner key,
instance id) alone, so the owner can rebuild any instance and nothing per-instance is stored but its
id. Each instance carries two marks, both derived with HKDF from the key and the id:

* **instance triggers** — `triggers` key-derived inputs with uniform random labels (as the owner's
  payload triggers, but one labelling per instance). They survive int8, fine-tuning and pruning; a
  thief who only distils from answers on real data never queries them.
* **an instance profile** — for every class c, three instance shadow classes I(c) (profile.py),
  ranked just below the owner's two: the top-1 answer is unchanged (instances agree on clean data)
  but the runner-up ranking names the instance, and a distilled student copies that ranking.

Tracing asks a suspect every candidate instance's triggers at once (one batched inference over
all candidates' triggers) plus the owner's probe inputs (real data, for the profile). Both
statistics have exact nulls because each instance's labels and shadow sets are uniform and
independent of any model that was not trained on them: trigger matches ~ Binomial(triggers, 1/K);
the profile's rank sum ~ the exact convolution in profile.py.

An instance's p-value is 2·min(p_triggers, p_profile) (Bonferroni over the two); the reported
family-wise p-value multiplies by the number of candidate instances. Trace names the instance
only when that is below `trace_bound`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel
from scipy.stats import binom

from tinymlops.ml.watermark.config import MAX_INSTANCE_ID, InstanceSettings
from tinymlops.ml.watermark.key import OwnerKey, WatermarkError
from tinymlops.ml.watermark.profile import (
    instance_p_value,
    instance_shadows,
    owner_shadows,
    profile_applies,
    runner_up_order,
    soft_targets,
)
from tinymlops.ml.watermark.triggers import hkdf

PredictFn = Callable[[np.ndarray], np.ndarray]


def _check_id(instance_id: int) -> int:
    if not isinstance(instance_id, int | np.integer) or not 0 <= int(instance_id) <= MAX_INSTANCE_ID:
        raise WatermarkError(f"instance id must be an integer in 0..{MAX_INSTANCE_ID}, got {instance_id!r}")
    return int(instance_id)


@dataclass(frozen=True, repr=False)
class InstanceMarks:
    instance_id: int
    x: np.ndarray  # float32 (T, *shape) in [0, 1], on the 1/255 grid
    labels: np.ndarray  # int64 (T,), uniform over the classes
    shadows: np.ndarray  # int64 (K, 3): the instance's shadow classes of each predicted class
    owner: np.ndarray  # int64 (K, 2): the owner's shadow classes (the same for every instance)
    n_classes: int

    def __repr__(self) -> str:  # secret as the key: never printed
        return f"InstanceMarks(id={self.instance_id}, triggers={len(self.x)}, classes={self.n_classes})"

    __str__ = __repr__

    def profile(self, owner_mass: float, mass: float) -> np.ndarray:
        """(K, K) soft targets: row c is what the instance answers for a clean input of class c."""
        return soft_targets(self.n_classes, self.owner, owner_mass, self.shadows, mass)


def instance_seed(key: OwnerKey, instance_id: int) -> int:
    return int.from_bytes(hkdf(key.secret.get_secret_value(), b"instance/seed/%d" % instance_id, 4), "big") >> 1


def derive_marks(
    key: OwnerKey, instance_id: int, input_shape: tuple[int, ...], n_classes: int, n_triggers: int
) -> InstanceMarks:
    """The same key, id, shape, class count and size always give the same marks."""
    instance_id = _check_id(instance_id)
    shape = tuple(int(d) for d in input_shape)
    secret = key.secret.get_secret_value()
    context = b"instance=%d/shape=%s/classes=%d/n=%d" % (
        instance_id,
        "x".join(map(str, shape)).encode(),
        n_classes,
        n_triggers,
    )
    size = int(np.prod(shape))
    pixels = np.frombuffer(hkdf(secret, b"instance/inputs/" + context, n_triggers * size), dtype=np.uint8)
    x = (pixels.astype(np.float32) / np.float32(255)).reshape((n_triggers, *shape))
    labels = (np.frombuffer(hkdf(secret, b"instance/labels/" + context, n_triggers * 8), ">u8") % n_classes).astype(
        np.int64
    )
    shadows = instance_shadows(key, instance_id, n_classes)
    owner = owner_shadows(key, n_classes)
    return InstanceMarks(instance_id=instance_id, x=x, labels=labels, shadows=shadows, owner=owner, n_classes=n_classes)


# -- derivation (TensorFlow loads here only) ---------------------------------------------------------------


class InstanceReport(BaseModel):
    instance_id: int
    seed: int
    epochs: int
    seconds: float
    trigger_matches: int  # instance triggers answered with their label by the float model
    n_triggers: int


def derive_instance(base, train, key: OwnerKey, instance_id: int, config, base_triggers=None):
    """A fine-tuned copy of the watermarked `base` carrying instance `instance_id`'s marks.

    Deterministic: (base weights, training data, key, id, config) → identical weights. The base
    payload triggers stay in the mix so the owner test is not weakened. → (model, InstanceReport).
    """
    from tinymlops.ml.watermark.triggers import owner_triggers
    from tinymlops.ml.watermark.tuning import copy_model, fit_soft, keras_predict, one_hot

    settings: InstanceSettings = config.instance
    instance_id = _check_id(instance_id)
    shape = tuple(int(d) for d in base.input_shape[1:])
    k = int(base.output_shape[-1])
    marks = derive_marks(key, instance_id, shape, k, settings.triggers)
    if base_triggers is None:
        trig = owner_triggers(key, shape, k, config)
        base_triggers = (trig.x, trig.targets(key.payload_bits()))
    bx, by = base_triggers
    clean_targets = marks.profile(config.profile_mass, settings.profile_mass)[np.asarray(train.y, dtype=np.int64)]
    # Triggers make up ~trigger_share of the samples, as in embedding; the base's (already learnt)
    # keep a third of that budget so the owner payload is rehearsed, the new instance triggers the rest.
    n_clean = len(train.x)
    n_trig = max(len(bx) + len(marks.x), round(n_clean * config.trigger_share / (1 - config.trigger_share)))
    n_base = max(len(bx), n_trig // 3)
    base_reps = np.arange(n_base) % len(bx)
    inst_reps = np.arange(n_trig - n_base) % len(marks.x)
    x = np.concatenate([train.x, bx[base_reps], marks.x[inst_reps]]).astype(np.float32)
    y = np.concatenate([clean_targets, one_hot(by[base_reps], k), one_hot(marks.labels[inst_reps], k)])
    seed = instance_seed(key, instance_id)
    order = np.random.default_rng(seed).permutation(len(x))
    start = time.perf_counter()
    model = fit_soft(
        copy_model(base),
        x[order],
        y[order],
        epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        seed=seed,
    )
    seconds = time.perf_counter() - start
    answers = keras_predict(model)(marks.x).argmax(axis=1)
    return model, InstanceReport(
        instance_id=instance_id,
        seed=seed,
        epochs=settings.epochs,
        seconds=seconds,
        trigger_matches=int(np.sum(answers == marks.labels)),
        n_triggers=len(marks.x),
    )


# -- tracing ---------------------------------------------------------------------------------------------


class InstanceScore(BaseModel):
    instance_id: int
    trigger_matches: int
    n_triggers: int
    p_triggers: float
    profile_overlap: int  # runner-up classes (after the owner's) shared with the instance's shadow sets
    profile_max: int  # 3 × classes that voted
    p_profile: float
    p_value: float  # 2·min(p_triggers, p_profile)


class TraceReport(BaseModel):
    source: str
    instance_id: int | None  # None: no instance is identified
    p_value: float  # family-wise (× candidates) p-value of the best instance
    bound: float
    candidates: int
    queries: int  # model queries the trace used (all candidates' triggers + probes)
    seconds: float
    best: InstanceScore
    runner_up: InstanceScore | None

    def line(self) -> str:
        b = self.best
        detail = (
            f"triggers {b.trigger_matches}/{b.n_triggers} (p {b.p_triggers:.2g}), "
            f"profile {b.profile_overlap}/{b.profile_max} (p {b.p_profile:.2g})"
        )
        if self.instance_id is None:
            return (
                f"none: no instance of {self.candidates} identified (best {b.instance_id}: {detail}; "
                f"family-wise p {self.p_value:.3g} ≥ {self.bound:.0e}); {self.queries} queries"
            )
        return (
            f"instance {self.instance_id}: family-wise p-value {self.p_value:.3g} over {self.candidates} "
            f"candidates; {detail}; {self.queries} queries in {self.seconds:.2f} s"
        )


def trace(
    predict: PredictFn,
    key: OwnerKey,
    candidates: Sequence[int],
    input_shape: tuple[int, ...],
    n_classes: int,
    settings: InstanceSettings,
    probes: np.ndarray | None = None,
    source: str = "model",
) -> TraceReport:
    """Which of `candidates` is this copy? One batched query of every candidate's triggers (plus the
    probes, real inputs the owner holds, for the profile test); `predict` → labels or scores."""
    start = time.perf_counter()
    ids = [_check_id(i) for i in candidates]
    if not ids:
        raise WatermarkError("trace needs at least one candidate instance id")
    marks = [derive_marks(key, i, input_shape, n_classes, settings.triggers) for i in ids]
    batch = [m.x for m in marks]
    if probes is not None and len(probes):
        batch.append(np.asarray(probes, dtype=np.float32))
    outputs = np.asarray(predict(np.concatenate(batch)))
    if outputs.ndim != 2:
        raise WatermarkError(f"{source}: trace needs class scores (N, K), got shape {outputs.shape}")
    labels = outputs.argmax(axis=1)
    n_t = settings.triggers
    orders: dict[int, np.ndarray] = {}
    if probes is not None and len(probes):
        orders = runner_up_order(outputs[len(ids) * n_t :], n_classes)
    scores = []
    for n, m in enumerate(marks):
        got = labels[n * n_t : (n + 1) * n_t]
        matches = int(np.sum(got == m.labels))
        p_trig = float(binom.sf(matches - 1, n_t, 1.0 / n_classes))
        p_prof, overlap, most = instance_p_value(orders, m.owner, m.shadows, n_classes)
        scores.append(
            InstanceScore(
                instance_id=m.instance_id,
                trigger_matches=matches,
                n_triggers=n_t,
                p_triggers=p_trig,
                profile_overlap=overlap,
                profile_max=most,
                p_profile=p_prof,
                p_value=min(1.0, 2 * min(p_trig, p_prof)) if profile_applies(n_classes) else p_trig,
            )
        )
    ranked = sorted(scores, key=lambda s: s.p_value)
    best = ranked[0]
    family = min(1.0, best.p_value * len(ids))
    return TraceReport(
        source=source,
        instance_id=best.instance_id if family < settings.trace_bound else None,
        p_value=family,
        bound=settings.trace_bound,
        candidates=len(ids),
        queries=len(outputs),
        seconds=time.perf_counter() - start,
        best=best,
        runner_up=ranked[1] if len(ranked) > 1 else None,
    )


def pairwise_agreement(predictions: Sequence[np.ndarray]) -> tuple[float, float]:
    """Top-1 agreement of every pair of label vectors → (mean, min)."""
    values = [float(np.mean(a == b)) for i, a in enumerate(predictions) for b in predictions[i + 1 :]]
    return (float(np.mean(values)), float(np.min(values))) if values else (1.0, 1.0)
