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

from tinymlops.errors import DeviceError, TinyMLOpsError

out = Console()
err = Console(stderr=True)
device_app = typer.Typer(help="An emulated device in a local directory: install, boot, status.", no_args_is_help=True)

DEVICE_FILE = "device.json"  # the device's identity: its profile, written once at first install
RootOpt = typer.Option(Path("."), "--root", help="project directory (configs/devices.yaml, data/prepared)")
TrustOpt = typer.Option(None, "--trust", help="root public key", show_default="$TINYMLOPS_HOME/keys/root.pub")
KekOpt = typer.Option(None, "--kek", help="KEK file the device holds, for encrypted bundles")
RevocationsOpt = typer.Option(None, "--revocations", help="root-signed revocation list the device knows")
DirOpt = typer.Option(..., "--dir", help="the emulated device's directory")
JsonOpt = typer.Option(False, "--json", help="print JSON")


def _device_keys(root: Path, trust: Path | None, kek: Path | None, revocations: Path | None):
    from tinymlops.bundle import load_kek, load_revocations, load_trust
    from tinymlops.settings import Environment

    anchor = load_trust(trust or Environment.from_env(root).home / "keys" / "root.pub")
    return anchor, (load_kek(kek) if kek else None), (load_revocations(revocations, anchor) if revocations else None)


def _home(directory: Path):
    from tinymlops.device.agent.home import DeviceHome

    return DeviceHome.open(directory)


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
    """Install a bundle on the emulated device: the real firmware (update agent + runtime) verifies
    it, writes the inactive slot and marks it pending; then a reboot self-tests and confirms it.
    A new device (--profile) is provisioned first: the --trust root key is pinned for good."""
    from tinymlops.bundle import load_kek, load_revocations, load_trust
    from tinymlops.device.agent.home import DEVICE_FILE, DeviceHome
    from tinymlops.device.profiles import get_profile, load_profiles
    from tinymlops.settings import Environment

    if not bundle.is_file():
        raise TinyMLOpsError(f"{bundle}: file not found")
    anchor = load_trust(trust or Environment.from_env(root).home / "keys" / "root.pub")
    if (directory / DEVICE_FILE).is_file():
        home = DeviceHome.open(directory)
        if profile and profile != home.profile.name:
            raise TinyMLOpsError(f"{directory}: this device is a {home.profile.name}, not a {profile}")
        if trust and anchor.kid != home.identity["root_kid"]:
            err.print(f"note: {directory} pinned root {home.identity['root_kid']} at provisioning; --trust "
                      f"({anchor.kid}) cannot change it", soft_wrap=True, highlight=False)  # fmt: skip
    elif profile:
        chosen = get_profile(load_profiles(root), profile)
        home = DeviceHome.create(directory, chosen, anchor.public_key, kek=load_kek(kek) if kek else None)
    else:
        raise TinyMLOpsError(f"{directory}: not an emulated device (no {DEVICE_FILE}); install with --profile first")
    signed_revocations = load_revocations(revocations, anchor).signed if revocations else None
    report = home.install(bundle.read_bytes(), reboot=not no_reboot, revocations=signed_revocations)
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        line = f"{home.profile.name}: install {report.install.reason}"
        if report.boot is not None:
            b = report.boot
            line += f"; boot {b.event} ({b.reason}), running sequence {b.running_sequence}"
        out.print(line, soft_wrap=True, highlight=False)
    if not report.ok:
        stage = "boot" if report.install.reason == "pending" else "install"
        why = report.boot.reason if report.boot is not None and stage == "boot" else report.install.reason
        raise TinyMLOpsError(f"{stage} refused: {why}")


@device_app.command("boot")
def device_boot(directory: Path = DirOpt, root: Path = RootOpt, as_json: bool = JsonOpt) -> None:
    """Power-cycle the device: the agent settles a pending slot (self-test → confirm or revert) and
    verifies the active slot before the runtime loads it."""
    import dataclasses

    result = _home(directory).boot()
    if as_json:
        out.print_json(json.dumps(dataclasses.asdict(result)))
        return
    out.print(f"{result.event}: {result.reason}, running sequence {result.running_sequence}", soft_wrap=True,
              highlight=False)  # fmt: skip


