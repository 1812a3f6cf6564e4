"""`tinymlops keys …` and `tinymlops bundle …`: signing keys, and signed model bundles.

Private keys never reach the terminal; the key passphrase comes from $TINYMLOPS_KEY_PASSPHRASE.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

keys_app = typer.Typer(
    help="Signing keys: offline root, online signing key, metering key, rotation, revocation.", no_args_is_help=True
)
bundle_app = typer.Typer(help="Signed (optionally encrypted) model bundles.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

KeysOpt = typer.Option(None, "--keys", help="key directory", show_default="$TINYMLOPS_HOME/keys")
JsonOpt = typer.Option(False, "--json", help="print JSON")


def _keys_dir(directory: Path | None) -> Path:
    if directory is not None:
        return directory
    from tinymlops.settings import Environment

    return Environment.from_env(".").home / "keys"


def _passphrase() -> str | None:
    from tinymlops.settings import key_passphrase

    return key_passphrase()


def _print_json(obj: object) -> None:
    out.print_json(json.dumps(obj, default=str))


# -- keys ----------------------------------------------------------------------------------------
@keys_app.command("init")
def keys_init(
    directory: Path | None = KeysOpt,
    validity_days: int = typer.Option(365, min=1, help="signing key validity"),
    as_json: bool = JsonOpt,
) -> None:
    """Create a root key, a signing key with its root-signed statement, and an empty revocation list."""
    from tinymlops.bundle import init_keys

    passphrase = _passphrase()
    paths = init_keys(_keys_dir(directory), passphrase, validity=timedelta(days=validity_days))
    if as_json:
        _print_json(paths.model_dump(mode="json"))
        return
    out.print(f"root key {paths.root_kid}, signing key {paths.signing_kid} in {paths.dir}", highlight=False)
    out.print(f"trust anchor for devices: {paths.root_public}", soft_wrap=True, highlight=False)
    out.print(
        f"private keys are 0600{' and passphrase-encrypted' if passphrase else ' and NOT encrypted'}; "
        f"move {paths.root_private.name} offline (needed only to rotate or revoke)",
        highlight=False,
    )


@keys_app.command("rotate")
def keys_rotate(
    directory: Path | None = KeysOpt,
    validity_days: int = typer.Option(365, min=1, help="new signing key validity"),
    revoke_previous: bool = typer.Option(False, "--revoke-previous", help="also revoke the key it replaces"),
) -> None:
    """New signing key with a new root-signed statement; devices need no reflash (same root)."""
    from tinymlops.bundle import current_paths, rotate_signing_key

    directory = _keys_dir(directory)
    previous = current_paths(directory).signing_kid
    paths = rotate_signing_key(
        directory, _passphrase(), validity=timedelta(days=validity_days), revoke_previous=revoke_previous
    )
    what = "revoked" if revoke_previous else "still valid until it expires or is revoked"
    out.print(f"signing key {paths.signing_kid} is now current; {previous} {what}", highlight=False)


@keys_app.command("metering")
def keys_metering(
    directory: Path | None = KeysOpt,
    validity_days: int = typer.Option(365, min=1, help="metering key validity"),
    revoke_previous: bool = typer.Option(False, "--revoke-previous", help="also revoke the metering key it replaces"),
    as_json: bool = JsonOpt,
) -> None:
    """Create a metering key (signs quota tokens, never bundles) with its root-signed statement.

    Needs the root private key this once; afterwards quota tokens (the HIL metering check, offline
    metering) are signed with the metering key and root.key can stay offline. Devices need no
    change: they check the statement against the root they pinned.
    """
    from tinymlops.bundle import create_metering_key

    passphrase = _passphrase()
    info = create_metering_key(
        _keys_dir(directory), passphrase, validity=timedelta(days=validity_days), revoke_previous=revoke_previous
    )
    if as_json:
        _print_json(info.model_dump(mode="json"))
        return
    out.print(
        f"metering key {info.kid} (quota signing) valid until {info.valid_until:%Y-%m-%d}; statement {info.statement}",
        soft_wrap=True,
        highlight=False,
    )
    out.print(
        f"private key {info.private}: 0600{', passphrase-encrypted' if passphrase else ', NOT encrypted'}; "
        "it can sign quota tokens only, bundles signed with it are refused",
        soft_wrap=True,
        highlight=False,
    )


@keys_app.command("revoke")
def keys_revoke(
    kid: str = typer.Argument(..., help="signing or metering key id"),
    directory: Path | None = KeysOpt,
    force: bool = typer.Option(False, "--force", help="revoke even the current signing key"),
) -> None:
    """Add a signing or metering key to the root-signed revocation list (its sequence number grows by one).

    The current signing key is refused without --force: after it, nothing can be signed until
    `keys rotate`. To replace it, run `keys rotate --revoke-previous` instead.
    """
    from tinymlops.bundle import KeyStoreError, current_paths, revoke_key

    directory = _keys_dir(directory)
    current = current_paths(directory).signing_kid
    if kid == current and not force:
        raise KeyStoreError(
            f"{kid} is the current signing key: nothing could be signed after revoking it; "
            "run `tinymlops keys rotate --revoke-previous`, or pass --force"
        )
    revocations = revoke_key(directory, kid, _passphrase())
    out.print(
        f"revoked {kid}; revocation list {revocations.sequence} lists {len(revocations.revoked)} key(s): "
        f"distribute {directory / 'revocations.cose'}",
        soft_wrap=True,
        highlight=False,
    )
    if kid == current:
        err.print(
            f"warning: {kid} was the current signing key: run `tinymlops keys rotate` before signing again",
            soft_wrap=True,
            highlight=False,
        )


@keys_app.command("show")
def keys_show(directory: Path | None = KeysOpt, as_json: bool = JsonOpt) -> None:
    """Public facts about the key directory: key ids, validity, revocations. Never private material."""
    from tinymlops.bundle import key_status

    status = key_status(_keys_dir(directory))
    if as_json:
        _print_json(status.model_dump(mode="json"))
        return
    table = Table("signing key", "valid from", "valid until", "current", "revoked", title=f"root {status.root_kid}")
    for k in status.signing_keys:
        table.add_row(
            k.kid,
            f"{k.valid_from:%Y-%m-%d}",
            f"{k.valid_until:%Y-%m-%d}",
            "yes" if k.current else "",
            "REVOKED" if k.revoked else "",
        )
    out.print(table)
    if status.metering_keys:
        meter = Table("metering key", "valid from", "valid until", "current", "revoked", title="quota signing")
        for m in status.metering_keys:
            meter.add_row(
                m.kid,
                f"{m.valid_from:%Y-%m-%d}",
                f"{m.valid_until:%Y-%m-%d}",
                "yes" if m.current else "",
                "REVOKED" if m.revoked else "",
            )
        out.print(meter)
    out.print(
        f"revocation list sequence {status.revocation_sequence}; root private key "
        f"{'present' if status.root_private_present else 'offline'}"
        f"{' (encrypted)' if status.encrypted else ''}",
        highlight=False,
    )


def _refuse_inside_repository(path: Path) -> None:
    """A secret never lands where git would pick it up: inside a work tree and not ignored."""
    import subprocess

    from tinymlops.bundle import KeyStoreError

    folder = path.resolve().parent
    while not folder.exists():
        folder = folder.parent
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=folder, capture_output=True, text=True, timeout=20
        )
        if top.returncode != 0:
            return  # not in a git work tree
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", "--no-index", str(path.resolve())],
            cwd=folder,
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return
    if ignored.returncode != 0:
        raise KeyStoreError(
            f"{path}: inside the git repository {top.stdout.strip()} and not ignored; "
            "refusing to write a secret there (default: the keys folder under $TINYMLOPS_HOME)"
        )


@keys_app.command("kek")
def keys_kek(
    device_class: str = typer.Argument(..., help="device class (or fleet) the key-encryption key is for"),
    output: Path | None = typer.Option(
        None,
        "--out",
        help="where to write it",
        show_default="$TINYMLOPS_HOME/keys/kek/CLASS.kek, as the pipeline reads",
    ),
    root: Path = typer.Option(Path("."), "--root", help="project directory (configs/bundle.yaml)"),
) -> None:
    """Create a 32-byte key-encryption key for a device class: mode 0600, outside git."""
    from tinymlops.bundle import BundleConfig, KeyStoreError, generate_kek, kek_id, write_kek
    from tinymlops.settings import Environment

    if not device_class or "/" in device_class or device_class.startswith("."):
        raise typer.BadParameter(f"{device_class!r}: a class name, not a path (use --out for a path)")
    path = output or BundleConfig.load_from(root).kek_path(Environment.from_env(root).home, device_class)
    _refuse_inside_repository(path)
    if path.exists():
        raise KeyStoreError(f"{path}: exists already; refusing to overwrite a KEK")
    kek = generate_kek()
    write_kek(path, kek)
    out.print(f"KEK {kek_id(kek)} for {device_class} written to {path} (0600)", highlight=False, soft_wrap=True)


# -- bundles -------------------------------------------------------------------------------------
@bundle_app.command("build")
def bundle_build(
    model: Path = typer.Argument(..., help="model file (int8 .tflite)"),
    device_class: str = typer.Option(..., "--class", help="device class, as in configs/devices.yaml"),
    output: Path | None = typer.Option(None, "--out", help="bundle file to write", show_default="CLASS.bundle"),
    name: str | None = typer.Option(None, "--name", help="model name", show_default="configs/tracking.yaml's"),
    version: str | None = typer.Option(None, "--version", help="model version", show_default="sha256 prefix"),
    sequence: int | None = typer.Option(
        None, "--sequence", min=0, help="anti-rollback number, only grows", show_default="seconds since the epoch"
    ),
    vendor: str | None = typer.Option(None, "--vendor", help="vendor domain", show_default="configs/devices.yaml's"),
    arena_bytes: int | None = typer.Option(
        None, "--arena-bytes", min=1, help="TFLM arena the model needs", show_default="measured on TFLM"
    ),
    ops: str | None = typer.Option(None, "--ops", help="comma-separated op list", show_default="read from the model"),
    kek: Path | None = typer.Option(None, "--kek", help="encrypt for this KEK file"),
    lifetime_days: float | None = typer.Option(
        None, "--lifetime-days", min=0.001, help="manifest expires after", show_default="configs/bundle.yaml's"
    ),
    root: Path = typer.Option(Path("."), "--root", help="project directory (configs/)"),
    directory: Path | None = KeysOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Sign (and optionally encrypt) a model into one bundle file.

    Only the model and --class are needed: the vendor comes from configs/devices.yaml, the ops
    from the model, the arena from a measurement on TFLite Micro.
    """
    import time

    from tinymlops.bundle import BundleConfig, BundleError, ManifestDraft, Reason, build_bundle, load_kek, load_signer
    from tinymlops.errors import ModelError
    from tinymlops.settings import TrackingConfig
    from tinymlops.util.io import sha256_bytes, sha256_file

    if not model.is_file():
        raise ModelError(f"{model}: file not found")
    payload = model.read_bytes()
    vendor = vendor or _vendor_of(root, device_class)
    if ops is not None:
        op_list = [o.strip() for o in ops.split(",") if o.strip()]
    else:
        from tinymlops.device.arena import model_ops

        op_list = model_ops(payload)
    if arena_bytes is None:
        from tinymlops.device.arena import min_arena

        with err.status(f"measuring the arena {model.name} needs on TFLite Micro", spinner="dots"):
            arena_bytes = min_arena(payload)
    config = BundleConfig.load_from(root)
    output = output or Path(f"{device_class}.bundle")
    if output.is_dir():
        raise BundleError(Reason.MALFORMED, f"--out {output}: is a directory; give the bundle file to write")
    draft = _draft(
        ManifestDraft,
        model_name=name if name is not None else TrackingConfig.load_from(root).registered_model,
        model_version=version if version is not None else sha256_bytes(payload)[:12],
        sequence=int(time.time()) if sequence is None else sequence,
        vendor=vendor,
        device_class=device_class,
        arena_bytes=arena_bytes,
        ops=op_list,
        lifetime=timedelta(days=lifetime_days if lifetime_days is not None else config.manifest_lifetime_days),
    )
    signer = load_signer(_keys_dir(directory), _passphrase())
    with err.status(f"building {output}", spinner="dots"):
        manifest = build_bundle(payload, draft, signer, output, load_kek(kek) if kek else None)
    if as_json:
        _print_json({"bundle": str(output), "bundle_sha256": sha256_file(output), "manifest": manifest.json_view()})
        return
    out.print(
        f"{output}: {manifest.model_name} {manifest.model_version} sequence {manifest.sequence}, "
        f"{manifest.payload_size:,} B, arena {draft.arena_bytes:,} B{' encrypted' if manifest.encrypted else ''}, "
        f"signed by {signer.kid}",
        soft_wrap=True,
        highlight=False,
    )


