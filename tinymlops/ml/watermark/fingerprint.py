"""A fingerprint of conferrable adversarial examples (Lukas, Zhang and Kerschbaum, "Deep Neural
Network Fingerprinting by Conferrable Adversarial Examples", ICLR 2021), measured by the bench and
reported next to the owner tests; docs/watermark.md says why it is not owner test 2 here (on 8×8
digits, independently trained models agree with it too often and too unevenly).

A trigger watermark lives where a thief never looks (key-derived inputs), so a thief who trains a
fresh model on the marked model's answers to real inputs never copies it. A conferrable example is
an input near real data, nudged (L∞ ≤ epsilon) so that the source model and models *derived from
it* (surrogates: students distilled from its answers) give one target label, while models trained
independently on the same task (references) do not. Extraction copies the source's decision
boundaries, so the label transfers to a stolen copy; it does not transfer to an independent model.
It costs no accuracy: the model is not changed.

Generation (once per base model): train `surrogates` students by distillation and `references`
independent models; optimise the perturbations against that ensemble; keep the examples on which
the source and every surrogate give the target and no reference does, best conferrability score
first. A further `calibration` set of independent models (never used in the optimisation)
measures how often an independent model gives the target anyway. Independent models differ a lot
in that rate (on digits, from ~0.1 to ~0.5 of the examples), so the null is not one binomial: an
independent model's rate is taken as Beta-distributed, fitted by moments to the calibration rates
with the mean and the variance raised to their one-sided 95 % bounds, and the number of matches of
a suspect as Beta-binomial. Verification counts the fingerprints a suspect answers with their
target; p = P(BetaBinomial(n, α, β) ≥ matches).

The fingerprint is as secret as the key (a thief who had it could train against it): on disk it is
sealed with AES-256-GCM under a key derived from the owner key, so the file alone reveals nothing.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel
from scipy.stats import betabinom, chi2

from tinymlops.ml.watermark.config import FingerprintSettings
from tinymlops.ml.watermark.key import OwnerKey, WatermarkError
from tinymlops.ml.watermark.triggers import hkdf

FORMAT = b"tinymlops-fingerprint/1\n"
PredictFn = Callable[[np.ndarray], np.ndarray]
# Ensemble architectures (cycled): the pipeline's CNN, a smaller CNN and an MLP, so the fingerprint
# does not depend on the thief re-using the source's architecture.
ARCHS = ("cnn_small", "cnn_tiny", "mlp")


@dataclass(frozen=True, repr=False)
class Fingerprint:
    x: np.ndarray  # float32 (n, *shape) in [0, 1], on the 1/255 grid (int8 inputs see them exactly)
    targets: np.ndarray  # int64 (n,)
    null_alpha: float  # Beta(α, β): how often an independent model answers a fingerprint with its target
    null_beta: float
    n_classes: int

    @property
    def null_rate(self) -> float:
        return self.null_alpha / (self.null_alpha + self.null_beta)

    def __repr__(self) -> str:
        return f"Fingerprint(n={len(self.x)}, classes={self.n_classes}, null_rate={self.null_rate:.3f})"

    __str__ = __repr__

    def __len__(self) -> int:
        return len(self.x)


class FingerprintGeneration(BaseModel):
    size: int
    candidates: int
    passed: int  # candidates that met the conferrability filter
    source_agreement: float
    surrogate_agreement: float  # on the kept fingerprints (1.0 by construction)
    reference_agreement: float  # (0.0 by construction)
    calibration_rates: list[float]
    null_rate: float
    seconds: float


class FingerprintReport(BaseModel):
    source: str
    owned: bool
    matches: int
    n_queries: int
    null_rate: float
    p_value: float
    fp_bound: float

    def line(self) -> str:
        verdict = "OWNED" if self.owned else "not owned"
        return (
            f"{verdict} (fingerprint): {self.matches}/{self.n_queries} conferrable examples answered with the "
            f"source's label (independent models: {self.null_rate:.3f} on average), p-value {self.p_value:.3g} "
            f"(bound {self.fp_bound:.0e})"
        )


def fingerprint_p_value(matches: int, n: int, alpha: float, beta: float) -> float:
    """P(K ≥ matches), K ~ BetaBinomial(n, alpha, beta)."""
    return float(min(1.0, betabinom.sf(matches - 1, n, alpha, beta))) if matches > 0 else 1.0


def fit_null(rates: list[float], n: int) -> tuple[float, float]:
    """Beta(α, β) for an independent model's agreement rate, from the calibration models' rates;
    conservative: mean and variance at their one-sided 95 % upper bounds (the observed variance
    already includes the binomial noise of n examples, which only widens the null)."""
    r = np.asarray(rates, dtype=np.float64)
    c = len(r)
    var = float(np.var(r, ddof=1)) if c > 1 else 0.25
    var_up = var * (c - 1) / float(chi2.ppf(0.05, c - 1)) if c > 1 else 0.25
    mean_up = float(min(0.95, r.mean() + 1.645 * np.sqrt(var / c) + 0.5 / n))
    var_up = max(var_up, mean_up * (1 - mean_up) / n)
    total = mean_up * (1 - mean_up) / var_up - 1
    total = max(total, 0.5)  # very spread rates: a wide Beta
    return mean_up * total, (1 - mean_up) * total


def score_fingerprint(
    labels: np.ndarray, fp: Fingerprint, settings: FingerprintSettings, source: str
) -> FingerprintReport:
    labels = np.asarray(labels)
    labels = labels.argmax(axis=-1) if labels.ndim == 2 else labels.reshape(-1)
    if len(labels) != len(fp):
        raise WatermarkError(f"{source}: {len(labels)} answers for {len(fp)} fingerprints")
    matches = int(np.sum(labels == fp.targets))
    p = fingerprint_p_value(matches, len(fp), fp.null_alpha, fp.null_beta)
    return FingerprintReport(
        source=source,
        owned=p < settings.fp_bound,
        matches=matches,
        n_queries=len(fp),
        null_rate=fp.null_rate,
        p_value=p,
        fp_bound=settings.fp_bound,
    )


def verify_fingerprint(
    predict: PredictFn, fp: Fingerprint, settings: FingerprintSettings, source: str = "model"
) -> FingerprintReport:
    return score_fingerprint(predict(fp.x), fp, settings, source)


# -- sealing -------------------------------------------------------------------------------------------


def _seal_key(key: OwnerKey) -> bytes:
    return hkdf(key.secret.get_secret_value(), b"fingerprint/seal", 32)


def seal(fp: Fingerprint, key: OwnerKey) -> bytes:
    buf = io.BytesIO()
    np.savez(
        buf,
        x=fp.x,
        targets=fp.targets,
        null_alpha=np.float64(fp.null_alpha),
        null_beta=np.float64(fp.null_beta),
        n_classes=np.int64(fp.n_classes),
    )
    nonce = os.urandom(12)
    return FORMAT + nonce + AESGCM(_seal_key(key)).encrypt(nonce, buf.getvalue(), FORMAT)


def unseal(data: bytes, key: OwnerKey, source: str = "fingerprint") -> Fingerprint:
    from cryptography.exceptions import InvalidTag

    if not data.startswith(FORMAT) or len(data) < len(FORMAT) + 12 + 16:
        raise WatermarkError(f"{source}: not a tinymlops fingerprint file")
    nonce, body = data[len(FORMAT) : len(FORMAT) + 12], data[len(FORMAT) + 12 :]
    try:
        plain = AESGCM(_seal_key(key)).decrypt(nonce, body, FORMAT)
    except InvalidTag:
        raise WatermarkError(f"{source}: cannot open this fingerprint with this owner key") from None
    a = np.load(io.BytesIO(plain), allow_pickle=False)
    return Fingerprint(
        x=a["x"].astype(np.float32),
        targets=a["targets"].astype(np.int64),
        null_alpha=float(a["null_alpha"]),
        null_beta=float(a["null_beta"]),
        n_classes=int(a["n_classes"]),
    )


# -- generation (TensorFlow loads here only) -------------------------------------------------------------


def train_references(train, n_classes: int, count: int, epochs: int, seed: int, log=None) -> list:
    """`count` models trained from scratch on the true labels, architectures cycled, seeds apart."""
    from tinymlops.ml.tf import tf
    from tinymlops.ml.watermark.tuning import build, fit_soft, one_hot

    models = []
    for i in range(count):
        arch = ARCHS[i % len(ARCHS)]
        tf.keras.utils.set_random_seed(seed + i)
        model = build(arch, tuple(train.x.shape[1:]), n_classes)
        fit_soft(
            model,
            train.x,
            one_hot(train.y, n_classes),
            epochs=epochs,
            learning_rate=2e-3,
            batch_size=64,
            seed=seed + i,
        )
        models.append(model)
        if log:
            log(f"reference {i + 1}/{count} ({arch}) trained")
    return models


def build_ensemble(source, train, settings: FingerprintSettings, seed: int, log=None) -> tuple[list, list, list]:
    """(surrogates distilled from `source`, references, held-out calibration references)."""
    from tinymlops.ml.watermark.attacks import distill
    from tinymlops.ml.watermark.tuning import keras_predict

    k = int(source.output_shape[-1])
    src = keras_predict(source)
    surrogates = [
        distill(
            src,
            train.x,
            ARCHS[i % len(ARCHS)],
            k,
            epochs=settings.model_epochs,
            learning_rate=2e-3,
            batch_size=64,
            seed=seed + 100 + i,
        )
        for i in range(settings.surrogates)
    ]
    if log:
        log(f"{len(surrogates)} surrogates distilled")
    references = train_references(train, k, settings.references, settings.model_epochs, seed + 200, log)
    calibration = train_references(train, k, settings.calibration, settings.model_epochs, seed + 300, log)
    return surrogates, references, calibration


def generate(
    source, train, settings: FingerprintSettings, seed: int, log=None, ensemble: tuple | None = None
) -> tuple[Fingerprint, FingerprintGeneration]:
    """Conferrable adversarial examples for the Keras model `source` (usually the watermarked base)."""
    from tinymlops.ml.tf import tf
    from tinymlops.ml.watermark.tuning import keras_predict

    start = time.perf_counter()
    k = int(source.output_shape[-1])
    src = keras_predict(source)
    surrogates, references, calibration = ensemble or build_ensemble(source, train, settings, seed, log)

    # Candidates: training inputs the source classifies correctly, each tried towards every other
    # class (one batch); per candidate the most conferrable target that passes the filter is kept.
    rng = np.random.default_rng(seed)
    pred = src(train.x).argmax(axis=1)
    pool = np.flatnonzero(pred == train.y)
    idx = rng.permutation(pool)[: settings.candidates]
    others = np.array([[c for c in range(k) if c != y] for y in train.y[idx]])  # (M, K-1)
    origin = np.repeat(np.arange(len(idx)), k - 1)
    x0 = train.x[idx][origin].astype(np.float32)
    targets = others.reshape(-1)
    x0_t = tf.constant(x0)
    t_onehot = tf.constant(np.eye(k, dtype=np.float32)[targets])
    delta = tf.Variable(tf.zeros_like(x0_t))
    opt = tf.keras.optimizers.Adam(0.01)
    eps = float(settings.epsilon)

    def target_prob(model, x):
        return tf.reduce_sum(model(x, training=False) * t_onehot, axis=1)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            x = tf.clip_by_value(x0_t + delta, 0.0, 1.0)
            loss = -tf.math.log(target_prob(source, x) + 1e-7)
            loss += tf.add_n([-tf.math.log(target_prob(s, x) + 1e-7) for s in surrogates]) / len(surrogates)
            loss += tf.add_n([-tf.math.log(1.0 - target_prob(r, x) + 1e-7) for r in references]) / len(references)
            loss = tf.reduce_sum(loss)
        grads = tape.gradient(loss, [delta])
        opt.apply_gradients(zip(grads, [delta], strict=True))
        delta.assign(tf.clip_by_value(delta, -eps, eps))

    for _ in range(settings.steps):
        step()
    x_adv = np.clip(x0 + delta.numpy(), 0.0, 1.0)
    x_adv = (np.round(x_adv * 255) / 255).astype(np.float32)  # the int8 input grid

    def labels(model):
        return keras_predict(model)(x_adv).argmax(axis=1)

    src_ok = labels(source) == targets
    sur_ok = np.all([labels(s) == targets for s in surrogates], axis=0)
    ref_no = np.all([labels(r) != targets for r in references], axis=0)
    passed = src_ok & sur_ok & ref_no
    p_src = keras_predict(source)(x_adv)[np.arange(len(targets)), targets]
    p_sur = np.mean([keras_predict(s)(x_adv)[np.arange(len(targets)), targets] for s in surrogates], axis=0)
    p_ref = np.mean([keras_predict(r)(x_adv)[np.arange(len(targets)), targets] for r in references], axis=0)
    cae = np.where(passed, p_src * p_sur * (1 - p_ref), -1.0)
    best = cae.reshape(len(idx), k - 1).argmax(axis=1) + np.arange(len(idx)) * (k - 1)  # one per candidate
    keep = best[cae[best] > 0]
    keep = keep[np.argsort(-cae[keep], kind="stable")][: settings.size]
    if len(keep) < 10:
        raise WatermarkError(f"fingerprint: only {len(keep)} conferrable examples found; raise candidates or epsilon")
    fx, ft = x_adv[keep], targets[keep].astype(np.int64)
    rates = [float(np.mean(keras_predict(c)(fx).argmax(axis=1) == ft)) for c in calibration]
    alpha, beta = fit_null(rates, len(keep))
    fp = Fingerprint(x=fx, targets=ft, null_alpha=alpha, null_beta=beta, n_classes=k)
    return fp, FingerprintGeneration(
        size=len(keep),
        candidates=len(idx),
        passed=int(np.sum(cae[best] > 0)),
        source_agreement=float(np.mean(src_ok[keep])),
        surrogate_agreement=float(np.mean(sur_ok[keep])),
        reference_agreement=float(1 - np.mean(ref_no[keep])),
        calibration_rates=rates,
        null_rate=fp.null_rate,
        seconds=time.perf_counter() - start,
    )
