"""`tinymlops keys …` and `tinymlops bundle …`: signing keys, and signed model bundles.

Private keys never reach the terminal; the key passphrase comes from $TINYMLOPS_KEY_PASSPHRASE.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

keys_app = typer.Typer(
    help="Signing keys: offline root, online signing key, rotation, revocation.", no_args_is_help=True
)
bundle_app = typer.Typer(help="Signed (optionally encrypted) model bundles.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

KeysOpt = typer.Option(None, "--keys", help="key directory [default: $TINYMLOPS_HOME/keys]")
JsonOpt = typer.Option(False, "--json", help="print JSON")


def _keys_dir(directory: Path | None) -> Path:
    if directory is not None:
        return directory
    from tinymlops.settings import Environment

    return Environment.from_env(".").home / "keys"


def _passphrase() -> str | None:
    from tinymlops.bundle import PASSPHRASE_ENV

    return os.environ.get(PASSPHRASE_ENV) or None


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


@keys_app.command("revoke")
def keys_revoke(kid: str = typer.Argument(..., help="signing key id"), directory: Path | None = KeysOpt) -> None:
    """Add a signing key to the root-signed revocation list (its sequence number grows by one)."""
    from tinymlops.bundle import revoke_key

    directory = _keys_dir(directory)
    revocations = revoke_key(directory, kid, _passphrase())
    out.print(
        f"revoked {kid}; revocation list {revocations.sequence} lists {len(revocations.revoked)} key(s): "
        f"distribute {directory / 'revocations.cose'}",
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
    out.print(
        f"revocation list sequence {status.revocation_sequence}; root private key "
        f"{'present' if status.root_private_present else 'offline'}"
        f"{' (encrypted)' if status.encrypted else ''}",
        highlight=False,
    )


@keys_app.command("kek")
def keys_kek(path: Path = typer.Argument(..., help="where to write the new 32-byte KEK (0600)")) -> None:
    """Create a key-encryption key for a fleet or device class."""
    from tinymlops.bundle import generate_kek, kek_id, write_kek

    if path.exists():
        from tinymlops.bundle import KekError

        raise KekError(f"{path}: exists already; refusing to overwrite a KEK")
    kek = generate_kek()
    write_kek(path, kek)
    out.print(f"KEK {kek_id(kek)} written to {path}", highlight=False, soft_wrap=True)


# -- bundles -------------------------------------------------------------------------------------
def _ops_of(model: bytes, path: Path) -> list[str]:
    from tinymlops.quantize import inspect  # TensorFlow: only when the ops are not given

    return list(inspect(model, str(path)).ops)


@bundle_app.command("build")
def bundle_build(
    model: Path = typer.Argument(..., help="model file (int8 .tflite)"),
    output: Path = typer.Option(..., "--out", help="bundle file to write"),
    name: str = typer.Option(..., "--name", help="model name"),
    version: str = typer.Option(..., "--version", help="model version"),
    sequence: int = typer.Option(..., "--sequence", min=0, help="monotonic release number (anti-rollback)"),
    vendor: str = typer.Option(..., "--vendor", help="vendor domain name (UUIDv5 source)"),
    device_class: str = typer.Option(..., "--class", help="device class name (UUIDv5 under the vendor)"),
    arena_bytes: int = typer.Option(0, "--arena-bytes", min=0, help="TFLM arena the model needs"),
    ops: str | None = typer.Option(None, "--ops", help="comma-separated op list [default: read from the model]"),
    kek: Path | None = typer.Option(None, "--kek", help="encrypt for this KEK file"),
    lifetime_days: float = typer.Option(365, "--lifetime-days", min=0.001, help="manifest expires after"),
    directory: Path | None = KeysOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Sign (and optionally encrypt) a model into one bundle file."""
    from tinymlops.bundle import ManifestDraft, build_bundle, load_kek, load_signer
    from tinymlops.errors import ModelError
    from tinymlops.io import sha256_file

    if not model.is_file():
        raise ModelError(f"{model}: file not found")
    payload = model.read_bytes()
    op_list = [o.strip() for o in ops.split(",") if o.strip()] if ops is not None else _ops_of(payload, model)
    draft = ManifestDraft(
        model_name=name,
        model_version=version,
        sequence=sequence,
        vendor=vendor,
        device_class=device_class,
        arena_bytes=arena_bytes,
        ops=op_list,
        lifetime=timedelta(days=lifetime_days),
    )
    signer = load_signer(_keys_dir(directory), _passphrase())
    with err.status(f"building {output}", spinner="dots"):
        manifest = build_bundle(payload, draft, signer, output, load_kek(kek) if kek else None)
    if as_json:
        _print_json({"bundle": str(output), "bundle_sha256": sha256_file(output), "manifest": manifest.json_view()})
        return
    out.print(
        f"{output}: {manifest.model_name} {manifest.model_version} sequence {manifest.sequence}, "
        f"{manifest.payload_size:,} B{' encrypted' if manifest.encrypted else ''}, signed by {signer.kid}",
        soft_wrap=True,
        highlight=False,
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
    from tinymlops.io import atomic_path

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


COMMANDS = [("keys", keys_app), ("bundle", bundle_app)]
