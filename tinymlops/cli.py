"""`tinymlops …`: the pipeline, its DVC stages and evaluation, from a terminal.

User errors print one line and exit 1; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tinymlops.errors import TinyMLOpsError

app = typer.Typer(help="TinyML MLOps: versioned data → int8 model on TFLite Micro → fleet.", no_args_is_help=True)
data_app = typer.Typer(help="Dataset stages (the data half of dvc.yaml).", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True)
out = Console()
_state = {"debug": False}

RootOpt = typer.Option(Path("."), "--root", help="project directory (params.yaml, configs/, dvc.yaml)")
ParamsOpt = typer.Option(Path("params.yaml"), "--params", help="parameters file, relative to --root")


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="show tracebacks instead of one-line errors")) -> None:
    _state["debug"] = debug


def _params(root: Path, params_file: Path):
    from tinymlops.settings import load_params

    return load_params(root / params_file)


@contextmanager
def _epochs(description: str) -> Iterator:
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


def _status(message: str):
    return console.status(message, spinner="dots")


# -- the pipeline --------------------------------------------------------------------------------
@app.command()
def run(
    root: Path = RootOpt,
    params_file: Path = ParamsOpt,
    epochs: int | None = typer.Option(None, help="override train.epochs"),
    quantization: str | None = typer.Option(None, help="override quantize.mode: ptq or qat"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Run the whole pipeline flow (Prefect) and print what it produced and where to look."""
    from tinymlops.settings import Environment

    env = Environment.from_env(root)
    _params(env.root, params_file)  # a typo in params.yaml fails here, before Prefect starts
    # Keep Prefect's local database with the rest of the local state, unless told otherwise.
    # Prefect does not create missing parents of its home, and its first database migration can
    # take longer than the default ephemeral start-up wait on a small machine.
    os.environ.setdefault("PREFECT_HOME", str(env.prefect_home))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    # Telemetry cannot reach anyone from a closed network and races the first migration for SQLite.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.pipeline import pipeline  # the CLI is the outermost layer: it may start flows
    from tasks.context import PipelineRun

    if not _state["debug"]:
        _quiet_user_errors_on_console()

    try:
        parameters = PipelineRun(
            root=str(env.root), params_file=str(params_file), epochs=epochs, quantization_mode=quantization
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc).splitlines()[-1]) from None
    summary = pipeline(parameters)
    if as_json:
        out.print_json(summary.model_dump_json())
        return
    table = Table(title="tinymlops pipeline run", show_header=False, title_justify="left")
    for key, value in summary.rows():
        table.add_row(key, value)
    out.print(table)
    for key, value in summary.looking():
        out.print(f"[bold]{key}[/]: {value}", soft_wrap=True, highlight=False)  # copy-pasteable


# -- DVC stages ----------------------------------------------------------------------------------
@data_app.command("ingest")
def data_ingest(root: Path = RootOpt, params_file: Path = ParamsOpt) -> None:
    """Load the configured dataset into data/raw/."""
    from tinymlops import stages

    params = _params(root, params_file)
    with _status(f"ingesting {params.data.dataset}"):
        path = stages.ingest(params, root, root / stages.RAW_DIR)
    out.print(f"ingested {params.data.dataset} → {path}")


@data_app.command("validate")
def data_validate(
    root: Path = RootOpt, params_file: Path = ParamsOpt, as_json: bool = typer.Option(False, "--json")
) -> None:
    """Check data/raw/: shapes, dtypes, ranges, labels, class balance (exit 1 on a failed check)."""
    from tinymlops import stages

    params = _params(root, params_file)
    report = stages.validate_raw(params, root / stages.RAW_DIR)
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        table = Table("check", "ok", "detail", title=f"{report.dataset}: {report.n_samples} samples")
        for c in report.checks:
            table.add_row(c.name, "[green]yes[/]" if c.passed else "[red]NO[/]", c.detail)
        out.print(table)
    report.raise_for_failures(str(root / stages.RAW_DIR))


@data_app.command("prepare")
def data_prepare(root: Path = RootOpt, params_file: Path = ParamsOpt) -> None:
    """Validate data/raw/ and split it (seeded, stratified, leak-free) into data/prepared/."""
    from tinymlops import stages

    params = _params(root, params_file)
    with _status("validating and splitting"):
        meta = stages.prepare(params, root / stages.RAW_DIR, root / stages.PREPARED_DIR)
    out.print(f"prepared {meta.dataset}: " + ", ".join(f"{k} {v}" for k, v in meta.counts.items()))


