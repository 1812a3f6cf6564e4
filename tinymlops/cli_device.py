"""`tinymlops hil …` and `tinymlops device …`: emulated hardware-in-the-loop from a terminal.

`hil` runs a bundle (or a directory of per-class bundles) through device profiles and prints the
matrix; `device` keeps one emulated device in a local directory (its flash and its profile) to
install bundles into, reboot and inspect.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tinymlops.errors import TinyMLOpsError

out = Console()
err = Console(stderr=True)
device_app = typer.Typer(help="An emulated device in a local directory: install, boot, status.", no_args_is_help=True)

DEVICE_FILE = "device.json"  # the device's identity: its profile, written once at first install
RootOpt = typer.Option(Path("."), "--root", help="project directory (configs/devices.yaml, data/prepared)")
TrustOpt = typer.Option(None, "--trust", help="root public key [default: $TINYMLOPS_HOME/keys/root.pub]")
KekOpt = typer.Option(None, "--kek", help="KEK file the device holds, for encrypted bundles")
RevocationsOpt = typer.Option(None, "--revocations", help="root-signed revocation list the device knows")
DirOpt = typer.Option(..., "--dir", help="the emulated device's directory")
JsonOpt = typer.Option(False, "--json", help="print JSON")


class HILFailed(TinyMLOpsError):
    """A targeted profile failed hardware-in-the-loop."""


def _device_keys(root: Path, trust: Path | None, kek: Path | None, revocations: Path | None):
    from tinymlops.bundle import load_kek, load_revocations, load_trust
    from tinymlops.settings import Environment

    anchor = load_trust(trust or Environment.from_env(root).home / "keys" / "root.pub")
    return anchor, (load_kek(kek) if kek else None), (load_revocations(revocations, anchor) if revocations else None)


def _open_device(directory: Path, profile_name: str | None, root: Path, verify=None):
    from tinymlops.device.firmware import Device
    from tinymlops.device.flash import Flash
    from tinymlops.device.profiles import DeviceProfile, get_profile, load_profiles
    from tinymlops.io import write_json

    identity = directory / DEVICE_FILE
    if identity.is_file():
        profile = DeviceProfile.model_validate_json(identity.read_text())
        if profile_name and profile_name != profile.name:
            raise TinyMLOpsError(f"{identity}: this device is a {profile.name}, not a {profile_name}")
    elif profile_name:
        profile = get_profile(load_profiles(root), profile_name)
        write_json(identity, profile.model_dump(mode="json"))
    else:
        raise TinyMLOpsError(f"{directory}: not an emulated device (no {DEVICE_FILE}); install with --profile first")
    return Device(profile, Flash(directory), verify or (lambda *a, **k: None))


@device_app.command("install")
def device_install(
    bundle: Path = typer.Argument(..., help="bundle file"),
    directory: Path = DirOpt,
    profile: str | None = typer.Option(None, "--profile", help="device profile (needed for a new device)"),
    root: Path = RootOpt,
    trust: Path | None = TrustOpt,
    kek: Path | None = KekOpt,
    revocations: Path | None = RevocationsOpt,
    no_reboot: bool = typer.Option(False, "--no-reboot", help="write and mark pending, do not reboot"),
    as_json: bool = JsonOpt,
) -> None:
    """Install a bundle: verify, check fit, write the inactive slot, reboot into it (self-test)."""
    from tinymlops.device.firmware import bundle_verifier

    if not bundle.is_file():
        raise TinyMLOpsError(f"{bundle}: file not found")
    device = _open_device(directory, profile, root, bundle_verifier(*_device_keys(root, trust, kek, revocations)))
    result = device.install(bundle, reboot=not no_reboot)
    if as_json:
        out.print_json(result.model_dump_json())
    else:
        out.print(f"{device.profile.name}: {result.stage.value}: {result.detail}", soft_wrap=True, highlight=False)
    if not result.ok:
        raise TinyMLOpsError(f"install refused at {result.stage.value}: {result.reason}: {result.detail}")


@device_app.command("boot")
def device_boot(directory: Path = DirOpt, root: Path = RootOpt, as_json: bool = JsonOpt) -> None:
    """Power-cycle the device: settle a pending slot (self-test → confirm or revert), run the image."""
    result = _open_device(directory, None, root).boot()
    if as_json:
        out.print_json(result.model_dump_json())
        return
    out.print(f"{result.event}: {result.detail}", soft_wrap=True, highlight=False)


@device_app.command("status")
def device_status(directory: Path = DirOpt, root: Path = RootOpt, as_json: bool = JsonOpt) -> None:
    """Slots, active/pending slot, confirmation, anti-rollback floor, boot attempts."""
    status = _open_device(directory, None, root).status()
    if as_json:
        out.print_json(status.model_dump_json())
        return
    s = status.state
    out.print(
        f"{status.profile} (class {status.class_id}): active {s.active or '—'}, pending {s.pending or '—'}, "
        f"confirmed {s.confirmed}, min sequence {s.min_sequence}, boot attempts {s.boot_attempts}",
        soft_wrap=True,
        highlight=False,
    )
    for slot, image in status.slots.items():
        text = "empty" if image is None else f"{image.model_name} {image.model_version} seq {image.sequence}"
        out.print(f"  slot {slot}: {text}", highlight=False)
    if s.last_event:
        out.print(f"  last event: {s.last_event}", soft_wrap=True, highlight=False)


def hil_command(
    bundle: Path = typer.Argument(..., help="bundle file, or a directory of per-class *.bundle files"),
    profile: list[str] = typer.Option([], "--profile", help="profile name (repeatable)"),
    all_profiles: bool = typer.Option(False, "--all", help="every profile in configs/devices.yaml"),
    root: Path = RootOpt,
    trust: Path | None = TrustOpt,
    kek: Path | None = KekOpt,
    revocations: Path | None = RevocationsOpt,
    prepared: Path | None = typer.Option(None, "--prepared", help="prepared data dir [default: ROOT/data/prepared]"),
    report_dir: Path | None = typer.Option(None, "--report-dir", help="write per-profile JSON, summary.md, hil.png"),
    as_json: bool = JsonOpt,
) -> None:
    """Hardware-in-the-loop: install the bundle on each profile's emulated twin and print the matrix."""
    import tempfile

    from tinymlops import hil
    from tinymlops.data.split import load_split
    from tinymlops.device.profiles import get_profile, load_profiles

    if not bundle.exists():
        raise TinyMLOpsError(f"{bundle}: not found")
    if all_profiles == bool(profile):
        raise typer.BadParameter("give --profile NAME (one or more) or --all")
    known = load_profiles(root)
    chosen = known if all_profiles else [get_profile(known, name) for name in profile]
    anchor, kek_bytes, revoked = _device_keys(root, trust, kek, revocations)
    test = load_split(prepared or root / "data" / "prepared", "test")
    routes = hil.route_bundles(bundle, chosen)
    reports = []
    with tempfile.TemporaryDirectory() as work, err.status("running HIL") as status:
        for p in chosen:
            status.update(f"HIL on {p.name}")
            path = routes[p.name] if all_profiles or bundle.is_dir() else bundle  # explicit: install as asked
            if path is None:
                reports.append(hil.no_bundle_report(p))
                continue
            reports.append(hil.run_hil(path, p, anchor, test, Path(work), kek=kek_bytes, revocations=revoked))
    if report_dir:
        for r in reports:
            r.write(report_dir / f"hil_{r.profile}.json")
        from tinymlops.io import write_bytes

        write_bytes(report_dir / "summary.md", hil.summary_markdown(reports).encode())
        hil.plot(reports, report_dir / "hil.png")
    if as_json:
        out.print_json(json.dumps([r.model_dump(mode="json") for r in reports]))
    else:
        table = Table(title="hardware-in-the-loop")
        for i, name in enumerate(hil.SUMMARY_HEADER):
            table.add_column(name, no_wrap=i < 2)  # profile and status stay readable on narrow terminals
        for row in hil.summary_rows(reports):
            table.add_row(*row)
        out.print(table)
        for r in reports:
            if r.status != "passed":
                out.print(f"{r.profile} {r.status}: {r.reason}", soft_wrap=True, highlight=False, markup=False)
    failures = hil.gate_failures(reports)
    if failures:
        raise HILFailed(f"HIL failed on {len(failures)} targeted profile(s); first: {failures[0]}")


COMMANDS = [("hil", hil_command), ("device", device_app)]
