"""`tinymlops watermark …`: make an owner key, and check whether a .tflite carries our watermark."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Keyed black-box watermark: owner keys and ownership checks.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def _config(root: Path):
    from tinymlops.watermark.config import WatermarkConfig

    # Outside a project (no configs/watermark.yaml) the defaults are the shipped ones.
    if (root / "configs" / WatermarkConfig.FILE).is_file():
        return WatermarkConfig.load_from(root)
    return WatermarkConfig()


@app.command()
def keygen(
    owner_id: int = typer.Option(..., "--owner-id", help="owner id, 0..2^32-1 (public, part of the payload)"),
    serial: int = typer.Option(..., "--serial", help="model serial, 0..2^32-1 (public, part of the payload)"),
    out_file: Path = typer.Option(..., "--out", help="key file to create (mode 0600; keep it out of git)"),
    force: bool = typer.Option(
        False, "--force", help="replace an existing key file (its watermarks become unprovable)"
    ),
) -> None:
    """Create an owner key: 32 random bytes + owner id + serial. The file is the watermark's only secret."""
    from tinymlops.watermark.key import generate_key, write_key

    key = generate_key(owner_id, serial)
    write_key(key, out_file, overwrite=force)
    out.print(f"wrote owner key {out_file} (mode 0600), payload id {key.payload_id}", soft_wrap=True, highlight=False)


@app.command()
def verify(
    model: Path = typer.Argument(..., help=".tflite file (float or int8)"),
    key_file: Path = typer.Option(..., "--key", help="owner key file"),
    root: Path = typer.Option(Path("."), "--root", help="project directory (configs/watermark.yaml)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    fail_if_not_owned: bool = typer.Option(False, "--strict", help="exit 1 when the verdict is not 'owned'"),
) -> None:
    """Query MODEL with the key's triggers → verdict, bit error rate and chance p-value."""
    from tinymlops.quantize import read_tflite
    from tinymlops.watermark.key import load_key
    from tinymlops.watermark.verify import verify_tflite

    config = _config(root)
    key = load_key(key_file)
    data = read_tflite(model)
    with err.status(f"querying {model} with {config.triggers} triggers", spinner="dots"):
        report = verify_tflite(data, key, config, str(model))
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        out.print(report.line(), soft_wrap=True, highlight=False)
    if fail_if_not_owned:
        report.raise_if_not_owned()


COMMANDS = [("watermark", app)]
