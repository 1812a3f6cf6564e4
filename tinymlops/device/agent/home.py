"""An emulated device kept in a directory: `device.json` (profile, device id, pinned root key id)
and `flash.bin` (the part's flash from the provisioning page to its end). What
`tinymlops device install|status|boot` drive: every operation loads the flash, runs the real
firmware (update agent + C runtime) on the emulated core, and writes the flash back atomically.

Provisioning happens once, at the first install with `--profile`: the root public key given then
is written into the provisioning page, which the flash controller locks. A later `--trust` cannot
change it (the agent has no code path that writes that page); it is reported and ignored.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ValidationError

from tinymlops.device.agent.driver import BootOutcome, DeviceState, Outcome
from tinymlops.device.agent.emulated import EmuDevice
from tinymlops.device.profiles import DeviceProfile
from tinymlops.errors import DeviceError, TinyMLOpsError
from tinymlops.util.io import write_bytes, write_json

DEVICE_FILE, FLASH_FILE = "device.json", "flash.bin"
_IDENTITY_KEYS = ("device_id", "root_kid")  # written at provisioning, read by status and install


class SlotView(BaseModel):
    slot: str
    model_name: str
    model_version: str
    sequence: int
    payload_bytes: int


class DeviceReport(BaseModel):
    """`device status`: identity, the agent's state log, and what each slot holds (as recorded;
    the agent re-verifies a slot at every boot before it runs it)."""

    profile: str
    core: str
    device_id: str
    class_id: str
    root_kid: str
    state: DeviceState
    slots: dict[str, SlotView | None]


class InstallReport(BaseModel):
    install: Outcome
    boot: BootOutcome | None = None
    revocations: Outcome | None = None
    cycles: dict[str, float] = {}

    @property
    def ok(self) -> bool:
        return self.install.reason == "pending" and (self.boot is None or self.boot.event == "confirmed")


def _kid(public_key: bytes) -> str:
    import hashlib

    return hashlib.sha256(public_key).hexdigest()[:16]


class DeviceHome:
    def __init__(self, directory: Path, profile: DeviceProfile, identity: dict) -> None:
        self.directory, self.profile, self.identity = directory, profile, identity
        flash = directory / FLASH_FILE
        if flash.is_file():
            data = bytearray(flash.read_bytes())
            board = EmuDevice.shared_board(profile)
            expected = board.data_hi - board.data_lo
            if len(data) != expected:
                raise DeviceError(
                    f"{flash}: {len(data)} bytes, a {profile.name}'s flash data area is {expected} (truncated or "
                    "from another part)"
                )
            self.device = EmuDevice(profile, data)
        else:
            self.device = EmuDevice(profile)

    @classmethod
    def open(cls, directory: Path) -> DeviceHome:
        path = directory / DEVICE_FILE
        if not path.is_file():
            raise TinyMLOpsError(
                f"{directory}: not an emulated device (no {DEVICE_FILE}); install with --profile first"
            )
        try:
            identity = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(identity, dict):
                raise ValueError("not a JSON object")
            missing = [key for key in _IDENTITY_KEYS if not isinstance(identity.get(key), str)]
            if missing or not isinstance(identity.get("profile"), dict):
                raise ValueError(f"no {(missing or ['profile'])[0]!r}")
            profile = DeviceProfile.model_validate(identity["profile"])
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"])
            raise DeviceError(f"{path}: corrupt device file (profile.{where}: {exc.errors()[0]['msg']})") from None
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise DeviceError(f"{path}: corrupt device file ({str(exc).splitlines()[0]})") from None
        return cls(directory, profile, identity)

    @classmethod
    def create(
        cls, directory: Path, profile: DeviceProfile, root_public_key: bytes, *, kek: bytes | None = None
    ) -> DeviceHome:
        """The factory: a new device of `profile`'s class, its root key pinned."""
        from tinymlops.device.mcu import emulated

        if not emulated(profile):
            raise DeviceError(f"{profile.name}: {profile.emulation_note or 'no emulated part'}; no emulated device")
        device_id = uuid.uuid4()
        identity = {
            "profile": profile.model_dump(mode="json"),
            "device_id": str(device_id),
            "root_kid": _kid(root_public_key),
            "has_kek": kek is not None,
        }
        home = cls(directory, profile, identity)
        home.device.provision(root_public_key, device_id, profile.class_id, kek=kek)
        write_json(directory / DEVICE_FILE, identity)
        home.save()
        return home

    def save(self) -> None:
        write_bytes(self.directory / FLASH_FILE, bytes(self.device.flash))

    # -- operations ------------------------------------------------------------------------------
    def install(
        self, bundle: bytes, *, now: datetime | None = None, reboot: bool = True, revocations: bytes | None = None
    ) -> InstallReport:
        now = now or datetime.now(timezone.utc)
        try:
            revo = self.device.install_revocations(revocations, now=now) if revocations else None
            if revo is not None and revo.reason not in ("ok", "stale_revocations"):
                return InstallReport(install=Outcome(f"revocations: {revo.reason}"), revocations=revo)
            out = self.device.install(bundle, now)
            booted = self.device.boot(now) if reboot and out.reason == "pending" else None
            return InstallReport(install=out, boot=booted, revocations=revo, cycles=dict(self.device.cycles))
        finally:
            self.save()

    def boot(self, now: datetime | None = None) -> BootOutcome:
        try:
            return self.device.boot(now or datetime.now(timezone.utc))
        finally:
            self.save()

    def status(self) -> DeviceReport:
        return DeviceReport(
            profile=self.profile.name,
            core=self.profile.core,
            device_id=self.identity["device_id"],
            class_id=str(self.profile.class_id),
            root_kid=self.identity["root_kid"],
            state=self.device.state(),
            slots={name: self._slot(i) for i, name in enumerate(("a", "b"))},
        )

    def _slot(self, index: int) -> SlotView | None:
        """The manifest recorded in a slot's manifest area (parsed for display, not trusted)."""
        import struct

        import cbor2

        from tinymlops.bundle import manifest as mf

        lay, dev = self.device.layout, self.device
        lo = dev.offset(lay.slot_addr[index])
        magic, n = struct.unpack_from("<4sI", dev.flash, lo)
        if magic != b"TMLM" or n > lay.meta_bytes - 8:
            return None
        try:
            m = mf.decode(cbor2.loads(bytes(dev.flash[lo + 8 : lo + 8 + n])).value[2])
        except Exception:  # noqa: BLE001  (a torn or corrupted manifest area: nothing to show)
            return None
        return SlotView(
            slot="ab"[index],
            model_name=m.model_name,
            model_version=m.model_version,
            sequence=m.sequence,
            payload_bytes=m.payload_size,
        )
