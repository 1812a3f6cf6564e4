"""Faults and refusals of the emulated MCU and the model compiler, each with the numbers."""

from __future__ import annotations

import numpy as np
import pytest
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from tests.support.tflite_graph import FLOAT32, INT8, Graph
from tinymlops.device.image import compile_model, describe
from tinymlops.device.mcu import Mcu, fits, run_model
from tinymlops.device.mcu.devices import FC_NOT_ERASED, FC_OK, FC_POWER_CUT, FC_PROTECTED
from tinymlops.errors import DoesNotFit, FlashPowerCut, MemoryFault, UnsupportedModel


def small_fc(units=4, depth=8) -> bytes:
    g = Graph()
    x = g.tensor([1, depth], INT8, 0.05, 0)
    w = g.tensor([units, depth], INT8, 0.02, 0, np.arange(units * depth, dtype=np.int8).reshape(units, depth))
    y = g.tensor([1, units], INT8, 0.1, 3)
    g.op("FULLY_CONNECTED", [x, w, -1], [y], fb.BuiltinOptions.FullyConnectedOptions, fb.FullyConnectedOptionsT())
    return g.build([x], [y])


def test_out_of_bounds_access_is_a_fault_naming_the_address(profiles):
    mcu = Mcu(profiles["stm32l4r5"])
    mcu.install(compile_model(small_fc()).data)
    mcu.boot()
    bad = 0x30000000  # neither flash (0x08000000..) nor RAM (0x20000000..)
    with pytest.raises(MemoryFault, match="0x30000000") as err:
        mcu.call("app_load", bad, 4096)
    assert err.value.address == bad and err.value.kind == "unmapped"


def test_out_of_bounds_on_risc_v(profiles):
    mcu = Mcu(profiles["esp32c3"])
    mcu.install(compile_model(small_fc()).data)
    mcu.boot()
    with pytest.raises(MemoryFault, match="0x10000000"):
        mcu.call("app_load", 0x10000000, 4096)


@pytest.mark.parametrize("name", ["stm32l072-lora", "esp32c3"])
def test_stack_overflow_is_caught_below_the_ram_base(profiles, name):
    p = profiles[name]
    with pytest.raises(MemoryFault, match="stack overflow") as err:
        run_model(p, compile_model(small_fc()).data, np.zeros((1, 8), np.int8), stack_bytes=32)
    assert err.value.kind == "stack-overflow" and err.value.address < p.mcu.ram_base


def test_measured_stack_is_reported(profiles):
    run = run_model(profiles["nrf52840"], compile_model(small_fc()).data, np.ones((3, 8), np.int8))
    assert 0 < run.stack_bytes < run.stack_region_bytes


def test_a_plan_larger_than_ram_is_refused_with_the_numbers(profiles):
    p = profiles["stm32l072-lora"]
    big = small_fc(units=6000, depth=1)  # a 6000-byte output: more than the 6 KB left for the app
    image = compile_model(big).data
    report = fits(p, image)
    assert not report.ok
    ram = next(m for m in report.problems if m.startswith("RAM"))
    assert f"arena {describe(image)['arena_bytes']} B" in ram and f"{report.ram_available_bytes} B available" in ram
    with pytest.raises(DoesNotFit, match="stm32l072-lora: .*arena"):
        run_model(p, image, np.zeros((1, 4), np.int8))


def test_an_image_larger_than_the_slot_is_refused(profiles):
    p = profiles["stm32l072-lora"]
    image = compile_model(small_fc(units=400, depth=64)).data  # 25.6 KB of weights > 16 KB slot
    report = fits(p, image)
    assert any(f"model image {len(image)} B > model slot {report.slot_bytes} B" in m for m in report.problems)


def test_compiler_refuses_an_op_outside_the_set_in_one_line():
    g = Graph()
    x = g.tensor([1, 4], INT8, 0.1, 0)
    y = g.tensor([1, 4], INT8, 0.1, 0)
    g.op("HARD_SWISH", [x], [y])
    with pytest.raises(UnsupportedModel) as err:
        compile_model(g.build([x], [y]))
    assert str(err.value) == "HARD_SWISH tensor 't0': op is not in the runtime's op set"


def test_compiler_refuses_a_float_model_in_one_line():
    g = Graph()
    x = g.tensor([1, 4], FLOAT32)
    w = g.tensor([2, 4], FLOAT32, data=np.ones((2, 4), np.float32))
    y = g.tensor([1, 2], FLOAT32)
    g.op("FULLY_CONNECTED", [x, w, -1], [y], fb.BuiltinOptions.FullyConnectedOptions, fb.FullyConnectedOptionsT())
    with pytest.raises(UnsupportedModel) as err:
        compile_model(g.build([x], [y]))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("FULLY_CONNECTED tensor 't0'") and "float model" in msg


def test_compiler_refuses_ops_the_device_firmware_does_not_register(profiles):
    with pytest.raises(UnsupportedModel, match="FULLY_CONNECTED.*not registered"):
        compile_model(small_fc(), ops=["CONV_2D"])


def test_flash_controller_erase_before_write_and_power_cut(profiles):
    mcu = Mcu(profiles["stm32l072-lora"])
    fc, slot = mcu.flash, mcu.mm.slot_b
    assert fc.erase(slot) == FC_OK
    assert fc.program(slot, b"\x01\x02\x03\x04") == FC_OK
    assert fc.program(slot, b"\x05\x06\x07\x08") == FC_NOT_ERASED  # NOR flash: erase first
    assert fc.erase(mcu.mm.flash_base) == FC_PROTECTED  # the firmware region
    seen = []

    def cut_second(op):
        seen.append((op.kind, op.addr))
        if len(seen) == 2:
            raise FlashPowerCut("injected")

    fc.hooks.append(cut_second)
    assert fc.erase(slot) == FC_OK
    assert fc.program(slot, b"\xaa\xbb\xcc\xdd") == FC_POWER_CUT
    assert bytes(mcu.uc.mem_read(slot, 4)) == b"\xff" * 4 and seen == [("erase", slot), ("program", slot)]


def test_firmware_cannot_write_flash_directly(profiles):
    mcu = Mcu(profiles["nrf52840"])
    mcu.install(compile_model(small_fc()).data)
    mcu.boot()
    slot = mcu.mm.slot_a
    with pytest.raises(MemoryFault, match="direct write to flash"):
        mcu.call("app_load", slot, 4096)  # reads fine ...
        mcu.call("tmr_memset", slot, 0, 4)  # ... but a store into flash is a fault
