"""The host build's runtime callbacks (SimDevice.use_runtime): what the HIL's ESP32-S3 path uses to
run the C agent with TFLM as its runtime. The agent hands over the image as written to flash and
the manifest's golden vectors; its answers decide; an error inside a callback fails closed."""

from __future__ import annotations

from tests.unit.device.agent import rig
from tests.unit.device.agent.rig import NOW


def test_the_agent_asks_the_runtime_with_the_flash_image_and_the_signed_vectors() -> None:
    seen: dict = {}
    image = rig.model(1)

    def check(data: bytes, arena: int) -> str:
        seen["check"] = (data, arena)
        return "ok"

    def self_test(data: bytes, vectors) -> str:
        seen["vectors"] = vectors
        return "ok"

    dev = rig.device()
    dev.use_runtime(check, self_test)
    assert dev.install(rig.bundle(1, payload=image), NOW).reason == "pending"
    assert seen["check"] == (image, 1024)  # the bytes in the slot and the manifest's arena
    assert dev.boot(NOW).event == "confirmed"
    want = rig.selftest_for(image)
    v = seen["vectors"]
    assert (v.inputs, v.expected, v.count, v.input_shape) == (want.inputs, want.expected, want.count, want.input_shape)


def test_the_runtimes_refusals_and_errors_decide() -> None:
    unfit = rig.device()
    unfit.use_runtime(lambda data, arena: "image_unfit", lambda data, vectors: "ok")
    assert unfit.install(rig.bundle(1), NOW).reason == "image_unfit"

    def broken(data: bytes, vectors) -> str:
        raise RuntimeError("interpreter crashed")

    for self_test in (lambda data, vectors: "selftest_failed", broken):
        dev = rig.device()
        dev.use_runtime(lambda data, arena: "ok", self_test)
        assert dev.install(rig.bundle(1), NOW).reason == "pending"
        booted = dev.boot(NOW)
        assert (booted.event, booted.reason, booted.running_slot) == ("reverted", "selftest_failed", None)
