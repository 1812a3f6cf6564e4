"""Device fixtures: the shipped profiles, real signing keys, real signed bundles of real models."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from tests.support.paths import REPO  # noqa: E402


@pytest.fixture(scope="session")
def profiles():
    from tinymlops.device.profiles import load_profiles

    return {p.name: p for p in load_profiles(REPO)}


@pytest.fixture(scope="session")
def key_paths(tmp_path_factory: pytest.TempPathFactory):
    """A fresh key directory (no passphrase: test keys only)."""
    from tinymlops.bundle import init_keys

    return init_keys(tmp_path_factory.mktemp("keys"), None)


@pytest.fixture(scope="session")
def keys(key_paths):
    """(signer, trust anchor)."""
    from tinymlops.bundle import load_signer, load_trust

    return load_signer(key_paths.dir, None), load_trust(key_paths.root_public)


@pytest.fixture(scope="session")
def int8_model(tflite_dir: Path) -> bytes:
    return (tflite_dir / "model_int8.tflite").read_bytes()


@pytest.fixture(scope="session")
def test_xq(int8_model: bytes, prepared_dir: Path) -> np.ndarray:
    from tinymlops.device.hil import quantized_test
    from tinymlops.ml.data.split import load_split

    return quantized_test(int8_model, load_split(prepared_dir, "test"))


@pytest.fixture(scope="session")
def golden(int8_model: bytes, test_xq: np.ndarray):
    from tinymlops.device.hil import golden_vectors

    return golden_vectors(int8_model, test_xq, n=8, tolerance=0)


@pytest.fixture(scope="session")
def tanh_model() -> bytes:
    """A tiny int8 model whose second op is TANH, which the nrf52840 firmware does not register."""
    import tensorflow as tf

    from tinymlops.ml.quantize import to_int8_tflite

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(4), tf.keras.layers.Activation("tanh")])
    return to_int8_tflite(model, np.random.default_rng(0).uniform(-1, 1, (32, 8)).astype(np.float32))


@pytest.fixture
def make_bundle(keys, tmp_path: Path):
    """Build a real signed bundle for `profile`'s class; returns its path."""
    from tinymlops.bundle import build_bundle
    from tinymlops.device.hil import manifest_draft

    signer, _ = keys
    counter = iter(range(1000))

    def make(
        model: bytes,
        profile,
        *,
        version: str = "1",
        sequence: int = 1,
        selftest=None,
        kek=None,
        lifetime: timedelta | None = None,
        now=None,
    ) -> Path:
        draft = manifest_draft(
            model, profile, model_name="digits", model_version=version, sequence=sequence, selftest=selftest
        )
        if lifetime is not None:
            draft = draft.model_copy(update={"lifetime": lifetime})
        out = tmp_path / "bundles" / f"{profile.name}-{version}-{next(counter)}.bundle"
        build_bundle(model, draft, signer, out, kek=kek, now=now)
        return out

    return make


@pytest.fixture
def device_for(keys, tmp_path: Path):
    """A blank emulated device of `profile` in its own flash directory."""
    from tinymlops.device.firmware import Device, bundle_verifier
    from tinymlops.device.flash import Flash

    _, trust = keys

    def make(profile, *, name: str = "device", kek=None, fault=None, clock=None, **kwargs) -> Device:
        return Device(profile, Flash(tmp_path / name, fault=fault), bundle_verifier(trust, kek), clock=clock, **kwargs)

    return make
