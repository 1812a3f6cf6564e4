"""What every command group shares: consoles, the --root/--params options, progress displays."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)
out = Console()
# set by the root callback: --debug shows tracebacks instead of one-line errors
state = {"debug": False}

RootOpt = typer.Option(Path("."), "--root", help="project directory (params.yaml, configs/, dvc.yaml)")
ParamsOpt = typer.Option(Path("params.yaml"), "--params", help="parameters file, relative to --root")


def load_params(root: Path, params_file: Path):
    from tinymlops.settings import load_params

    return load_params(root / params_file)


@contextmanager
def epochs_progress(description: str) -> Iterator:
    """A rich progress bar fed by the library's per-epoch callback."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[logs]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=None, logs="")

        def on_epoch(epoch: int, total: int, logs: dict[str, float]) -> None:
            shown = " ".join(f"{k}={v:.3f}" for k, v in logs.items() if k in ("loss", "val_accuracy"))
            progress.update(task, completed=epoch, total=total, logs=shown)

        yield on_epoch


def status(message: str):
    return console.status(message, spinner="dots")


# -- the pipeline --------------------------------------------------------------------------------
