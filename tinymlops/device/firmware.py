"""The firmware of one emulated device: bootloader + update agent, as a state machine over Flash.

install:  receive (streamed, bounded by the slot size) → verify (signature, class, sequence,
          expiry, payload digest; decrypts when the device holds the key) → check (flash, arena
          need vs RAM on the real TFLM interpreter, ops vs the registered op set) → write the
          inactive slot → mark it pending → reboot.
boot:     a pending slot counts a boot attempt, then runs the golden vectors from its signed
          manifest on TFLM inside the profile's arena budget → confirm (raise the anti-rollback
          sequence) or revert to the old slot, recording why. Too many attempts → revert.

The C update agent (firmware/agent) is the authority; this model follows its rules and is held
to them by tests/security/test_device_model_differential.py: equal sequence → already_installed,
a jump above the floor by more than `ff_bound` → fast_forward, a pending image in the target slot
is cleared once a manifest passes its checks, root-signed revocation lists (newer only) and
recovery statements (one use each), the reasons by the agent's names when a `runtime` (check,
self_test) is injected. The verification step is injected (`verify(stream, device_class=,
min_sequence=, now=, sink=, device_policy=, revocations=)`), by default
tinymlops.bundle.verify_bundle bound to the device's trust anchor and key.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO
from uuid import UUID

import numpy as np
from pydantic import BaseModel

from tinymlops.device.arena import fits, model_ops
from tinymlops.device.flash import Flash, FlashState, GoldenVectors, Slot, SlotImage, other
from tinymlops.device.profiles import DeviceProfile
from tinymlops.device.tflm import ArenaTooSmall, TFLMRuntime
from tinymlops.errors import DeviceError, ModelError, SlotOverflow
from tinymlops.util.io import sha256_bytes

VerifyFn = Callable[..., Any]  # (stream, *, device_class, min_sequence, now, sink, ...) -> VerificationResult
RuntimeCheck = Callable[[bytes, int], str]  # (image, manifest arena) -> ok | not_a_model | image_unfit
RuntimeSelfTest = Callable[[bytes, Any], str]  # (image, golden vectors or None) -> ok | selftest_failed
DEFAULT_MAX_BOOT_ATTEMPTS = 3
# reasons the agent gives only after the manifest passed (so a pending image in the target slot was cleared)
_AFTER_MANIFEST = {"payload_truncated", "payload_too_long", "payload_digest_mismatch", "ciphertext_digest_mismatch",
                   "decryption_failed", "io_error", "not_a_model", "image_unfit"}  # fmt: skip


class DevicePolicyRefusal(Exception):  # noqa: N818  (a refusal raised inside verification, with its reason)
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


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
    reason: str = "ok"  # why reverted, or no_model / slot_corrupt (the C agent's names)
    running_slot: str | None
    model_version: str | None
    sequence: int | None


class DeviceStatus(BaseModel):
    profile: str
    class_id: str
    state: FlashState
    slots: dict[str, SlotImage | None]


class BoundedSink(io.RawIOBase):
    """Receives the streamed plaintext; refuses to grow past the model slot (endless-data attack)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.buffer, self.overflowed = limit, bytearray(), False

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if len(self.buffer) + len(b) > self.limit:
            self.overflowed = True
            raise SlotOverflow(f"bundle payload exceeds the {self.limit}-byte model slot")
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
        model_shape = runtime.input_shape
        if int(np.prod(model_shape)) != n_in:
            return f"golden vectors: input shape {vectors.input_shape} does not fit the model input {model_shape}"
        xs, want = xs.reshape(vectors.count, *model_shape), want.reshape(vectors.count, n_out)
        worst = 0
        for i in range(vectors.count):
            got = runtime.invoke(xs[i]).reshape(-1).astype(np.int16)
            worst = max(worst, int(np.abs(got - want[i].astype(np.int16)).max()))
    except ArenaTooSmall:
        return f"TFLM cannot allocate the model in the {arena_bytes}-byte arena"
    except (RuntimeError, ValueError, ModelError) as exc:  # ModelError: the interpreter crashed (isolated)
        return f"TFLM failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if worst > vectors.tolerance:
        return f"golden vectors differ by {worst} int8 steps (tolerance {vectors.tolerance})"
    return None


