"""Arena bisection on the real TFLM interpreter, checked against TFLM's own allocation report."""

from __future__ import annotations

import pytest

from tinymlops.device.arena import fits, min_arena, model_ops, recorded_allocations
from tinymlops.errors import ModelError


def test_bisection_agrees_with_print_allocations(int8_model: bytes) -> None:
    need = min_arena(int8_model)
    recorded = recorded_allocations(int8_model)
    # the recorder counts every allocation with its alignment padding; the last tail allocation's
    # padding may be unused at the exact minimum, so the two agree within one 16-byte alignment step
    assert need <= recorded.total_bytes <= need + 16
    assert recorded.total_bytes == recorded.head_bytes + recorded.tail_bytes
    assert fits(int8_model, need) and not fits(int8_model, need - 1)
    assert any("TfLiteEvalTensor data" in line for line in recorded.lines)


def test_default_model_needs_a_few_kilobytes(int8_model: bytes) -> None:
    assert 4096 < min_arena(int8_model) < 8192  # the digits CNN: ~5.5 KB (the M0+ profile has 4 KB)


def test_tflm_errors_are_not_printed(int8_model: bytes, capfd: pytest.CaptureFixture[str]) -> None:
    assert not fits(int8_model, 1024)  # in a worker process: what TFLM prints stays there
    assert "Failed to" not in capfd.readouterr().err


def test_ops_from_the_flatbuffer_match_tflite(int8_model: bytes, tanh_model: bytes) -> None:
    from tinymlops.ml.quantize import inspect

    assert model_ops(int8_model) == inspect(int8_model).ops
    assert "TANH" in model_ops(tanh_model)
    with pytest.raises(ModelError, match="not a readable .tflite"):
        model_ops(b"\x00" * 64)


# -- nothing a model does can crash the process: TFLM runs in worker processes ------------------
@pytest.fixture(scope="module")
def fc_model() -> bytes:
    """A fully connected model (autoencoder-like: dense layers only); its arena bisection crashed
    the interpreter below the minimum when TFLM ran in-process (exit 139)."""
    import numpy as np

    from tinymlops.ml.quantize import to_int8_tflite
    from tinymlops.ml.tf import tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [tf.keras.Input((32,)), tf.keras.layers.Dense(8, activation="relu"), tf.keras.layers.Dense(32)]
    )
    return to_int8_tflite(model, np.random.default_rng(0).uniform(-1, 1, (32, 32)).astype(np.float32))


@pytest.fixture(scope="module")
def crashing_model(fc_model: bytes) -> bytes:
    """Built to crash TFLM: the second op reads tensor 9999, far past the tensor table."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(fc_model, 0)
    op = m.subgraphs[0].operators[1]
    op.inputs = [op.inputs[0], 9999, *op.inputs[2:]]
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_a_crash_below_the_minimum_is_a_refusal_not_a_dead_process(fc_model: bytes) -> None:
    from tinymlops.device import tflm

    with pytest.raises(tflm.InterpreterCrash, match=r"crashed \(SIGSEGV\).*0-byte arena"):
        tflm.fits(fc_model, 0)  # in-process this was exit 139
    assert not fits(fc_model, 0)  # the arena API counts it as "does not fit"
    need = min_arena(fc_model)
    assert fits(fc_model, need) and not fits(fc_model, need - 1)


def test_a_model_built_to_crash_the_interpreter_is_refused_with_a_reason(crashing_model: bytes) -> None:
    from tinymlops.device import tflm

    # TFLM itself does not check tensor indices: it reads past the table, and whether that crashes
    # or fails depends on what lies there. Either way the worker dies or refuses, never this process.
    try:
        assert not tflm.fits(crashing_model, 1 << 16)
    except tflm.InterpreterCrash as crash:
        assert "crashed" in str(crash)
    with pytest.raises(ModelError, match="refused: operator 1 reads tensor 9999, the graph has") as info:
        min_arena(crashing_model)  # refused before any interpreter sees it
    assert "\n" not in str(info.value)


def test_hil_on_fc_and_crashing_models_reports_instead_of_dying(
    profiles, fc_model: bytes, crashing_model: bytes, keys, make_bundle, tmp_path
) -> None:
    import numpy as np

    from tinymlops.bundle import ManifestDraft, build_bundle
    from tinymlops.device.hil import run_hil
    from tinymlops.ml.data.split import Split

    signer, trust = keys
    profile = profiles["nrf52840"]
    test = Split(x=np.random.default_rng(1).uniform(-1, 1, (8, 32)).astype(np.float32), y=np.zeros(8, np.int32))
    ok = run_hil(make_bundle(fc_model, profile), profile, trust, test, tmp_path / "devices")
    assert ok.status == "passed" and ok.top1_agreement == 1.0, ok.reason
    draft = ManifestDraft(
        model_name="hostile",
        model_version="1",
        sequence=2,
        vendor=profile.vendor,
        device_class=profile.device_class,
        arena_bytes=4096,
        ops=model_ops(fc_model),  # the same ops; model_ops refuses the hostile one itself
    )
    build_bundle(crashing_model, draft, signer, tmp_path / "hostile.bundle")
    bad = run_hil(tmp_path / "hostile.bundle", profile, trust, test, tmp_path / "devices")
    assert bad.status == "failed" and "refused: operator 1 reads tensor 9999" in bad.reason, bad.reason
    assert "\n" not in bad.reason
