"""Both owner tests on one suspect, each with its own p-value and number of queries.

Test 1 is the key's trigger watermark (verify.py): it survives int8, fine-tuning and pruning, but a
thief who distils a fresh model from answers on real data never queries a trigger. Test 2 is the
owner's runner-up profile (profile.py), asked with real probe inputs: the student of a distillation
is trained on exactly the answers that carry it. Optionally, the conferrable-example fingerprint of
Lukas et al. (fingerprint.py) is reported as well; docs/watermark.md says why it is not test 2.

The verdict is 'owned' when the smallest p-value, multiplied by the number of tests that ran
(Bonferroni), is below that test's bound.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import BaseModel

from tinymlops.ml.watermark.config import WatermarkConfig
from tinymlops.ml.watermark.fingerprint import Fingerprint, FingerprintReport, score_fingerprint
from tinymlops.ml.watermark.key import OwnerKey
from tinymlops.ml.watermark.profile import owner_p_value, owner_shadows, profile_applies, runner_up_order
from tinymlops.ml.watermark.triggers import owner_triggers
from tinymlops.ml.watermark.verify import WatermarkReport, score

PredictFn = Callable[[np.ndarray], np.ndarray]


class ProfileReport(BaseModel):
    source: str
    owned: bool
    overlap: int  # top-2 runner-up classes that are the owner's shadow classes
    max_overlap: int  # 2 × classes that voted
    voting_classes: int
    n_queries: int  # probe inputs asked
    p_value: float
    fp_bound: float

    def line(self) -> str:
        verdict = "OWNED" if self.owned else "not owned"
        return (
            f"{verdict} (runner-up profile): {self.overlap}/{self.max_overlap} top-2 runner-up classes are the "
            f"owner's over {self.voting_classes} classes, p-value {self.p_value:.3g} (bound {self.fp_bound:.0e})"
        )


class OwnershipReport(BaseModel):
    source: str
    owned: bool
    p_value: float  # min over the tests that ran × their number
    watermark: WatermarkReport  # test 1: trigger payload
    profile: ProfileReport | None  # test 2: runner-up profile (None: no probes given)
    fingerprint: FingerprintReport | None = None  # reported alongside when a fingerprint is given

    def lines(self) -> list[str]:
        out = [f"test 1, trigger watermark ({self.watermark.n_triggers} queries): {self.watermark.line()}"]
        if self.profile is not None:
            out.append(f"test 2, runner-up profile ({self.profile.n_queries} queries): {self.profile.line()}")
        if self.fingerprint is not None:
            out.append(f"fingerprint ({self.fingerprint.n_queries} queries): {self.fingerprint.line()}")
        verdict = "OWNED" if self.owned else "not owned"
        out.append(f"verdict: {verdict} (combined p-value {self.p_value:.3g})")
        return out


def score_profile(scores: np.ndarray, key: OwnerKey, config: WatermarkConfig, source: str) -> ProfileReport:
    n_classes = int(np.asarray(scores).shape[1])
    orders = runner_up_order(scores, n_classes)
    p, overlap, most = owner_p_value(orders, owner_shadows(key, n_classes), n_classes)
    return ProfileReport(
        source=source,
        owned=p < config.instance.trace_bound,
        overlap=overlap,
        max_overlap=most,
        voting_classes=len(orders),
        n_queries=len(scores),
        p_value=p,
        fp_bound=config.instance.trace_bound,
    )


def verify_ownership(
    predict: PredictFn,
    key: OwnerKey,
    config: WatermarkConfig,
    input_shape: tuple[int, ...],
    n_classes: int,
    probes: np.ndarray | None = None,
    fingerprint: Fingerprint | None = None,
    source: str = "model",
) -> OwnershipReport:
    """One batched query: the key's triggers, the probes, then the fingerprint's examples.
    `predict` must return class scores (N, K) when probes are given."""
    triggers = owner_triggers(key, input_shape, n_classes, config)
    parts = [triggers.x]
    if probes is not None and len(probes):
        parts.append(np.asarray(probes, dtype=np.float32))
    if fingerprint is not None:
        parts.append(fingerprint.x)
    outputs = np.asarray(predict(np.concatenate(parts)))
    labels = outputs.argmax(axis=-1) if outputs.ndim == 2 else outputs.reshape(-1)
    n_t = len(triggers)
    wm = score(labels[:n_t], triggers, key, config, source)
    tests: list[tuple[float, float]] = [(wm.p_value, wm.fp_bound)]
    profile = fp = None
    end = n_t
    if probes is not None and len(probes):
        end = n_t + len(probes)
        if profile_applies(n_classes):  # too few classes: test 1 (and the fingerprint) alone
            profile = score_profile(outputs[n_t:end], key, config, source)
            tests.append((profile.p_value, profile.fp_bound))
    if fingerprint is not None:
        fp = score_fingerprint(labels[end:], fingerprint, config.fingerprint, source)
        tests.append((fp.p_value, fp.fp_bound))
    m = len(tests)
    owned = any(m * p < bound for p, bound in tests)
    return OwnershipReport(
        source=source,
        owned=owned,
        p_value=min(1.0, m * min(p for p, _ in tests)),
        watermark=wm,
        profile=profile,
        fingerprint=fp,
    )