def fit_problems(model: bytes, profile: DeviceProfile, declared_arena: int | None = None) -> list[tuple[str, str]]:
    """(reason, detail) for each way the model does not fit the profile: flash, arena, ops. A firmware
    model image (the payload of an emulated class's bundle) is checked against the emulated part."""
    if is_model_image(model):
        from tinymlops.device.mcu import image_fit_problems

        return image_fit_problems(profile, model)
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


def is_model_image(payload: bytes) -> bool:
    """A firmware model image (tinymlops.device.image, magic "TMR1") rather than a .tflite."""
    return bytes(payload[:4]) == b"TMR1"


def bundle_verifier(trust: Any, kek: bytes | None = None, revocations: Any = None) -> VerifyFn:
    """The device's verification step: tinymlops.bundle.verify_bundle bound to what the device
    holds (the root public key, its class KEK, the last revocation list it saw)."""
    from tinymlops.bundle import verify_bundle

    def verify(stream: BinaryIO, **policy: Any) -> Any:
        policy.setdefault("revocations", revocations)  # the device's stored list, when it has one
        return verify_bundle(stream, trust, kek=kek, **policy)

    verify.trust = trust  # type: ignore[attr-defined]  # revocation lists and recovery statements
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
        ff_bound: int | None = None,  # None: provisioned without a fast-forward bound
        device_id: UUID | None = None,
        runtime: tuple[RuntimeCheck, RuntimeSelfTest] | None = None,
    ) -> None:
        self.profile, self.flash, self.verify = profile, flash, verify
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.max_boot_attempts, self.ff_bound, self.device_id = max_boot_attempts, ff_bound, device_id
        self.runtime_hooks = runtime
        self._runtime: TFLMRuntime | None = None

    # -- update agent ---------------------------------------------------------------------------
    def install(self, source: Path | BinaryIO | bytes, reboot: bool = True) -> InstallResult:
        """Receive, verify, check and write a bundle; then reboot into it unless `reboot` is False."""
        state = self.flash.read_state()
        sink = BoundedSink(self.profile.flash_model_bytes)
        stream = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
        extra = {"revocations": self._revocations(state)} if state.revocation_version else {}
        try:
            result = self.verify(
                stream,
                device_class=self.profile.class_id,
                min_sequence=state.min_sequence,
                now=self.clock(),
                sink=sink,
                device_policy=self._sequence_policy(state),
                **extra,
            )
        except SlotOverflow as exc:
            return self._refuse(Stage.RECEIVE, "too_large", str(exc))
        except DevicePolicyRefusal as exc:
            return self._refuse(Stage.VERIFY, exc.reason, exc.detail)
        if sink.overflowed:  # the verifier swallowed our overflow: still refuse for that reason
            return self._refuse(Stage.RECEIVE, "too_large", f"bundle payload exceeds the {sink.limit}-byte model slot")
        slot = other(state.active)
        reason = "ok" if result.ok else getattr(result.reason, "value", str(result.reason))
        if reason in _AFTER_MANIFEST or result.ok:
            state = self._clear_pending(state, slot)
        if not result.ok:
            return self._refuse(Stage.VERIFY, reason, result.detail)
        manifest, model = result.manifest, bytes(sink.buffer)
        problems = self._check(model, manifest.arena_bytes)
        if problems:
            return self._refuse(Stage.CHECK, problems[0][0], "; ".join(d for _, d in problems))
        selftest = None if manifest.selftest is None else GoldenVectors.model_validate(manifest.selftest.model_dump())
        image = SlotImage(
            model_name=manifest.model_name,
            model_version=manifest.model_version,
            sequence=manifest.sequence,
            sha256=sha256_bytes(model),
            size=len(model),
            selftest=selftest,
            arena_bytes=manifest.arena_bytes,
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

    def _sequence_policy(self, state: FlashState) -> Callable[[Any], None]:
        def policy(m: Any) -> None:
            if state.active is not None and m.sequence in (state.min_sequence, state.active_sequence):
                raise DevicePolicyRefusal("already_installed", f"sequence {m.sequence} is already installed")
            if self.ff_bound is not None and m.sequence - state.min_sequence > self.ff_bound:
                raise DevicePolicyRefusal(
                    "fast_forward", f"sequence {m.sequence} jumps more than {self.ff_bound} above {state.min_sequence}"
                )

        return policy

    def _clear_pending(self, state: FlashState, slot: Slot) -> FlashState:
        """An older pending image in the slot about to be written is given up first (as the agent)."""
        if state.pending != slot:
            return state
        return self.flash.write_state(state.model_copy(update={"pending": None, "boot_attempts": 0}), "clear")

    def _check(self, model: bytes, arena: int) -> list[tuple[str, str]]:
        if self.runtime_hooks is not None:
            answer = self.runtime_hooks[0](model, arena)
            return [] if answer == "ok" else [(answer, f"the runtime refused the image: {answer}")]
        try:
            return fit_problems(model, self.profile, arena)
        except ModelError as exc:
            return [("malformed_model", str(exc))]

    def _refuse(self, stage: Stage, reason: str, detail: str) -> InstallResult:
        detail = " ".join(detail.split())
        state = self.flash.read_state()
        self.flash.write_state(
            state.model_copy(update={"last_event": f"refused at {stage.value}: {detail}"}), "refused"
        )
        return InstallResult(ok=False, stage=stage, reason=reason, detail=detail)

    # -- root-signed statements -----------------------------------------------------------------
    def _trust(self) -> Any:
        trust = getattr(self.verify, "trust", None)
        if trust is None:
            raise DeviceError(f"{self.flash.root}: the device's verifier holds no trust anchor")
        return trust

    @staticmethod
    def _revocations(state: FlashState) -> Any:
        from tinymlops.bundle import RevocationList

        return RevocationList(
            sequence=state.revocation_version, issued=datetime.now(timezone.utc), revoked=state.revoked
        )

    def install_revocations(self, signed: bytes) -> str:
        """A root-signed revocation list, kept only if newer than the stored one: ok or why not."""
        from tinymlops.bundle import BundleError, RevocationList

        try:
            revocations = RevocationList.verify(signed, self._trust())
        except BundleError as exc:
            return exc.reason.value
        state = self.flash.read_state()
        if revocations.sequence <= state.revocation_version:
            return "stale_revocations"
        kids = [k for k in revocations.revoked if len(k) == 16 and all(c in "0123456789abcdefABCDEF" for c in k)]
        update = {"revocation_version": revocations.sequence, "revoked": [k.lower() for k in kids]}
        self.flash.write_state(state.model_copy(update=update), "revocations")
        return "ok"

    def apply_recovery(self, signed: bytes) -> str:
        """A root-signed recovery statement for this device and its counter sets the floor, once."""
        from tinymlops.bundle import BundleError
        from tinymlops.bundle.recovery import RecoveryStatement

        try:
            statement = RecoveryStatement.verify(signed, self._trust())
        except BundleError as exc:
            return exc.reason.value
        state = self.flash.read_state()
        if statement.class_id != self.profile.class_id:
            return "wrong_class"
        if statement.device_id != self.device_id:
            return "wrong_device"
        if statement.recovery_counter != state.recovery_counter:
            return "stale_recovery"
        update = {"min_sequence": statement.sequence, "recovery_counter": state.recovery_counter + 1}
        self.flash.write_state(state.model_copy(update=update), "recovery")
        return "ok"

    # -- bootloader -----------------------------------------------------------------------------
    def boot(self) -> BootResult:
        """What happens at power-on: settle a pending slot (self-test → confirm or revert), then
        start the confirmed image."""
        self._runtime = None
        self.flash.remove_stale_temps()
        state = self.flash.read_state()
        event, detail, reason = "booted", "running the confirmed image", "ok"
        if state.pending is not None:
            slot = state.pending
            state = self.flash.write_state(
                state.model_copy(update={"boot_attempts": state.boot_attempts + 1}), "attempt"
            )
            found = self.flash.read_slot(slot)
            why = self._try_pending(state, found)
            if why is None and found is not None:
                image = found[1]
                state = self.flash.write_state(
                    state.model_copy(
                        update={
                            "active": slot,
                            "pending": None,
                            "confirmed": True,
                            "boot_attempts": 0,
                            "min_sequence": max(state.min_sequence, image.sequence),
                            "active_sequence": image.sequence,
                            "last_event": f"confirmed {image.model_version} in slot {slot}",
                            "last_reason": "ok",
                        }
                    ),
                    "confirm",
                )
                event, detail = "confirmed", f"self-test passed: {image.model_version} confirmed in slot {slot}"
            else:
                reason, why_text = why or ("slot_corrupt", "no image")
                detail = f"reverted from slot {state.pending}: {why_text}"
                update = {"pending": None, "boot_attempts": 0, "last_event": detail, "last_reason": reason}
                state = self.flash.write_state(state.model_copy(update=update), "revert")
                event = "reverted"
        running = self.flash.read_slot(state.active) if state.active else None
        if running is None:
            if reason == "ok":
                reason = "slot_corrupt" if state.active else "no_model"
            return BootResult(
                event="reverted" if event == "reverted" else "no_model",  # as the agent: the revert is the event
                detail=detail if event == "reverted" else "no confirmed image",
                reason=reason,
                running_slot=None,
                model_version=None,
                sequence=None,
            )
        return BootResult(
            event=event,
            detail=detail,
            reason=reason,
            running_slot=state.active,
            model_version=running[1].model_version,
            sequence=running[1].sequence,
        )

    def _try_pending(self, state: FlashState, found: tuple[bytes, SlotImage] | None) -> tuple[str, str] | None:
        """None when the pending image may be confirmed, else (reason, detail)."""
        if state.boot_attempts > self.max_boot_attempts:
            return "boot_attempts", f"no confirmation after {self.max_boot_attempts} boot attempts"
        if found is None:
            return "slot_corrupt", "image does not match its recorded digest (incomplete or corrupted write)"
        model, image = found
        if image.sequence < state.min_sequence:
            return "rollback", f"sequence {image.sequence} below the anti-rollback floor {state.min_sequence}"
        if self.runtime_hooks is not None:
            check, self_test = self.runtime_hooks
            answer = check(model, image.arena_bytes)
            if answer == "ok":
                answer = self_test(model, image.selftest)
            return None if answer == "ok" else (answer, f"the runtime answered {answer}")
        if is_model_image(model):  # the firmware runtime's image: self-test on the emulated part
            from tinymlops.device.mcu import image_selftest

            why = image_selftest(self.profile, model, image.selftest)
        else:
            why = golden_check(model, image.selftest, self.profile.arena_budget_bytes)
        return None if why is None else ("selftest_failed", why)

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
        return self.runtime().invoke_batch(xq)

    def running_model(self) -> bytes | None:
        state = self.flash.read_state()
        found = self.flash.read_slot(state.active) if state.active else None
        return found[0] if found else None

    def status(self) -> DeviceStatus:
        slots = {s: (found[1] if (found := self.flash.read_slot(s)) else None) for s in ("a", "b")}
        return DeviceStatus(
            profile=self.profile.name, class_id=str(self.profile.class_id), state=self.flash.read_state(), slots=slots
        )
