"""The firmware of one emulated device: bootloader + update agent, as a state machine over Flash.

install:  receive (streamed, bounded by the slot size) → verify (signature, class, sequence,
          expiry, payload digest; decrypts when the device holds the key) → check (flash, arena
          need vs RAM on the real TFLM interpreter, ops vs the registered op set) → write the
          inactive slot → mark it pending → reboot.
boot:     a pending slot counts a boot attempt, then runs the golden vectors from its signed
          manifest on TFLM inside the profile's arena budget → confirm (raise the anti-rollback
          sequence) or revert to the old slot, recording why. Too many attempts → revert.

One implementation for HIL and the fleet simulator: nothing here knows who drives it. The
verification step is injected (`verify(stream, device_class=, min_sequence=, now=, sink=)`),
by default tinymlops.bundle.verify_bundle bound to the device's trust anchor and key.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from pydantic import BaseModel

from tinymlops.device.arena import fits, model_ops
from tinymlops.device.flash import Flash, FlashState, GoldenVectors, SlotImage, other
from tinymlops.device.profiles import DeviceProfile
from tinymlops.device.tflm import ArenaTooSmall, TFLMRuntime
from tinymlops.errors import ModelError, TinyMLOpsError
from tinymlops.io import sha256_bytes

VerifyFn = Callable[..., Any]  # (stream, *, device_class, min_sequence, now, sink) -> VerificationResult
DEFAULT_MAX_BOOT_ATTEMPTS = 3


class DeviceError(TinyMLOpsError):
    """The emulated device cannot do what was asked (e.g. run inference with no model)."""


class Stage(str, Enum):
    RECEIVE = "receive"
    VERIFY = "verify"
    CHECK = "check"
    WRITE = "write"
    SELFTEST = "selftest"
    CONFIRMED = "confirmed"
    PENDING = "pending"


class InstallResult(BaseModel):
    ok: bool
    stage: Stage  # where it stopped (CONFIRMED / PENDING when ok)
    reason: str  # machine-readable: a bundle Reason value, flash / arena / ops, selftest, …
    detail: str  # one line
    slot: str | None = None
    model_version: str | None = None
    sequence: int | None = None


class BootResult(BaseModel):
    event: str  # booted | confirmed | reverted | no_model
    detail: str
    running_slot: str | None
    model_version: str | None
    sequence: int | None


class DeviceStatus(BaseModel):
    profile: str
    class_id: str
    state: FlashState
    slots: dict[str, SlotImage | None]


class SinkOverflow(TinyMLOpsError):
    """More plaintext arrived than a model slot can hold."""


class BoundedSink(io.RawIOBase):
    """Receives the streamed plaintext; refuses to grow past the model slot (endless-data attack)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.buffer, self.overflowed = limit, bytearray(), False

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        if len(self.buffer) + len(b) > self.limit:
            self.overflowed = True
            raise SinkOverflow(f"bundle payload exceeds the {self.limit}-byte model slot")
        self.buffer += bytes(b)
        return len(b)


def golden_check(model: bytes, vectors: GoldenVectors | None, arena_bytes: int) -> str | None:
    """Run the golden vectors on TFLM in `arena_bytes`; None when they pass, else why not."""
    try:
        runtime = TFLMRuntime(model, arena_bytes)
        if vectors is None:  # nothing to compare against: it must at least allocate and run
            return None
        n_in, n_out = int(np.prod(vectors.input_shape)), int(np.prod(vectors.output_shape))
        xs = np.frombuffer(vectors.inputs, dtype=np.int8)
        want = np.frombuffer(vectors.expected, dtype=np.int8)
        if xs.size != vectors.count * n_in or want.size != vectors.count * n_out:
            return f"golden vectors: {vectors.count} vectors do not match their shapes"
        # the vectors' shapes are the model's tensors (batch 1); the device feeds its own input shape
        model_shape = [int(v) for v in runtime._interp.get_input_details(0)["shape"]]
        if int(np.prod(model_shape)) != n_in:
            return f"golden vectors: input shape {vectors.input_shape} does not fit the model input {model_shape}"
        xs, want = xs.reshape(vectors.count, *model_shape), want.reshape(vectors.count, n_out)
        worst = 0
        for i in range(vectors.count):
            got = runtime.invoke(xs[i]).reshape(-1).astype(np.int16)
            worst = max(worst, int(np.abs(got - want[i].astype(np.int16)).max()))
    except ArenaTooSmall:
        return f"TFLM cannot allocate the model in the {arena_bytes}-byte arena"
    except (RuntimeError, ValueError) as exc:
        return f"TFLM failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if worst > vectors.tolerance:
        return f"golden vectors differ by {worst} int8 steps (tolerance {vectors.tolerance})"
    return None


