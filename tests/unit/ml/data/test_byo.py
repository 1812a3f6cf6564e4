"""Bring your own data: time series, signed values, W=1, vectors, a WAV folder, a CSV of sensor
windows. Every dataset here is built by the test; no TensorFlow is loaded."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from tinymlops.errors import DataError
from tinymlops.ml.data import registry, split
from tinymlops.ml.preprocess import device_input
from tinymlops.pipeline import data as stages
from tinymlops.settings import DataParams, PipelineParams
from tinymlops.settings.params import AudioParams


def signed_series(n: int = 90, t: int = 24, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of signed IMU-like windows (sine, square, noise) around -40 with ±200 swings."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    time = np.linspace(0, 4 * np.pi, t)
    base = np.stack([np.sin(time), np.sign(np.sin(time)), rng.normal(0, 0.3, t)])
    x = base[y][:, :, None] * np.array([200.0, 50.0, 5.0]) - 40 + rng.normal(0, 2, (n, t, c))
    return x.astype(np.float32), y.astype(np.int64)


def run_data(tmp_path: Path, params: PipelineParams) -> split.PreparedMeta:
    stages.ingest(params, tmp_path, tmp_path / "raw")
    return stages.prepare(params, tmp_path / "raw", tmp_path / "prepared")


def npz_params(name: str, **data) -> PipelineParams:
    return PipelineParams(data=DataParams(dataset="npz", path=name, **data))


@pytest.mark.parametrize("method", ["minmax", "standardize"])
def test_signed_time_series_is_fitted_on_train_and_shaped_t_by_1_by_c(tmp_path: Path, method: str) -> None:
    x, y = signed_series()
    np.savez(tmp_path / "imu.npz", x=x, y=y, layout=np.array("time_series"))
    meta = run_data(tmp_path, npz_params("imu.npz", preprocess=method))
    assert meta.layout == "time_series" and meta.input_shape == [24, 1, 3]
    pre = meta.preprocessing
    assert pre is not None and pre.method == method and pre.channels == 3 and pre.sample_shape == [24, 3]
    train = split.load_split(tmp_path / "prepared", "train")
    flat = train.x.reshape(-1, 3)
    if method == "minmax":  # the train split spans exactly [0, 1] per channel
        np.testing.assert_allclose(flat.min(0), 0, atol=1e-6)
        np.testing.assert_allclose(flat.max(0), 1, atol=1e-6)
    else:
        np.testing.assert_allclose(flat.mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(flat.std(0), 1, atol=1e-3)
    # the device's one-step input transform agrees with preprocess-then-quantize
    d = device_input(pre, input_scale=0.01, input_zero_point=-5)
    raw = x[:4]
    expected = np.clip(np.round(pre.apply(raw) / 0.01) - 5, -128, 127)
    assert np.abs(d.quantize(raw).astype(int) - expected).max() <= 1


def test_layout_from_params_w1_images_and_vectors(tmp_path: Path) -> None:
    x, y = signed_series()
    np.savez(tmp_path / "w1.npz", x=x[..., None].transpose(0, 1, 3, 2)[:, :, :1, :], y=y)  # (N, 24, 1, 3)
    meta = run_data(tmp_path / "a", npz_params(str(tmp_path / "w1.npz")))
    assert meta.layout == "image" and meta.input_shape == [24, 1, 3]
    np.savez(tmp_path / "vec.npz", x=x.reshape(len(x), -1), y=y)
    meta = run_data(tmp_path / "b", npz_params(str(tmp_path / "vec.npz")))
    assert meta.layout == "vector" and meta.input_shape == [72, 1, 1]
    np.savez(tmp_path / "ts.npz", x=x, y=y)  # 3-D without a layout is an image; params say otherwise
    meta = run_data(tmp_path / "c", npz_params(str(tmp_path / "ts.npz"), layout="time_series"))
    assert meta.layout == "time_series" and meta.input_shape == [24, 1, 3]


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"x": np.zeros((30, 4), "U1"), "y": np.arange(30) % 3}, "x has dtype <U1, expected a real numeric dtype"),
        ({"x": np.zeros((30, 4, 4, 1, 1)), "y": np.arange(30) % 3}, "expected 3-D or 4-D for layout image"),
    ],
)
def test_shape_and_dtype_problems_are_one_line_errors(tmp_path: Path, arrays: dict, expected: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as info:
        run_data(tmp_path, npz_params("bad.npz"))
    assert expected in str(info.value) and "\n" not in str(info.value) and "bad.npz" in str(info.value)


def test_time_series_needs_three_dims(tmp_path: Path) -> None:
    np.savez(tmp_path / "flat.npz", x=np.zeros((30, 8)), y=np.arange(30) % 3)
    with pytest.raises(DataError, match=r"shape \(30, 8\), expected 3-D for layout time_series"):
        run_data(tmp_path, npz_params("flat.npz", layout="time_series"))


def test_nan_is_named(tmp_path: Path) -> None:
    x, y = signed_series()
    x[3, 2, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=y, layout=np.array("time_series"))
    with pytest.raises(DataError, match="x_finite"):
        run_data(tmp_path, npz_params("nan.npz"))


# -- importers ---------------------------------------------------------------------------------------
def write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(samples, -1, 1) * (2 ** (8 * width - 1) - 1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm.astype(f"<i{width}").tobytes())


def tone_folder(root: Path, per_class: int = 12) -> Path:
    """Three 'keywords': tones at 300, 900 and 2000 Hz with noise, 0.4 s at 8 kHz (one at 11 kHz,
    resampled on import)."""
    rng = np.random.default_rng(0)
    for name, f in (("low", 300), ("mid", 900), ("high", 2000)):
        for i in range(per_class):
            rate = 11025 if i == 0 else 8000
            t = np.arange(int(0.4 * rate)) / rate
            write_wav(root / name / f"{i:03d}.wav", 0.5 * np.sin(2 * np.pi * f * t) + rng.normal(0, 0.05, len(t)), rate)
    return root


AUDIO = AudioParams(sample_rate=8000, clip_seconds=0.4, frame_ms=32, hop_ms=16, n_mels=12)


def test_wav_folder_becomes_log_mel_time_series(tmp_path: Path) -> None:
    root = tone_folder(tmp_path / "kws")
    params = PipelineParams(data=DataParams(dataset="wav", path=str(root), audio=AUDIO, min_class_share=0.5))
    ds = registry.load_dataset(params.data, tmp_path)
    frames = 1 + (3200 - 256) // 128
    assert ds.layout == "time_series" and ds.x.shape == (36, frames, 12) and ds.labels == ("high", "low", "mid")
    # the strongest mel band follows the tone's pitch: the front end measures what it should
    peak = ds.x.mean(axis=1).argmax(axis=1)
    assert peak[ds.y == 1].max() < peak[ds.y == 2].min() <= peak[ds.y == 2].max() < peak[ds.y == 0].min()
    meta = run_data(tmp_path / "p", params)
    assert meta.input_shape == [frames, 1, 12] and meta.layout == "time_series"


def test_too_few_samples_for_a_split_is_one_line(tmp_path: Path) -> None:
    root = tone_folder(tmp_path / "kws", per_class=4)
    params = PipelineParams(data=DataParams(dataset="wav", path=str(root), audio=AUDIO))
    with pytest.raises(DataError, match="too few for a stratified split") as info:
        run_data(tmp_path / "p", params)
    assert "\n" not in str(info.value)


def test_a_wav_that_is_not_pcm_names_the_file(tmp_path: Path) -> None:
    root = tone_folder(tmp_path / "kws", per_class=3)
    (root / "low" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(DataError, match=r"broken\.wav: not a readable PCM \.wav file"):
        registry.load_dataset(DataParams(dataset="wav", path=str(root), audio=AUDIO), tmp_path)


def write_csv(path: Path, x: np.ndarray, y: np.ndarray, names=("walk", "run", "idle")) -> Path:
    lines = ["window,label,ax,ay,az"]
    for w, (sample, label) in enumerate(zip(x, y, strict=True)):
        lines += [f"{w},{names[label]}," + ",".join(f"{v:.4f}" for v in row) for row in sample]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_sensor_windows(tmp_path: Path) -> None:
    x, y = signed_series(n=45, t=10)
    path = write_csv(tmp_path / "imu.csv", x, y)
    params = PipelineParams(data=DataParams(dataset="csv", path=str(path)))
    ds = registry.load_dataset(params.data, tmp_path)
    assert ds.x.shape == (45, 10, 3) and ds.labels == ("idle", "run", "walk") and ds.layout == "time_series"
    np.testing.assert_allclose(ds.x, x, atol=1e-4)
    assert run_data(tmp_path / "p", params).input_shape == [10, 1, 3]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda text: text.replace("0,walk,", "0,walk,oops", 1), "line 2: column 'ax' is 'oops"),
        (lambda text: "\n".join(text.splitlines()[:-1]) + "\n", "window '44' has 9 rows, expected 10"),
        (lambda text: text.replace("window,", "win,", 1), "no column 'window'"),
    ],
)
def test_csv_problems_name_the_line_or_window(tmp_path: Path, edit, expected: str) -> None:
    x, y = signed_series(n=45, t=10)
    path = write_csv(tmp_path / "imu.csv", x, y)
    path.write_text(edit(path.read_text()))
    with pytest.raises(DataError) as info:
        registry.load_dataset(DataParams(dataset="csv", path=str(path)), tmp_path)
    assert expected in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_digits_prepared_bytes_keep_the_plain_scaling(prepared_dir: Path) -> None:
    """uint8-like declared ranges keep x / value_max exactly (the default model's bytes)."""
    meta = split.load_meta(prepared_dir)
    assert meta.preprocessing is not None and meta.preprocessing.offset == [0.0] and meta.preprocessing.scale == [16.0]
    x = split.load_split(prepared_dir, "train").x
    assert x.min() == 0.0 and x.max() == 1.0
