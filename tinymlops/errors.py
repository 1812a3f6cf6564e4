"""One exception family: the domain's kinds of failure, nothing about HTTP (the fleet's API layer
maps these to status codes in one place). Every message is a single line a user can act on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tinymlops.bundle.reasons import Reason


class TinyMLOpsError(Exception):
    """Base class: the CLI prints str(error) on one line and exits 1."""


class ConfigError(TinyMLOpsError):
    """A params or config file is missing, malformed or has a wrong key/type."""


class DataError(TinyMLOpsError):
    """A dataset file is unreadable or fails validation."""


class ModelError(TinyMLOpsError):
    """A model file is not a usable model, or a model fails a quality gate."""


class VersioningError(TinyMLOpsError):
    """git or DVC could not record or push a version."""


class KeyStoreError(TinyMLOpsError):
    """A key file (signing key, root key, class key) is missing, unreadable or in the wrong place."""


class BundleError(TinyMLOpsError):
    """A bundle, manifest, key file or revocation list is unusable. `reason` says which kind."""

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail.replace("\n", " ")
        super().__init__(f"{reason.value}: {self.detail}")


class DeviceError(TinyMLOpsError):
    """A device (emulated or its state directory) cannot do what was asked, or failed HIL."""


class SlotOverflow(DeviceError):
    """A payload is larger than the model slot it is streamed into."""


class UnsupportedModel(ModelError):
    """The model uses an op, type or shape the firmware runtime does not run (one line: op, tensor)."""


class DoesNotFit(ModelError):
    """Firmware + model image exceed the flash/slot, or static RAM + arena + stack exceed the RAM."""


class FirmwareBuildError(DeviceError):
    """The device firmware (firmware/) did not cross-compile or link for its core."""


class MemoryFault(DeviceError):
    """Emulated firmware touched memory outside its part's flash and RAM, overflowed its stack,
    wrote flash directly or fetched code from RAM. `address`, `pc` and `kind` say where and what."""

    def __init__(self, message: str, address: int, pc: int, kind: str) -> None:
        super().__init__(message)
        self.address, self.pc, self.kind = address, pc, kind


class FirmwareRunError(DeviceError):
    """Emulated firmware ran but reported an error (image refused, run did not finish)."""


class FlashPowerCut(DeviceError):
    """Raised by an emulated flash controller's hook to cut power in the middle of an erase or program."""


class WatermarkError(TinyMLOpsError):
    """A watermark key, trigger set or verification could not be used."""


class FleetError(TinyMLOpsError):
    """The fleet server, a rollout or a device's report refused an operation."""


# -- the fleet's domain kinds (tinymlops.fleet.api maps them to HTTP status codes, nowhere else) ----
class NotFound(FleetError):
    """No such device, release or rollout."""


class Conflict(FleetError):
    """The request would duplicate or contradict what is stored."""


class RolloutError(Conflict):
    """A rollout verb its state does not allow, an inconsistent rollout, or nothing to roll out."""


class Unauthenticated(FleetError):
    """No credential, or not in the expected form."""


class Forbidden(FleetError):
    """A credential that is not valid for what was asked."""


class TooLarge(FleetError):
    """A request or upload over its size limit."""


class Refused(FleetError):
    """Well-formed input that fails a check (a bundle that does not verify, a window in the future)."""


class Unavailable(FleetError):
    """The server is not configured to do this now (no trust anchor, unusable revocation list)."""


class WebhookError(TinyMLOpsError):
    """The webhook receiver cannot start (missing secret, unusable store, no orchestrator)."""