def fit_problems(model: bytes, profile: DeviceProfile, declared_arena: int | None = None) -> list[tuple[str, str]]:
    """(reason, detail) for each way the model does not fit the profile: flash, arena, ops."""
    problems = []
    if len(model) > profile.flash_model_bytes:
        problems.append(("flash", f"model {len(model)} B > {profile.flash_model_bytes} B model slot"))
    budget, declared = profile.arena_budget_bytes, declared_arena or 0
    allocates = fits(model, budget)  # the real test: TFLM inside this device's RAM budget
    if not allocates or declared > budget:
        problems.append(
            (
                "arena",
                f"TFLM {'cannot allocate' if not allocates else 'allocates'} the model in the {budget} B RAM budget "
                f"(manifest declares {declared} B)",
            )
        )
    missing = sorted(set(model_ops(model)) - set(profile.ops))
    if missing:
        problems.append(("ops", f"op {', '.join(missing)} not registered by the {profile.name} firmware"))
    return problems


def bundle_verifier(trust: Any, kek: bytes | None = None, revocations: Any = None) -> VerifyFn:
    """The device's verification step: tinymlops.bundle.verify_bundle bound to what the device
    holds (the root public key, its class KEK, the last revocation list it saw)."""
    from tinymlops.bundle import verify_bundle

    def verify(stream: BinaryIO, **policy: Any) -> Any:
        return verify_bundle(stream, trust, revocations=revocations, kek=kek, **policy)

    return verify