@device_app.command("status")
def device_status(directory: Path = DirOpt, root: Path = RootOpt, as_json: bool = JsonOpt) -> None:
    """The agent's state log (active/pending slot, anti-rollback floor, revocation list version,
    boot attempts, last event) and what each slot holds."""
    status = _home(directory).status()
    if as_json:
        out.print_json(status.model_dump_json())
        return
    s = status.state
    out.print(
        f"{status.profile} ({status.core}, device {status.device_id}, root {status.root_kid}): active "
        f"{'—' if s.active is None else 'ab'[s.active]}, pending {'—' if s.pending is None else 'ab'[s.pending]}, "
        f"floor {s.floor}, revocations v{s.revocation_version}, boot attempts {s.boot_attempts}",
        soft_wrap=True,
        highlight=False,
    )
    for slot, image in status.slots.items():
        text = "empty" if image is None else f"{image.model_name} {image.model_version} seq {image.sequence}"
        out.print(f"  slot {slot}: {text}", highlight=False)
    out.print(f"  last event: {s.last_event} ({s.last_reason})", soft_wrap=True, highlight=False)


def hil_command(
    bundle: Path = typer.Argument(..., help="bundle file, or a directory of per-class *.bundle files"),
    profile: list[str] = typer.Option([], "--profile", help="profile name (repeatable)"),
    all_profiles: bool = typer.Option(False, "--all", help="every profile in configs/devices.yaml"),
    root: Path = RootOpt,
    trust: Path | None = TrustOpt,
    kek: Path | None = KekOpt,
    revocations: Path | None = RevocationsOpt,
    prepared: Path | None = typer.Option(
        None, "--prepared", help="prepared data dir", show_default="ROOT/data/prepared"
    ),
    report_dir: Path | None = typer.Option(None, "--report-dir", help="write per-profile JSON, summary.md, hil.png"),
    as_json: bool = JsonOpt,
) -> None:
    """Hardware-in-the-loop: install the bundle on each profile's emulated twin and print the matrix."""
    import tempfile

    from tinymlops.device import hil
    from tinymlops.device.profiles import get_profile, load_profiles
    from tinymlops.ml.data.split import load_split

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
        from tinymlops.util.io import write_bytes

        write_bytes(report_dir / "summary.md", hil.summary_markdown(reports).encode())
        hil.plot(reports, report_dir / "hil.png")
    if as_json:
        out.print_json(json.dumps([r.model_dump(mode="json") for r in reports]))
    else:
        for line in hil_lines(hil.SUMMARY_HEADER, hil.summary_rows(reports), out.width):
            out.print(line, soft_wrap=True, highlight=False, markup=False)
        for r in reports:
            if r.status != "passed":
                out.print(f"{r.profile} {r.status}: {r.reason}", soft_wrap=True, highlight=False, markup=False)
    failures = hil.gate_failures(reports)
    if failures:
        raise DeviceError(f"HIL failed on {len(failures)} targeted profile(s); first: {failures[0]}")


def hil_lines(header: list[str], rows: list[list[str]], width: int) -> list[str]:
    """The HIL matrix for a terminal: a table when every column fits in `width`, otherwise one
    block per profile (its name and status, then one figure per line), so that no cell is cut."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)] if rows else []
    if rows and sum(widths) + 2 * (len(widths) - 1) <= width:
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        return [fmt.format(*header).rstrip(), "  ".join("─" * w for w in widths)] + [
            fmt.format(*r).rstrip() for r in rows
        ]
    label = max(len(h) for h in header[2:]) if len(header) > 2 else 0
    lines = ["hardware-in-the-loop"]
    for row in rows:
        lines += ["", f"{row[0]}  {row[1]}"]
        lines += [f"  {h:<{label}}  {v}" for h, v in zip(header[2:], row[2:], strict=True)]
    return lines
