"""The device's flash, emulated in a directory: two model slots (A/B) and a small state record.

Every write goes through `Flash._write`, which is atomic (temp file, fsync, rename via
tinymlops.util.io) and passes three named fault-injection points: `<point>:before`, `<point>:unrenamed`
(data written to the temp file, not yet renamed in) and `<point>:after`. A test hands in a hook that
raises `PowerCut` at one of them to emulate losing power there.

The state record is kept twice (state.0.json / state.1.json) with a generation counter and a
digest, written alternately, as a bootloader keeps a double-buffered record: a torn or corrupted
copy is ignored and the other one wins.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tinymlops.util.io import atomic_path, sha256_bytes

Slot = Literal["a", "b"]
SLOTS: tuple[Slot, Slot] = ("a", "b")
FaultHook = Callable[[str], None]


class PowerCut(BaseException):  # noqa: N818  (not an error: power went away; no `except Exception` may catch it)
    """Raised by a fault hook: the process state is abandoned where it stands, as on power loss."""


class GoldenVectors(BaseModel):
    """The self-test carried in a signed manifest, stored beside the image it tests."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
    input_shape: list[int]
    output_shape: list[int]
    inputs: bytes
    expected: bytes
    count: int
    tolerance: int


class SlotImage(BaseModel):
    """What the bootloader knows about the image in a slot (written after the image itself)."""

    model_name: str
    model_version: str
    sequence: int
    sha256: str
    size: int
    selftest: GoldenVectors | None = None
    arena_bytes: int = 0  # what the signed manifest declares (the runtime checks it at boot too)


class FlashState(BaseModel):
    generation: int = 0
    active: Slot | None = None
    pending: Slot | None = None
    confirmed: bool = False
    min_sequence: int = 0  # anti-rollback: raised when a new image is confirmed
    boot_attempts: int = 0
    last_event: str = Field("", description="the last revert / refusal, one line")
    last_reason: str = ""  # why the last revert happened (the C agent's reason name)
    active_sequence: int = 0  # the sequence of the confirmed image (a recovery lowers only the floor)
    revocation_version: int = 0  # the newest root-signed revocation list installed (0: none)
    revoked: list[str] = []  # its key ids
    recovery_counter: int = 0  # root-signed recovery statements applied so far (each works once)


def other(slot: Slot | None) -> Slot:
    return "b" if slot == "a" else "a"


class Flash:
    def __init__(self, root: Path | str, fault: FaultHook | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._fault = fault or (lambda point: None)

    # -- the one write path -------------------------------------------------------------------
    def _write(self, name: str, data: bytes, point: str) -> None:
        self._fault(f"{point}:before")
        with atomic_path(self.root / name) as tmp:
            tmp.write_bytes(data)
            self._fault(f"{point}:unrenamed")
        self._fault(f"{point}:after")

    def remove_stale_temps(self) -> int:
        """What a power cut mid-write leaves behind: temp files, never renamed in."""
        stale = list(self.root.glob(".*.tmp"))
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)

    # -- slots ----------------------------------------------------------------------------------
    def write_slot(self, slot: Slot, model: bytes, image: SlotImage) -> None:
        """Image first, then its description: a cut in between leaves a digest mismatch, so the
        bootloader treats the slot as empty, never as half-written."""
        self._write(f"slot_{slot}.bin", model, f"slot_{slot}.image")
        self._write(f"slot_{slot}.json", image.model_dump_json().encode(), f"slot_{slot}.meta")

    def read_slot(self, slot: Slot) -> tuple[bytes, SlotImage] | None:
        """The slot's image and description, or None unless the image matches its recorded digest."""
        try:
            image = SlotImage.model_validate_json((self.root / f"slot_{slot}.json").read_bytes())
            model = (self.root / f"slot_{slot}.bin").read_bytes()
        except (OSError, ValidationError, ValueError):
            return None
        if len(model) != image.size or sha256_bytes(model) != image.sha256:
            return None
        return model, image

    # -- state record ---------------------------------------------------------------------------
    @staticmethod
    def _encode(state: FlashState) -> bytes:
        body = state.model_dump(mode="json")
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return json.dumps({"state": body, "sha256": digest}, sort_keys=True).encode()

    def _read_copy(self, index: int) -> FlashState | None:
        try:
            record = json.loads((self.root / f"state.{index}.json").read_bytes())
            body = record["state"]
            if hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest() != record["sha256"]:
                return None
            return FlashState.model_validate(body)
        except (OSError, ValueError, KeyError, TypeError, ValidationError):
            return None

    def read_state(self) -> FlashState:
        """The newest intact copy; a blank device (no intact copy) has the empty state."""
        copies = [s for s in (self._read_copy(0), self._read_copy(1)) if s is not None]
        return max(copies, key=lambda s: s.generation) if copies else FlashState()

    def write_state(self, state: FlashState, point: str) -> FlashState:
        """Write `state` as the next generation, over the older copy."""
        new = state.model_copy(update={"generation": self.read_state().generation + 1})
        self._write(f"state.{new.generation % 2}.json", self._encode(new), f"state.{point}")
        return new
