"""A bundle installed on a fresh device of a profile by the C update agent: the HIL's install step.

  emulated part   the agent firmware (agent + C runtime) on the part's emulated core (EmuDevice):
                  provision (root key pinned, class KEK), the revocation list the rig holds,
                  stream the bundle, reboot → self-test on the runtime → confirm or revert.
  no emulator     the host build of the same C agent (SimDevice) with the class's runtime, TFLM
                  on the host, as its check_image / self_test callbacks; labelled so.

Provisioning: the root key, the class and its KEK, stored sequence 0 and no fast-forward bound:
the bound is a rule on a device's history (how far a release may jump above what it runs), which
a factory-fresh twin does not have; release sequences are Unix seconds (tasks/release.py).

RAM (AgentRam). The agent runs before the application, as a boot stage does (MCUboot): its RAM
is time-shared with the application's, and nothing of it stays live once the application runs
(the state log is in flash; the application loads the slot address the agent returns). So:
  resident    the agent's static RAM + the arena (self-test) + the measured stack fit the app RAM
              budget: the agent can stay linked beside the application (install while it runs).
  boot stage  they do not (the M0+ LoRa node): the agent runs with the part's whole RAM before
              the radio stack starts, and must fit that; the application phase is the HIL's own
              check (static + arena + measured stack ≤ app RAM, radio stack reserved beside it).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel

from tinymlops.device.firmware import InstallResult, Stage
from tinymlops.device.profiles import DeviceProfile

UNBOUNDED = 2**64 - 1
_RECEIVE = {"too_large"}
_CHECK = {"image_unfit", "not_a_model"}  # the runtime's answer: the HIL excludes the class (cannot fit)


class AgentRam(BaseModel):
    mode: Literal["resident", "boot stage"]
    static_bytes: int  # .data + .bss of the agent firmware (agent + runtime)
    agent_static_bytes: int  # of which the agent's (context, work buffer, I/O buffer, mailbox)
    arena_bytes: int  # the image's arena (the self-test runs the model)
    stack_bytes: int  # measured high-water mark over install, boot and self-test
    need_bytes: int  # static + arena + stack
    available_bytes: int  # app RAM (resident) or the whole RAM (boot stage)
    resident_bytes: int = 0  # agent RAM still live in the application phase

    def line(self) -> str:
        return (
            f"agent RAM ({self.mode}): static {self.static_bytes} B + arena {self.arena_bytes} B + measured stack "
            f"{self.stack_bytes} B = {self.need_bytes} B of {self.available_bytes} B"
        )


class AgentInstall(BaseModel):
    result: InstallResult
    runtime: str  # which agent build ran it
    wall_s: float  # provisioning, install and the confirming boot
    install_cycles: float | None = None
    boot_cycles: float | None = None
    ram: AgentRam | None = None


def install_fresh(
    bundle: bytes,
    profile: DeviceProfile,
    trust: Any,
    *,
    kek: bytes | None = None,
    revocations: Any = None,
    now: datetime | None = None,
    arena_bytes: int = 0,
    tflm: bool = False,
) -> AgentInstall:
    """Install `bundle` on a new device of `profile` through the C agent and reboot into it.
    `arena_bytes`: the image's arena, for the RAM figures; `tflm`: the payload is a .tflite for
    TFLM (the host build runs it even on a part with an emulator)."""
    from tinymlops.device.mcu import emulated

    when = now or datetime.now(timezone.utc)
    started = time.perf_counter()
    if emulated(profile) and not tflm:
        return _emulated(bundle, profile, trust, kek, revocations, when, arena_bytes, started)
    return _host(bundle, profile, trust, kek, revocations, when, started)


def _device_id(profile: DeviceProfile) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"tinymlops-hil/{profile.name}")


def ram_mode(profile: DeviceProfile) -> Literal["budget", "all"]:
    """Link the agent into the app RAM budget when it can plausibly fit there (a failed link costs
    a compile), else with the whole RAM (the boot stage)."""
    from tinymlops.device.agent.emubuild import AGENT_STACK_BYTES, agent_layout

    mm, lay = agent_layout(profile, "budget")
    context = 4096  # tmla_agent (1.9 KB) + mailbox + program row, rounded up
    return "budget" if lay.meta_bytes + lay.io_bytes + context + AGENT_STACK_BYTES < mm.app_ram_bytes else "all"


def _board(profile: DeviceProfile) -> Any:
    from tinymlops.device.agent.emulated import EmuDevice
    from tinymlops.errors import FirmwareBuildError

    if ram_mode(profile) == "budget":
        try:
            return EmuDevice.shared_board(profile, "budget")
        except FirmwareBuildError:  # the estimate was wrong: the agent does not link into the budget
            pass
    return EmuDevice.shared_board(profile, "all")


def _emulated(
    bundle: bytes, profile: DeviceProfile, trust: Any, kek: bytes | None, revocations: Any, now: datetime,
    arena: int, started: float,
) -> AgentInstall:  # fmt: skip
    from tinymlops.device.agent.emulated import EmuDevice
    from tinymlops.device.mcu.build import build_firmware
    from tinymlops.device.mcu.memory import memory_map

    board = _board(profile)
    with board.lock:
        board.mcu.stack_hwm = 0
        dev = EmuDevice(profile, board=board)
        dev.provision(trust.public_key, _device_id(profile), profile.class_id, kek=kek, ff_bound=UNBOUNDED)
        result = _drive(dev, bundle, revocations, now)
        stack = board.mcu.stack_hwm
    wall = time.perf_counter() - started
    static = board.mcu.fw.static_ram
    runtime_only = build_firmware(memory_map(profile)).static_ram
    need = static + arena + stack
    resident = board.ram == "budget" and need <= board.mm.app_ram_bytes
    ram = AgentRam(
        mode="resident" if resident else "boot stage",
        static_bytes=static,
        agent_static_bytes=static - runtime_only,
        arena_bytes=arena,
        stack_bytes=stack,
        need_bytes=need,
        available_bytes=board.mm.app_ram_bytes if resident else board.mm.ram_bytes,
    )
    if result.ok and need > ram.available_bytes:
        result = InstallResult(ok=False, stage=Stage.CHECK, reason="agent_ram", detail=f"does not fit: {ram.line()}")
    return AgentInstall(
        result=result,
        runtime=f"C agent on the emulated {profile.core}",
        wall_s=wall,
        install_cycles=dev.cycles.get("install"),
        boot_cycles=dev.cycles.get("boot"),
        ram=ram,
    )


def _host(
    bundle: bytes, profile: DeviceProfile, trust: Any, kek: bytes | None, revocations: Any, now: datetime,
    started: float,
) -> AgentInstall:  # fmt: skip
    from tinymlops.device.agent.driver import AgentLibrary, Layout, SimDevice
    from tinymlops.device.mcu import emulated

    dev = SimDevice(AgentLibrary.load(), Layout.for_profile(profile))
    dev.use_runtime(*tflm_runtime(profile))
    dev.provision(trust.public_key, _device_id(profile), profile.class_id, kek=kek, ff_bound=UNBOUNDED)
    result = _drive(dev, bundle, revocations, now)
    why = profile.emulation_note or f"no emulator for {profile.core}"
    if emulated(profile):
        why = "the bundle carries a .tflite, not a model image"
    return AgentInstall(
        result=result,
        runtime=f"C agent, host build (SimDevice) with TFLM on the host: {why}",
        wall_s=time.perf_counter() - started,
    )


def _drive(dev: Any, bundle: bytes, revocations: Any, now: datetime) -> InstallResult:
    """Revocation list (if the rig holds one), install, reboot: the agent's answers as an InstallResult."""
    if revocations is not None and revocations.signed:
        revo = dev.install_revocations(revocations.signed)
        if revo.reason not in ("ok", "stale_revocations"):
            return InstallResult(ok=False, stage=Stage.VERIFY, reason=revo.reason, detail="revocation list refused")
    out = dev.install(bundle, now)
    if out.reason != "pending":
        stage = Stage.RECEIVE if out.reason in _RECEIVE else Stage.CHECK if out.reason in _CHECK else Stage.VERIFY
        return InstallResult(ok=False, stage=stage, reason=out.reason, detail=f"refused by the C agent ({out.reason})")
    boot = dev.boot(now)
    slot = "ab"[boot.running_slot] if boot.running_slot is not None else None
    if boot.event != "confirmed":
        detail = f"boot {boot.event}: {boot.reason}"
        return InstallResult(ok=False, stage=Stage.SELFTEST, reason=boot.reason, detail=detail, slot=slot)
    return InstallResult(
        ok=True,
        stage=Stage.CONFIRMED,
        reason="confirmed",
        detail=f"self-test passed: confirmed in slot {slot} by the C agent",
        slot=slot,
        sequence=boot.running_sequence,
    )


def tflm_runtime(profile: DeviceProfile) -> tuple[Any, Any]:
    """check_image / self_test for a TFLM class, on the host: the .tflite must load in the class's
    arena budget with its ops registered; the golden vectors must pass on TFLM."""
    from tinymlops.device.firmware import fit_problems, golden_check
    from tinymlops.errors import ModelError

    def check(model: bytes, arena: int) -> str:
        try:
            return "image_unfit" if fit_problems(model, profile, arena) else "ok"
        except ModelError:
            return "not_a_model"

    def self_test(model: bytes, vectors: Any) -> str:  # vectors: GoldenVectors | None, as the agent passes them
        return "ok" if golden_check(model, vectors, profile.arena_budget_bytes) is None else "selftest_failed"

    return check, self_test
