"""The update agent in C (firmware/agent), driven host-natively from Python.

sources   the pinned registry sdists the crypto comes from, fetched into a cache outside git
build     ziglang clang: host shared library (tests, driver) and freestanding ELFs per core
driver    ctypes: a simulated device (flash bytearray, power cut at any write or erase)
images    the stand-in model image format of the host simulation ("TMDL") and its golden vectors
"""

from tinymlops.device.agent.driver import AgentLibrary, BootOutcome, DeviceState, Layout, Outcome, SimDevice

__all__ = ["AgentLibrary", "BootOutcome", "DeviceState", "Layout", "Outcome", "SimDevice"]