# the command-line option each ManifestDraft field comes from, to name it in an error
_DRAFT_OPTIONS = {
    "model_name": "--name",
    "model_version": "--version",
    "sequence": "--sequence",
    "vendor": "--vendor",
    "device_class": "--class",
    "arena_bytes": "--arena-bytes",
    "ops": "--ops",
    "lifetime": "--lifetime-days",
}


def _draft(model, **fields):
    """The manifest draft, or one line naming the option whose value the manifest cannot carry."""
    from pydantic import ValidationError

    from tinymlops.bundle import BundleError, Reason

    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        option = _DRAFT_OPTIONS.get(str(loc[0]), str(loc[0])) if loc else "manifest"
        where = f" (entry {loc[1] + 1})" if len(loc) > 1 and isinstance(loc[1], int) else ""
        raise BundleError(
            Reason.MALFORMED, f"{option}{where}: {first['msg'].lower()} (got {_shown(first['input'])})"
        ) from None


def _shown(value: object) -> str:
    """A value for an error line: short ones as they are, long ones by their length."""
    if len(repr(value)) <= 40:
        return repr(value)
    if isinstance(value, list | tuple):
        return f"{len(value)} entries"
    if isinstance(value, str):
        return f"{len(value)} characters"
    return repr(value)[:40] + "…"