class Device:
    def __init__(
        self,
        profile: DeviceProfile,
        flash: Flash,
        verify: VerifyFn,
        *,
        clock: Callable[[], datetime] | None = None,
        max_boot_attempts: int = DEFAULT_MAX_BOOT_ATTEMPTS,
    ) -> None:
        self.profile, self.flash, self.verify = profile, flash, verify
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.max_boot_attempts = max_boot_attempts
        self._runtime: TFLMRuntime | None = None

    # -- update agent ---------------------------------------------------------------------------
    def install(self, source: Path | BinaryIO | bytes, reboot: bool = True) -> InstallResult:
        """Receive, verify, check and write a bundle; then reboot into it unless `reboot` is False."""
        state = self.flash.read_state()
        sink = BoundedSink(self.profile.flash_model_bytes)
        stream = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
        try:
            result = self.verify(
                stream,
                device_class=self.profile.class_id,
                min_sequence=state.min_sequence,
                now=self.clock(),
                sink=sink,
            )
        except SinkOverflow as exc:
            return self._refuse(Stage.RECEIVE, "too_large", str(exc))
        if sink.overflowed:  # the verifier swallowed our overflow: still refuse for that reason
            return self._refuse(Stage.RECEIVE, "too_large", f"bundle payload exceeds the {sink.limit}-byte model slot")
        if not result.ok:
            reason = getattr(result.reason, "value", str(result.reason))
            return self._refuse(Stage.VERIFY, reason, result.detail)
        manifest, model = result.manifest, bytes(sink.buffer)
        try:
            problems = fit_problems(model, self.profile, manifest.arena_bytes)
        except ModelError as exc:
            return self._refuse(Stage.CHECK, "malformed_model", str(exc))
        if problems:
            return self._refuse(Stage.CHECK, problems[0][0], "; ".join(d for _, d in problems))
        slot = other(state.active)
        selftest = None if manifest.selftest is None else GoldenVectors.model_validate(manifest.selftest.model_dump())
        image = SlotImage(
            model_name=manifest.model_name,
            model_version=manifest.model_version,
            sequence=manifest.sequence,
            sha256=sha256_bytes(model),
            size=len(model),
            selftest=selftest,
        )
        self.flash.write_slot(slot, model, image)
        state = self.flash.read_state()
        self.flash.write_state(state.model_copy(update={"pending": slot, "boot_attempts": 0}), "mark_pending")
        pending = InstallResult(
            ok=True,
            stage=Stage.PENDING,
            reason="pending",
            detail=f"{manifest.model_name} {manifest.model_version} written to slot {slot}, pending reboot",
            slot=slot,
            model_version=manifest.model_version,
            sequence=manifest.sequence,
        )
        if not reboot:
            return pending
        booted = self.boot()
        if booted.event == "confirmed" and booted.running_slot == slot:
            return pending.model_copy(update={"stage": Stage.CONFIRMED, "reason": "confirmed", "detail": booted.detail})
        return pending.model_copy(
            update={"ok": False, "stage": Stage.SELFTEST, "reason": "selftest", "detail": booted.detail}
        )

    def _refuse(self, stage: Stage, reason: str, detail: str) -> InstallResult:
        detail = " ".join(detail.split())
        state = self.flash.read_state()
        self.flash.write_state(
            state.model_copy(update={"last_event": f"refused at {stage.value}: {detail}"}), "refused"
        )
        return InstallResult(ok=False, stage=stage, reason=reason, detail=detail)

    # -- bootloader -----------------------------------------------------------------------------
    def boot(self) -> BootResult:
        """What happens at power-on: settle a pending slot (self-test → confirm or revert), then
        start the confirmed image."""
        self._runtime = None
        self.flash.remove_stale_temps()
        state = self.flash.read_state()
        event, detail = "booted", "running the confirmed image"
        if state.pending is not None:
            state = self.flash.write_state(
                state.model_copy(update={"boot_attempts": state.boot_attempts + 1}), "attempt"
            )
            why = self._try_pending(state)
            if why is None:
                slot = state.pending
                image = self.flash.read_slot(slot)[1]  # type: ignore[index]  (checked in _try_pending)
                state = self.flash.write_state(
                    state.model_copy(
                        update={
                            "active": slot,
                            "pending": None,
                            "confirmed": True,
                            "boot_attempts": 0,
                            "min_sequence": max(state.min_sequence, image.sequence),
                            "last_event": f"confirmed {image.model_version} in slot {slot}",
                        }
                    ),
                    "confirm",
                )
                event, detail = "confirmed", f"self-test passed: {image.model_version} confirmed in slot {slot}"
            else:
                detail = f"reverted from slot {state.pending}: {why}"
                state = self.flash.write_state(
                    state.model_copy(update={"pending": None, "boot_attempts": 0, "last_event": detail}), "revert"
                )
                event = "reverted"
        running = self.flash.read_slot(state.active) if state.active else None
        if running is None:
            return BootResult(
                event="no_model",
                detail=detail if event == "reverted" else "no confirmed image",
                running_slot=None,
                model_version=None,
                sequence=None,
            )
        return BootResult(
            event=event,
            detail=detail,
            running_slot=state.active,
            model_version=running[1].model_version,
            sequence=running[1].sequence,
        )

    def _try_pending(self, state: FlashState) -> str | None:
        if state.boot_attempts > self.max_boot_attempts:
            return f"no confirmation after {self.max_boot_attempts} boot attempts"
        found = self.flash.read_slot(state.pending)  # type: ignore[arg-type]
        if found is None:
            return "image does not match its recorded digest (incomplete or corrupted write)"
        model, image = found
        if image.sequence < state.min_sequence:
            return f"sequence {image.sequence} below the anti-rollback floor {state.min_sequence}"
        return golden_check(model, image.selftest, self.profile.arena_budget_bytes)

    # -- application ----------------------------------------------------------------------------
    def runtime(self) -> TFLMRuntime:
        """The TFLM interpreter of the running image, in the profile's arena budget."""
        if self._runtime is None:
            state = self.flash.read_state()
            found = self.flash.read_slot(state.active) if state.active else None
            if found is None:
                raise DeviceError(f"{self.flash.root}: no confirmed model to run")
            self._runtime = TFLMRuntime(found[0], self.profile.arena_budget_bytes)
        return self._runtime

    def infer(self, xq: np.ndarray) -> np.ndarray:
        """int8 inputs (N, ...) → int8 outputs (N, K), one sample at a time."""
        rt = self.runtime()
        return np.stack([rt.invoke(row[None])[0] for row in xq])

    def running_model(self) -> bytes | None:
        state = self.flash.read_state()
        found = self.flash.read_slot(state.active) if state.active else None
        return found[0] if found else None

    def status(self) -> DeviceStatus:
        slots = {s: (found[1] if (found := self.flash.read_slot(s)) else None) for s in ("a", "b")}
        return DeviceStatus(
            profile=self.profile.name, class_id=str(self.profile.class_id), state=self.flash.read_state(), slots=slots
        )
