"""The `wav` dataset: a folder of class folders of .wav clips → log-mel spectrograms.

    data/kws/yes/0001.wav, data/kws/no/0001.wav, …   →   x (N, frames, n_mels), layout time_series

The front end is small enough for the device to run the same steps on its microphone buffer
(numpy here, a few loops in C there), with every constant derived from `data.audio`:

1. PCM (8/16/24/32-bit integer, any channel count) → mono float in [-1, 1] (channel mean);
   resampled to `sample_rate` by linear interpolation; cut or zero-padded to `clip_seconds`.
2. Frames of `frame_ms` every `hop_ms`, times a periodic Hann window, zero-padded to n_fft (the
   next power of two) → power spectrum |rfft|².
3. `n_mels` triangular filters, evenly spaced on the HTK mel scale (mel = 2595 log10(1 + f/700))
   between `fmin` and `fmax` → band energies.
4. log(energy + 1e-6).

The result is a time series (frames × mel bands); preprocessing (fitted on the train split) and
int8 quantization follow as for any other data. Python's `wave` module reads the files: PCM only.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from tinymlops.errors import DataError
from tinymlops.settings.params import AudioParams

LOG_FLOOR = 1e-6


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """→ (mono float64 samples in [-1, 1], sample rate)."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate, n = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable PCM .wav file ({exc})") from None
    if width == 1:
        pcm = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128) / 128
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        pcm = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8) / float(1 << 23)
    elif width in (2, 4):
        pcm = np.frombuffer(raw, f"<i{width}").astype(np.float64) / float(1 << (8 * width - 1))
    else:
        raise DataError(f"{path}: {8 * width}-bit samples, expected 8, 16, 24 or 32-bit PCM")
    return pcm.reshape(-1, channels).mean(axis=1), rate


def fit_clip(pcm: np.ndarray, rate: int, params: AudioParams) -> np.ndarray:
    """Resample (linear) to params.sample_rate, then cut or zero-pad to params.clip_seconds."""
    if rate != params.sample_rate and len(pcm):
        t_out = np.arange(int(round(len(pcm) * params.sample_rate / rate))) / params.sample_rate
        pcm = np.interp(t_out, np.arange(len(pcm)) / rate, pcm)
    n = int(round(params.clip_seconds * params.sample_rate))
    return np.pad(pcm[:n], (0, max(0, n - len(pcm))))


def mel_filterbank(params: AudioParams, n_fft: int) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale."""
    fmax = params.fmax or params.sample_rate / 2

    def mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(np.array(params.fmin)), mel(np.array(fmax)), params.n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / params.sample_rate)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - bins) / np.maximum(upper - centre, 1e-9)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel(clip: np.ndarray, params: AudioParams) -> np.ndarray:
    """One clip (already at sample_rate and clip length) → (frames, n_mels) float32."""
    frame = int(round(params.frame_ms * params.sample_rate / 1000))
    hop = int(round(params.hop_ms * params.sample_rate / 1000))
    if frame < 2 or hop < 1 or frame > len(clip):
        raise DataError(
            f"data.audio: frame_ms {params.frame_ms} / hop_ms {params.hop_ms} do not fit a "
            f"{params.clip_seconds} s clip at {params.sample_rate} Hz"
        )
    n_fft = 1 << (frame - 1).bit_length()
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame)  # periodic Hann
    starts = np.arange(0, len(clip) - frame + 1, hop)
    frames = np.stack([clip[s : s + frame] for s in starts]) * window
    power = np.abs(np.fft.rfft(frames, n=n_fft, axis=1)) ** 2
    return np.log(power @ mel_filterbank(params, n_fft).T + LOG_FLOOR).astype(np.float32)


def load_wav_folder(root: Path, params: AudioParams):  # → registry.Dataset
    from tinymlops.ml.data.registry import Dataset

    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected one sub-folder of .wav files per class)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.wav")))
    if len(classes) < 2:
        raise DataError(f"{root}: found {len(classes)} class folders with .wav files, expected at least 2")
    xs, ys = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).glob("*.wav")):
            pcm, rate = read_wav(path)
            xs.append(log_mel(fit_clip(pcm, rate, params), params))
            ys.append(label)
    return Dataset(
        name=root.name,
        x=np.stack(xs),
        y=np.array(ys, dtype=np.int64),
        labels=tuple(classes),
        value_max=None,
        layout="time_series",
    )