def _vendor_of(root: Path, device_class: str) -> str:
    """The vendor of `device_class` in configs/devices.yaml (one line naming the file if absent)."""
    from tinymlops.device.profiles import load_profiles
    from tinymlops.errors import ConfigError

    profiles = load_profiles(root)
    for profile in profiles:
        if profile.device_class == device_class:
            return profile.vendor
    known = ", ".join(sorted({p.device_class for p in profiles}))
    raise ConfigError(
        f"configs/devices.yaml: no device class {device_class!r} (known: {known}); give --vendor for another class"
    )


def _parse_now(text: str | None) -> datetime | None:
    if text is None:
        return None
    from tinymlops.bundle import BundleError, Reason

    try:
        when = datetime.fromtimestamp(int(text), timezone.utc) if text.isdigit() else datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        raise BundleError(Reason.MALFORMED, f"--now {text!r}: expected ISO-8601 or Unix seconds") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _class_id(device_class: str | None, vendor: str | None) -> UUID | None:
    if device_class is None:
        return None
    try:
        return UUID(device_class)
    except ValueError:
        pass
    if vendor is None:
        raise typer.BadParameter("--class is not a UUID; give --vendor too, to derive the class id from names")
    from tinymlops.bundle import class_uuid

    return class_uuid(vendor, device_class)


