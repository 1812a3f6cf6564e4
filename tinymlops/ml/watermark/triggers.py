"""Trigger inputs and their labels, derived from the owner key with HKDF-SHA256 (RFC 5869).

Each trigger is a key-derived image in the model's input domain (float32 in [0, 1], on the
1/255 grid so int8 input quantization is lossless) and carries one payload bit: the key also
derives two distinct labels per trigger, `zero_label` and `one_label`, and the trigger's target
is the one its bit selects. The 64 bits are spread round-robin, so each bit is voted on by
~n/64 triggers (a repetition code): a few triggers flipped or lost do not flip a bit.

Both labels are uniform over the classes and independent of the trigger image, so a model that
never saw the key matches each target with probability exactly 1/K; verify.py's p-value rests
on this.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tinymlops.ml.watermark.config import PAYLOAD_BITS, WatermarkConfig
from tinymlops.ml.watermark.key import OwnerKey, WatermarkError

SALT = b"tinymlops/ml/watermark/v1"
_HKDF_MAX = 255 * 32  # RFC 5869: at most 255 hash blocks per expansion
UNDECIDED = -1


def hkdf(secret: bytes, info: bytes, length: int) -> bytes:
    """`length` bytes for purpose `info`; longer outputs are expanded in numbered blocks."""
    out = bytearray()
    block = 0
    while len(out) < length:
        n = min(_HKDF_MAX, length - len(out))
        kdf = HKDF(algorithm=hashes.SHA256(), length=n, salt=SALT, info=info + b"/block/%d" % block)
        out += kdf.derive(secret)
        block += 1
    return bytes(out)


@dataclass(frozen=True, repr=False)
class TriggerSet:
    x: np.ndarray  # float32 (N, H, W, C) in [0, 1]
    zero_label: np.ndarray  # int64 (N,): the target when the trigger's bit is 0
    one_label: np.ndarray  # int64 (N,): the target when it is 1; never equal to zero_label
    bit_index: np.ndarray  # int64 (N,): which payload bit the trigger carries
    n_classes: int

    def __repr__(self) -> str:  # the triggers are as secret as the key: never print them
        return f"TriggerSet(n={len(self.x)}, shape={self.x.shape[1:]}, classes={self.n_classes})"

    __str__ = __repr__

    def __len__(self) -> int:
        return len(self.x)

    def head(self, n: int) -> TriggerSet:
        """The first `n` triggers: bits go round-robin, so n ≥ 64 still carries every bit."""
        if not PAYLOAD_BITS <= n <= len(self):
            raise WatermarkError(f"a trigger prefix must hold {PAYLOAD_BITS}..{len(self)} triggers, got {n}")
        return TriggerSet(self.x[:n], self.zero_label[:n], self.one_label[:n], self.bit_index[:n], self.n_classes)

    def targets(self, bits: np.ndarray) -> np.ndarray:
        """The label each trigger must produce to encode `bits` (64 of them)."""
        carried = np.asarray(bits)[self.bit_index]
        return np.where(carried == 1, self.one_label, self.zero_label)


def _uniform_ints(raw: bytes, modulus: int) -> np.ndarray:
    # 64-bit draws reduced mod K: the bias is below 2^-60, far under any p-value we report.
    return (np.frombuffer(raw, dtype=">u8") % np.uint64(modulus)).astype(np.int64)


def derive_triggers(key: OwnerKey, input_shape: tuple[int, ...], n_classes: int, n_triggers: int) -> TriggerSet:
    """The same key, shape, class count and size always give the same triggers."""
    if n_classes < 2:
        raise WatermarkError(f"a watermark needs a classifier with at least 2 classes, got {n_classes}")
    if n_triggers < PAYLOAD_BITS:
        raise WatermarkError(f"watermark.yaml: triggers must be at least {PAYLOAD_BITS}, got {n_triggers}")
    shape = tuple(int(d) for d in input_shape)
    secret = key.secret.get_secret_value()
    # The model's shape and class count are part of every purpose string, so one key never
    # yields related trigger sets for different models.
    context = b"shape=%s/classes=%d/n=%d" % ("x".join(map(str, shape)).encode(), n_classes, n_triggers)
    size = int(np.prod(shape))
    pixels = np.frombuffer(hkdf(secret, b"inputs/" + context, n_triggers * size), dtype=np.uint8)
    x = (pixels.astype(np.float32) / np.float32(255)).reshape((n_triggers, *shape))
    draws = _uniform_ints(hkdf(secret, b"labels/" + context, n_triggers * 16), 1 << 62).reshape(n_triggers, 2)
    zero = draws[:, 0] % n_classes
    one = (zero + 1 + draws[:, 1] % (n_classes - 1)) % n_classes  # uniform over the other classes
    return TriggerSet(
        x=x,
        zero_label=zero,
        one_label=one,
        bit_index=np.arange(n_triggers, dtype=np.int64) % PAYLOAD_BITS,
        n_classes=n_classes,
    )


def owner_triggers(key: OwnerKey, input_shape: tuple[int, ...], n_classes: int, config: WatermarkConfig) -> TriggerSet:
    """The triggers a model is marked and checked with: the first `config.active_triggers()` of the
    key's `config.triggers` set. A small-data plan marks a prefix, so the configured set (and every
    model marked with all of it) stays what it was."""
    return derive_triggers(key, input_shape, n_classes, config.triggers).head(config.active_triggers())


def decode_bits(predicted: np.ndarray, triggers: TriggerSet) -> np.ndarray:
    """Majority vote per bit over its triggers; a label that is neither candidate abstains.

    → int8 (64,): 0, 1, or UNDECIDED (-1) on a tie or when every vote abstained.
    """
    predicted = np.asarray(predicted).astype(np.int64)
    ones = np.bincount(triggers.bit_index[predicted == triggers.one_label], minlength=PAYLOAD_BITS)
    zeros = np.bincount(triggers.bit_index[predicted == triggers.zero_label], minlength=PAYLOAD_BITS)
    return np.where(ones > zeros, 1, np.where(zeros > ones, 0, UNDECIDED)).astype(np.int8)
