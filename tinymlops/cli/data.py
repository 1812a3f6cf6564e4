"""`tinymlops data …`: the data half of dvc.yaml."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from tinymlops.cli.common import ParamsOpt, RootOpt, load_params, out, status

data_app = typer.Typer(help="Dataset stages (the data half of dvc.yaml).", no_args_is_help=True)


# -- DVC stages ----------------------------------------------------------------------------------
@data_app.command("ingest")
def data_ingest(root: Path = RootOpt, params_file: Path = ParamsOpt) -> None:
    """Load the configured dataset into data/raw/."""
    from tinymlops.pipeline import data as stages
    from tinymlops.util import layout

    params = load_params(root, params_file)
    with status(f"ingesting {params.data.dataset}"):
        path = stages.ingest(params, root, root / layout.RAW_DIR)
    out.print(f"ingested {params.data.dataset} → {path}")


@data_app.command("validate")
def data_validate(
    root: Path = RootOpt, params_file: Path = ParamsOpt, as_json: bool = typer.Option(False, "--json")
) -> None:
    """Check data/raw/: shapes, dtypes, ranges, labels, class balance (exit 1 on a failed check)."""
    from tinymlops.pipeline import data as stages
    from tinymlops.util import layout

    params = load_params(root, params_file)
    report = stages.validate_raw(params, root / layout.RAW_DIR)
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        table = Table("check", "ok", "detail", title=f"{report.dataset}: {report.n_samples} samples")
        for c in report.checks:
            table.add_row(c.name, "[green]yes[/]" if c.passed else "[red]NO[/]", c.detail)
        out.print(table)
    report.raise_for_failures(str(root / layout.RAW_DIR))


@data_app.command("prepare")
def data_prepare(root: Path = RootOpt, params_file: Path = ParamsOpt) -> None:
    """Validate data/raw/ and split it (seeded, stratified, leak-free) into data/prepared/."""
    from tinymlops.pipeline import data as stages
    from tinymlops.util import layout

    params = load_params(root, params_file)
    with status("validating and splitting"):
        meta = stages.prepare(params, root / layout.RAW_DIR, root / layout.PREPARED_DIR)
    out.print(f"prepared {meta.dataset}: " + ", ".join(f"{k} {v}" for k, v in meta.counts.items()))
