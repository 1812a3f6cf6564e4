"""Small datasets the watermark's small-data tests and bench/watermark.py build in memory.

`imu_like`: 80 windows shaped like a 6-axis IMU recording cut for a 4-class activity task
(BasicMotions-sized: (N, T, 1, C) as the pipeline prepares a time series), each class a smooth
multi-channel template under heavy per-sample noise and offset, so a small CNN gets most but not all
of a 16-window validation split. `digits_subset`: a random 80-image subset of scikit-learn's digits.
Both → (x float32 in [0, 1], y int64); imu_like cycles the classes, so any slice holds each evenly.
"""

from __future__ import annotations

import numpy as np


def imu_like(n: int = 80, seed: int = 1, steps: int = 48, channels: int = 3, classes: int = 4, noise: float = 1.2):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, steps)
    templates = np.stack(
        [
            [np.sin(2 * np.pi * (rng.uniform(0.5, 3) * t + rng.uniform())) for _ in range(channels)]
            for _ in range(classes)
        ]
    )  # (classes, channels, steps)
    y = np.arange(n) % classes
    x = templates[y].transpose(0, 2, 1)[:, :, None, :] + rng.normal(0, noise, (n, steps, 1, channels))
    x = x + rng.normal(0, 0.2, (n, 1, 1, channels))  # a per-window sensor offset
    x = (x - x.min()) / (x.max() - x.min())
    return x.astype(np.float32), y.astype(np.int64)


def digits_subset(n: int = 80, seed: int = 0):
    from sklearn.datasets import load_digits

    digits = load_digits()
    idx = np.random.default_rng(seed).permutation(len(digits.target))[:n]
    return (digits.images[idx] / 16.0).astype(np.float32)[..., None], digits.target[idx].astype(np.int64)
