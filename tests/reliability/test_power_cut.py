"""Power cuts during an update (mcuboot-style): whatever the cut point, the device boots a verified model.

A power cut is `PowerCut` raised from a flash fault point: the Device object is abandoned as it
stands and a new one is built from what the flash directory holds, as after a real reset. Models,
keys and bundles are made once (TensorFlow is imported once, not per trial); each trial is real
signature verification, real flash writes and a real TFLM self-test.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.support.paths import REPO  # noqa: E402
from tinymlops.device.firmware import Device, bundle_verifier, golden_check
from tinymlops.device.flash import Flash, PowerCut
from tinymlops.device.profiles import load_profiles

RANDOM_TRIALS = 2000
CORRUPTIONS = ("none", "bundle_bitflip", "bundle_truncate", "bundle_extend", "slot_bitrot", "stale_temp", "state_torn")


def _tiny_model(seed: int) -> bytes:
    import tensorflow as tf

    from tinymlops.ml.quantize import to_int8_tflite

    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential(
        [tf.keras.Input((16,)), tf.keras.layers.Dense(12, activation="relu"), tf.keras.layers.Dense(4, "softmax")]
    )
    return to_int8_tflite(model, np.random.default_rng(seed).uniform(0, 1, (32, 16)).astype(np.float32))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory):
    """RAM-backed when the machine has /dev/shm: the trials exercise the write protocol, and
    disk fsync latency (milliseconds on a shared CI disk) would only make them slow."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        directory = Path(tempfile.mkdtemp(prefix="tinymlops-powercut-", dir=shm))
        yield directory
        shutil.rmtree(directory, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("powercut")


@pytest.fixture(scope="module")
def rig(work: Path):
    """Profile, trust anchor, two different models (v1 installed, v2 the update) and their bundles,
    and a template device already running v1."""
    from tinymlops.bundle import build_bundle, init_keys, load_signer, load_trust
    from tinymlops.device.hil import golden_vectors, manifest_draft

    profile = {p.name: p for p in load_profiles(REPO)}["nrf52840"]
    paths = init_keys(work / "keys", None)
    signer, trust = load_signer(work / "keys", None), load_trust(paths.root_public)
    models, bundles = {}, {}
    inputs = np.random.default_rng(1).integers(-128, 128, (8, 16)).astype(np.int8)
    for version, seed in (("1", 1), ("2", 2)):
        model = _tiny_model(seed)
        selftest = golden_vectors(model, inputs, n=8, tolerance=0)
        draft = manifest_draft(
            model, profile, model_name="tiny", model_version=version, sequence=int(version), selftest=selftest
        )
        models[version], bundles[version] = model, work / f"v{version}.bundle"
        build_bundle(model, draft, signer, bundles[version])
    assert models["1"] != models["2"]
    template = work / "template"
    assert Device(profile, Flash(template), bundle_verifier(trust)).install(bundles["1"]).ok
    return {
        "profile": profile,
        "trust": trust,
        "models": models,
        "bundle": bundles["2"].read_bytes(),
        "template": template,
        "work": work,
    }


class CutAt:
    """Fault hook: power fails at the n-th fault point reached (counting from 0); records the points."""

    def __init__(self, n: int | None = None) -> None:
        self.n, self.seen = n, []

    def __call__(self, point: str) -> None:
        self.seen.append(point)
        if self.n is not None and len(self.seen) - 1 == self.n:
            raise PowerCut(point)


def _device(rig, directory: Path, fault=None) -> Device:
    return Device(rig["profile"], Flash(directory, fault=fault), bundle_verifier(rig["trust"]))


def _assert_runs_a_verified_model(rig, directory: Path) -> str:
    """After a clean reset: a confirmed image, byte-identical to v1 or v2, passing its golden vectors."""
    device = _device(rig, directory)
    booted = device.boot()
    assert booted.event != "no_model", booted.detail
    model = device.running_model()
    version = {v: k for k, v in rig["models"].items()}.get(model)
    assert version is not None, "running image is neither the old nor the new model"
    state = device.flash.read_state()
    assert state.pending is None and state.active == booted.running_slot
    _, image = device.flash.read_slot(state.active)
    assert image.model_version == version and golden_check(model, image.selftest, 163840) is None
    assert not list(directory.glob(".*.tmp"))
    return version


def _fresh(rig, name: str) -> Path:
    directory = rig["work"] / name
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(rig["template"], directory)
    return directory


def test_power_cut_at_every_fault_point_of_an_install(rig) -> None:
    clean = CutAt()
    directory = _fresh(rig, "clean")
    assert _device(rig, directory, clean).install(rig["bundle"]).ok
    points = clean.seen
    assert len(points) >= 15 and "state.confirm:unrenamed" in points  # install writes + boot writes
    outcomes = {}
    for n, point in enumerate(points):
        directory = _fresh(rig, "cut")
        with pytest.raises(PowerCut):
            _device(rig, directory, CutAt(n)).install(rig["bundle"])
        outcomes[f"{n}:{point}"] = _assert_runs_a_verified_model(rig, directory)
        # and the device is not bricked: the update can be retried and lands (or has landed: an
        # equal sequence does not reinstall, as on the C agent)
        retry = _device(rig, directory).install(rig["bundle"])
        assert retry.ok or (outcomes[f"{n}:{point}"] == "2" and retry.reason == "already_installed"), retry
    confirm = points.index("state.confirm:unrenamed")
    assert all(v == "1" for k, v in outcomes.items() if int(k.split(":")[0]) < points.index("state.mark_pending:after"))
    assert all(v == "2" for k, v in outcomes.items() if int(k.split(":")[0]) > confirm)
    assert set(outcomes.values()) == {"1", "2"}


def _corrupt_bundle(data: bytes, kind: str, rng: random.Random) -> bytes:
    if kind == "bundle_bitflip":
        buf = bytearray(data)
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        return bytes(buf)
    if kind == "bundle_truncate":
        return data[: rng.randrange(len(data))]
    if kind == "bundle_extend":
        return data + rng.randbytes(rng.randrange(1, 64))
    return data


def _corrupt_flash(directory: Path, kind: str, rng: random.Random) -> None:
    if kind == "slot_bitrot":  # the freshly written (inactive) image rots before the reboot
        image = directory / "slot_b.bin"
        if image.exists():
            buf = bytearray(image.read_bytes())
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
            image.write_bytes(bytes(buf))
    elif kind == "stale_temp":
        (directory / f".state.0.json.{rng.randrange(10**6)}.tmp").write_bytes(rng.randbytes(100))
    elif kind == "state_torn":  # one copy of the double-buffered record torn
        copy = directory / f"state.{rng.randrange(2)}.json"
        if copy.exists():
            data = copy.read_bytes()
            copy.write_bytes(data[: rng.randrange(len(data))])


def test_randomized_cuts_and_corruptions(rig) -> None:
    rng = random.Random(20261124)
    clean = CutAt()
    _device(rig, _fresh(rig, "count"), clean).install(rig["bundle"])
    n_points = len(clean.seen)
    tally = {"1": 0, "2": 0}
    for _ in range(RANDOM_TRIALS):
        directory = _fresh(rig, "trial")
        corruption = rng.choice(CORRUPTIONS)
        bundle = _corrupt_bundle(rig["bundle"], corruption, rng)
        install_cut = rng.randrange(n_points + 5)  # ≥ n_points: no cut during the install
        try:
            _device(rig, directory, CutAt(install_cut)).install(bundle, reboot=False)
        except PowerCut:
            pass
        _corrupt_flash(directory, corruption, rng)
        if rng.random() < 0.5:  # and power may fail again during the reboot
            try:
                _device(rig, directory, CutAt(rng.randrange(8))).boot()
            except PowerCut:
                pass
        tally[_assert_runs_a_verified_model(rig, directory)] += 1
    assert sum(tally.values()) == RANDOM_TRIALS
    assert tally["1"] > 50 and tally["2"] > 50  # both outcomes really happen
