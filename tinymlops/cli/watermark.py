"""`tinymlops watermark …`: owner keys, ownership checks (two tests) and tracing a copy to its instance."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    help="Keyed black-box watermark: owner keys, ownership checks, instance tracing.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)


def _config(root: Path):
    from tinymlops.ml.watermark.config import WatermarkConfig

    # Outside a project (no configs/watermark.yaml) the defaults are the shipped ones.
    if (root / "configs" / WatermarkConfig.FILE).is_file():
        return WatermarkConfig.load_from(root)
    return WatermarkConfig()


def parse_ids(text: str) -> list[int]:
    """'0-99', '3,7,12' or '0-9,20' → ids; a malformed list is a one-line error."""
    from tinymlops.ml.watermark.key import WatermarkError

    ids: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise WatermarkError(f"--ids: '{part}' is not an id or a range like 0-99") from None
        if first > last or last - first >= 100_000:
            raise WatermarkError(f"--ids: range '{part}' is empty or too long")
        ids.extend(range(first, last + 1))
    if not ids:
        raise WatermarkError("--ids: no instance ids given")
    return ids


def _probes(path: Path | None, root: Path):
    """Real inputs for the runner-up profiles: an .npz with x, or a prepared-data directory (every
    split in it: the more of the owner's inputs, the stronger the profile tests). Default: the
    project's data/prepared when present, else none (the profile tests are then skipped)."""
    import numpy as np

    from tinymlops.ml.watermark.key import WatermarkError

    if path is None:
        path = root / "data" / "prepared"
        if not path.is_dir():
            return None
    if path.is_dir():
        files = [path / f"{name}.npz" for name in ("train", "val", "test") if (path / f"{name}.npz").is_file()]
        if not files:
            raise WatermarkError(f"{path}: no train/val/test .npz files to probe with")
    elif path.is_file():
        files = [path]
    else:
        raise WatermarkError(f"{path}: probe file not found")
    arrays = []
    for file in files:
        with np.load(file, allow_pickle=False) as data:
            if "x" not in data:
                raise WatermarkError(f"{file}: no 'x' array of inputs")
            arrays.append(data["x"].astype(np.float32))
    return np.concatenate(arrays)


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
    from tinymlops.ml.watermark.key import generate_key, write_key

    key = generate_key(owner_id, serial)
    write_key(key, out_file, overwrite=force)
    out.print(f"wrote owner key {out_file} (mode 0600), payload id {key.payload_id}", soft_wrap=True, highlight=False)


@app.command()
def verify(
    model: Path = typer.Argument(..., help=".tflite file (float or int8)"),
    key_file: Path = typer.Option(..., "--key", help="owner key file"),
    probes: Path | None = typer.Option(
        None,
        "--probes",
        help="real inputs for test 2 (runner-up profile): .npz with x, or a prepared-data dir "
        "(default: data/prepared under --root when present)",
    ),
    fingerprint_file: Path | None = typer.Option(
        None, "--fingerprint", help="sealed conferrable-example fingerprint, reported alongside"
    ),
    root: Path = typer.Option(Path("."), "--root", help="project directory (configs/watermark.yaml)"),
    triggers: int | None = typer.Option(
        None,
        "--triggers",
        help="the trigger prefix a small-data plan marked (MLflow param watermark.plan.triggers; default: all)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    fail_if_not_owned: bool = typer.Option(False, "--strict", help="exit 1 when the verdict is not 'owned'"),
) -> None:
    """Query MODEL with the key's triggers (test 1) and probes (test 2) → each test's p-value, the verdict."""
    from tinymlops.ml.quantize import read_tflite
    from tinymlops.ml.watermark.config import PAYLOAD_BITS
    from tinymlops.ml.watermark.fingerprint import unseal
    from tinymlops.ml.watermark.key import WatermarkError, load_key
    from tinymlops.ml.watermark.ownership import verify_ownership
    from tinymlops.ml.watermark.verify import tflite_predict

    config = _config(root)
    if triggers is not None:
        if not PAYLOAD_BITS <= triggers <= config.triggers:
            raise WatermarkError(f"--triggers must be in {PAYLOAD_BITS}..{config.triggers}, got {triggers}")
        config = config.with_plan(triggers)
    key = load_key(key_file)
    data = read_tflite(model)
    fp = None
    if fingerprint_file is not None:
        if not fingerprint_file.is_file():
            raise WatermarkError(f"{fingerprint_file}: fingerprint file not found")
        fp = unseal(fingerprint_file.read_bytes(), key, str(fingerprint_file))
    with err.status(f"querying {model}", spinner="dots"):
        predict, shape, n_classes = tflite_predict(data, str(model))
        report = verify_ownership(predict, key, config, shape, n_classes, _probes(probes, root), fp, str(model))
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        for line in report.lines():
            out.print(line, soft_wrap=True, highlight=False)
    if fail_if_not_owned and not report.owned:
        raise WatermarkError(f"{model}: not owned by {key.payload_id} (combined p-value {report.p_value:.3g})")


@app.command()
def trace(
    model: Path = typer.Argument(..., help=".tflite file (float or int8), possibly an attacked copy"),
    key_file: Path = typer.Option(..., "--key", help="owner key file"),
    ids: str | None = typer.Option(
        None, "--ids", help="candidate instance ids, e.g. 0-99 or 3,7 (default: watermark.yaml instances, else 0-99)"
    ),
    probes: Path | None = typer.Option(
        None,
        "--probes",
        help="real inputs for the profile test: .npz with x, or a prepared-data dir "
        "(default: data/prepared/test.npz under --root when present)",
    ),
    root: Path = typer.Option(Path("."), "--root", help="project directory (configs/watermark.yaml)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Which instance is MODEL? → the instance id with its family-wise p-value, or 'none'."""
    from tinymlops.ml.quantize import read_tflite
    from tinymlops.ml.watermark.instances import trace as trace_instances
    from tinymlops.ml.watermark.key import load_key
    from tinymlops.ml.watermark.verify import tflite_predict

    config = _config(root)
    key = load_key(key_file)
    candidates = parse_ids(ids) if ids else (list(config.instances) or list(range(100)))
    x = _probes(probes, root)
    data = read_tflite(model)
    predict, shape, n_classes = tflite_predict(data, str(model))
    report = trace_instances(predict, key, candidates, shape, n_classes, config.instance, x, str(model))
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        out.print(report.line(), soft_wrap=True, highlight=False)


@app.command()
def fingerprint(
    model_dir: Path = typer.Argument(..., help="Keras model directory of the watermarked base (model.keras)"),
    key_file: Path = typer.Option(..., "--key", help="owner key file (seals the fingerprint)"),
    data: Path = typer.Option(Path("data/prepared"), "--data", help="prepared data (train.npz) to search from"),
    out_file: Path = typer.Option(..., "--out", help="sealed fingerprint file to write"),
    seed: int = typer.Option(0, "--seed"),
    root: Path = typer.Option(Path("."), "--root", help="project directory (configs/watermark.yaml)"),
) -> None:
    """Build the conferrable-example fingerprint of MODEL_DIR (Lukas et al.), sealed under the owner key."""
    from tinymlops.ml.data.split import load_split
    from tinymlops.ml.model.train import load
    from tinymlops.ml.watermark.fingerprint import generate, seal
    from tinymlops.ml.watermark.key import load_key
    from tinymlops.util.io import write_bytes

    config = _config(root)
    key = load_key(key_file)
    with err.status("training surrogates and references, searching conferrable examples", spinner="dots"):
        fp, report = generate(load(model_dir), load_split(data, "train"), config.fingerprint, seed)
    write_bytes(out_file, seal(fp, key))
    out.print(
        f"wrote {out_file}: {report.size} conferrable examples, independent models agree with "
        f"{report.null_rate:.3f} of them on average (sealed under payload {key.payload_id})",
        soft_wrap=True,
        highlight=False,
    )
