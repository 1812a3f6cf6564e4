"""The emulated microcontroller: firmware build, memory map, unicorn emulator, cycle model.

HIL entry points: `emulated(profile)`, `fits(profile, image)`, `run_model(profile, image, inputs)`.
"""

from tinymlops.device.mcu.api import (
    FitReport,
    McuRun,
    emulated,
    fits,
    image_fit_problems,
    image_ops,
    image_selftest,
    is_image,
    mcu_for,
    run_model,
)
from tinymlops.device.mcu.devices import FlashController, FlashOp
from tinymlops.device.mcu.emulator import Mcu
from tinymlops.device.mcu.memory import CORES, MemoryMap, memory_map

__all__ = [
    "CORES",
    "FitReport",
    "FlashController",
    "FlashOp",
    "Mcu",
    "McuRun",
    "MemoryMap",
    "emulated",
    "fits",
    "image_fit_problems",
    "image_ops",
    "image_selftest",
    "is_image",
    "mcu_for",
    "memory_map",
    "run_model",
]
