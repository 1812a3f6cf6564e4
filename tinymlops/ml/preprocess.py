"""Input preprocessing: fitted on the train split, recorded with the data, shipped in the manifest.

One transform, per channel c (the last axis of the user's layout: an image's colour channels, a
time series' sensor channels, a vector's features):

    x' = (x[..., c] - offset[c]) / scale[c]

`minmax` maps the train split's range (or the range the dataset declares, e.g. 0..255 for uint8)
to [0, 1]; `standardize` gives zero mean and unit variance on the train split. The model is
trained on x', so a device must apply the same transform before quantizing its input:

    q = clamp(round(x' / input_scale) + input_zero_point, -128, 127)

`DeviceInput` folds both into one affine per channel (q = round(x · a[c] + b[c])), which the
manifest carries (as float32 bytes, since the manifest's CBOR has no floats), and from which the
int8 input parameters of any model trained on this data follow. No TensorFlow here.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel

from tinymlops.errors import DataError

Layout = Literal["image", "time_series", "vector"]
Method = Literal["minmax", "standardize"]


class Preprocessing(BaseModel):
    method: Method
    layout: Layout
    sample_shape: list[int]  # one raw sample, as the user's data holds it
    offset: list[float]  # per channel
    scale: list[float]  # per channel, never 0
    range_after: list[float]  # [min, max] of the transformed train split

    @property
    def channels(self) -> int:
        return len(self.offset)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Raw samples (N, *sample_shape) → transformed float32, same shape."""
        if list(x.shape[1:]) != self.sample_shape:
            raise DataError(f"x: samples of shape {list(x.shape[1:])}, expected {self.sample_shape}")
        offset = np.asarray(self.offset, dtype=np.float64)
        scale = np.asarray(self.scale, dtype=np.float64)
        if np.all(offset == 0) and np.all(scale == scale[0]):  # keep a plain division bit-exact
            return (x.astype(np.float32) / np.float32(scale[0])).astype(np.float32)
        return ((x.astype(np.float64) - offset) / scale).astype(np.float32)


def model_input(x: np.ndarray, layout: Layout) -> np.ndarray:
    """Transformed samples → the models' canonical 4-D input (N, H, W, C), same bytes:
    image (N,H,W) → (N,H,W,1); time series (N,T,C) → (N,T,1,C); vector (N,F) → (N,F,1,1)."""
    if layout == "image":
        return x[..., None] if x.ndim == 3 else x
    if layout == "time_series":
        return x[:, :, None, :]
    return x[:, :, None, None]


def channel_axis_values(x: np.ndarray) -> np.ndarray:
    """(samples × positions, channels) view for per-channel statistics."""
    return x.reshape(-1, x.shape[-1]).astype(np.float64)


def fit(
    x_train: np.ndarray,
    method: Method,
    layout: Layout,
    declared: tuple[float, float] | None = None,
) -> Preprocessing:
    """Fit on the train split only; `declared` (lo, hi) replaces the fitted range for minmax."""
    if len(x_train) == 0:
        raise DataError("x: the train split is empty, nothing to fit the preprocessing on")
    values = channel_axis_values(x_train)
    if method == "minmax":
        if declared is not None:
            lo = np.full(values.shape[1], declared[0])
            hi = np.full(values.shape[1], declared[1])
        else:
            lo, hi = values.min(axis=0), values.max(axis=0)
        offset, scale = lo, np.where(hi > lo, hi - lo, 1.0)
    else:
        offset, std = values.mean(axis=0), values.std(axis=0)
        scale = np.where(std > 0, std, 1.0)
    p = Preprocessing(
        method=method,
        layout=layout,
        sample_shape=[int(v) for v in x_train.shape[1:]],
        offset=[float(v) for v in offset],
        scale=[float(v) for v in scale],
        range_after=[0.0, 1.0],
    )
    out = p.apply(x_train)
    return p.model_copy(update={"range_after": [float(out.min()), float(out.max())]})


class DeviceInput(BaseModel):
    """What a device does to one raw sample: q = clamp(round(x · a[c] + b[c]), -128, 127)."""

    method: str
    layout: str
    offset: list[float]
    scale: list[float]
    input_scale: float  # of the int8 model's input tensor
    input_zero_point: int

    @property
    def a(self) -> list[float]:
        return [1.0 / (s * self.input_scale) for s in self.scale]

    @property
    def b(self) -> list[float]:
        return [
            self.input_zero_point - o / (s * self.input_scale) for o, s in zip(self.offset, self.scale, strict=True)
        ]

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Raw samples (..., C) → int8, in the one step a device runs."""
        q = np.round(x.astype(np.float64) * np.asarray(self.a) + np.asarray(self.b))
        return np.clip(q, -128, 127).astype(np.int8)


def device_input(p: Preprocessing, input_scale: float, input_zero_point: int) -> DeviceInput:
    return DeviceInput(
        method=p.method,
        layout=p.layout,
        offset=p.offset,
        scale=p.scale,
        input_scale=float(input_scale),
        input_zero_point=int(input_zero_point),
    )