@app.command()
def train(root: Path = RootOpt, params_file: Path = ParamsOpt) -> None:
    """Train the float model on data/prepared/ into models/keras/."""
    from tinymlops import stages

    params = _params(root, params_file)
    with _epochs(f"training {params.model.architecture}") as on_epoch:
        result = stages.train(params, root / stages.PREPARED_DIR, root / stages.MODEL_DIR, on_epoch)
    out.print(f"trained {result.architecture}: {result.epochs_run} epochs, best val accuracy {result.val_accuracy:.4f}")


@app.command()
def quantize(root: Path = RootOpt, params_file: Path = ParamsOpt) -> None:
    """Convert models/keras/ to float and full-integer int8 .tflite in models/tflite/."""
    from tinymlops import stages

    params = _params(root, params_file)
    with _epochs(f"quantizing ({params.quantize.mode})") as on_epoch:
        report = stages.quantize(
            params, root / stages.PREPARED_DIR, root / stages.MODEL_DIR, root / stages.TFLITE_DIR, on_epoch
        )
    i8 = report.int8_model
    out.print(
        f"float {report.float_model.size_bytes:,} B → int8 {i8.size_bytes:,} B; ops {', '.join(i8.ops)}; "
        f"input scale {i8.inputs[0].scale:.6g} zero point {i8.inputs[0].zero_point}"
    )


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="int8 .tflite file"),
    root: Path = RootOpt,
    params_file: Path = ParamsOpt,
    keras_model: Path | None = typer.Option(None, help="float Keras model dir, for the float baseline"),
    report_dir: Path | None = typer.Option(None, help="write evaluation.json, metrics.json and PNG here"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Accuracy of an int8 model in TFLite and in TFLite Micro on the test split, and their parity."""
    import tempfile

    from tinymlops import stages

    params = _params(root, params_file)
    with _status(f"evaluating {model} on TFLite and TFLite Micro"), tempfile.TemporaryDirectory() as scratch:
        report = stages.evaluate(params, root / stages.PREPARED_DIR, model, report_dir or Path(scratch), keras_model)
    if as_json:
        out.print_json(report.model_dump_json(exclude={"confusion_int8"}))
        return
    float_acc = "n/a" if report.accuracy_float is None else f"{report.accuracy_float:.4f}"
    out.print(
        f"test samples {report.n_test}: float {float_acc}, int8 TFLite {report.accuracy_int8_tflite:.4f}, "
        f"int8 TFLM {report.accuracy_int8_tflm:.4f}; TFLM vs TFLite top-1 agreement "
        f"{report.tflite_vs_tflm.top1_agreement:.4f}, max |Δ| {report.tflite_vs_tflm.max_abs_diff}"
    )


class _NoUserErrorTracebacks(logging.Filter):
    """On the console, a user error inside a flow is its one-line message, not a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TinyMLOpsError):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_user_errors_on_console() -> None:
    loggers = [logging.getLogger()] + [
        logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict) if name.startswith("prefect")
    ]
    for logger in loggers:
        for handler in logger.handlers:
            # console handlers only: the Prefect API handler keeps the traceback for the UI
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.addFilter(_NoUserErrorTracebacks())


def _register_areas() -> None:
    """Each area (keys, bundle, watermark, device, fleet, webhook, …) lives in its own
    tinymlops/cli_<area>.py exposing COMMANDS = [(name, typer.Typer or a command function)];
    they are mounted here. Area modules keep heavy imports (TensorFlow, servers) inside commands."""
    import importlib
    import pkgutil

    import tinymlops

    for module in sorted(m.name for m in pkgutil.iter_modules(tinymlops.__path__) if m.name.startswith("cli_")):
        for name, sub in importlib.import_module(f"tinymlops.{module}").COMMANDS:
            if isinstance(sub, typer.Typer):
                app.add_typer(sub, name=name)
            else:
                app.command(name)(sub)


_register_areas()


def main() -> None:
    try:
        app()  # click/typer handle usage errors and --help themselves (exit 2 / 0)
    except TinyMLOpsError as exc:
        if _state["debug"]:
            raise
        # soft_wrap: one line however narrow the terminal or log; markup off: paths are not markup
        console.print(f"error: {exc}", soft_wrap=True, markup=False, highlight=False)
        sys.exit(1)