def _verify_to(bundle: Path, anchor, output: Path | None, kwargs: dict):
    from tinymlops.bundle import BundleError, verify_bundle
    from tinymlops.util.io import atomic_path

    if output is None:
        return verify_bundle(bundle, anchor, **kwargs)
    try:
        with atomic_path(output) as tmp:  # the plaintext appears only if verification passed
            with open(tmp, "wb") as sink:
                result = verify_bundle(bundle, anchor, sink=sink, **kwargs)
            result.raise_for_failure(str(bundle))
    except BundleError:
        pass
    return result


@bundle_app.command("verify")
def bundle_verify(
    bundle: Path = typer.Argument(..., help="bundle file"),
    trust: Path = typer.Option(..., "--trust", help="root public key (root.pub)"),
    device_class: str | None = typer.Option(None, "--class", help="device class UUID, or a name with --vendor"),
    vendor: str | None = typer.Option(None, "--vendor", help="vendor name, to derive --class from names"),
    min_sequence: int | None = typer.Option(None, "--min-sequence", min=0, help="refuse lower sequence numbers"),
    now: str | None = typer.Option(None, "--now", help="verification time, ISO-8601 or Unix seconds"),
    revocations: Path | None = typer.Option(None, "--revocations", help="root-signed revocation list"),
    kek: Path | None = typer.Option(None, "--kek", help="KEK file, to decrypt and check the plaintext"),
    output: Path | None = typer.Option(None, "--out", help="write the verified plaintext model here (only if ok)"),
    as_json: bool = JsonOpt,
) -> None:
    """Verify a bundle completely (exit 1 with the reason when it is refused)."""
    from tinymlops.bundle import load_kek, load_revocations, load_trust

    anchor = load_trust(trust)
    kwargs = dict(
        device_class=_class_id(device_class, vendor),
        min_sequence=min_sequence,
        now=_parse_now(now),
        revocations=load_revocations(revocations, anchor) if revocations else None,
        kek=load_kek(kek) if kek else None,
    )
    with err.status(f"verifying {bundle}", spinner="dots"):
        result = _verify_to(bundle, anchor, output, kwargs)
    if as_json:
        view = result.model_dump(mode="json", exclude={"manifest"})
        view["manifest"] = result.manifest.json_view() if result.manifest else None
        _print_json(view)
        if not result.ok:
            raise typer.Exit(1)
        return
    result.raise_for_failure(str(bundle))
    out.print(f"OK {bundle}: {result.detail}", soft_wrap=True, highlight=False)


@bundle_app.command("inspect")
def bundle_inspect(bundle: Path = typer.Argument(..., help="bundle file"), as_json: bool = JsonOpt) -> None:
    """Show a bundle's manifest WITHOUT verifying it (use `bundle verify` for a trust decision)."""
    from tinymlops.bundle import read_manifest

    manifest = read_manifest(bundle)
    if as_json:
        _print_json(manifest.json_view())
        return
    err.print("UNVERIFIED: parsed only; run `tinymlops bundle verify` for a trust decision", highlight=False)
    table = Table(show_header=False, title=str(bundle), title_justify="left")
    for key, value in manifest.json_view().items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    out.print(table)
