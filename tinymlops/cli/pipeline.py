"""`tinymlops run`, and the model stages of dvc.yaml: train, quantize, evaluate."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from tinymlops.cli.common import ParamsOpt, RootOpt, console, epochs_progress, load_params, out, state, status
from tinymlops.errors import TinyMLOpsError
from tinymlops.util.interrupt import interrupted, sigint_latch


class Quantization(str, Enum):
    ptq = "ptq"
    qat = "qat"


class Dataset(str, Enum):  # the dataset registry's names (a test keeps them equal)
    digits = "digits"
    npz = "npz"
    wav = "wav"
    csv = "csv"


def _rollout_devices(value: int) -> int:
    if 0 < value < 10:
        raise typer.BadParameter("0 (stop at the candidate) or at least 10")
    return value


def run(
    root: Path = RootOpt,
    params_file: Path = ParamsOpt,
    dataset: Dataset | None = typer.Option(None, help="dataset", show_default="params.yaml data.dataset"),
    epochs: int | None = typer.Option(None, min=1, help="training epochs", show_default="params.yaml train.epochs"),
    quantization: Quantization | None = typer.Option(
        None, help="int8 method", show_default="params.yaml quantize.mode"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="record everything, move no alias, roll out nothing"),
    rollout_devices: int = typer.Option(
        400, min=0, callback=_rollout_devices, help="simulated fleet for the staged rollout; 0: stop at the candidate"
    ),
    fleet_url: str | None = typer.Option(
        None, help="roll out on this fleet server", show_default="$TINYMLOPS_FLEET_URL, else a simulated fleet"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks instead of one-line errors"),
) -> None:
    """Run the whole pipeline flow (Prefect) and print what it made and where to look.

    Options left out come from params.yaml. Ctrl-C stops the run: it ends Crashed in Prefect and
    KILLED in MLflow.
    """
    from tinymlops.settings import Environment, use_local_prefect

    state["debug"] = state["debug"] or debug
    env = Environment.from_env(root)
    load_params(env.root, params_file)  # a typo in params.yaml fails here, before Prefect starts
    use_local_prefect(env.prefect_home)  # keep Prefect's database with the rest of the local state
    from prefect import tags

    from flows.pipeline import pipeline  # the CLI is the outermost layer: it may start flows
    from tasks.context import project

    if not state["debug"]:
        _quiet_user_errors_on_console()
    stopped = False
    with sigint_latch(), _prefect_server() as ephemeral, project(env.root, params_file, ephemeral_prefect=ephemeral):
        try:
            with tags("origin:cli"):
                options = {"dataset": dataset, "epochs": epochs, "quantization": quantization}
                asked: dict[str, Any] = {k: getattr(v, "value", v) for k, v in options.items() if v is not None}
                summary = pipeline(
                    **asked,  # the options given; the others come from params.yaml
                    dry_run=dry_run,
                    rollout_devices=rollout_devices,
                    fleet_url=fleet_url or "",
                    trigger="cli",
                )
        except BaseException:  # Ctrl-C, even one a library turned into its own error: the flow recorded
            if not interrupted():  # it (Crashed, KILLED); the server stops next
                raise
            stopped = True
    if stopped:
        console.print("interrupted: the run ends Crashed in Prefect and KILLED in MLflow", soft_wrap=True)
        _exit_now(130)
    if as_json:
        out.print_json(summary.model_dump_json())
        return
    for line in summary.terminal_lines(max(out.width, 80)):
        out.print(line, soft_wrap=True, highlight=False, markup=False)  # whole words: copy-pasteable


def _exit_now(code: int) -> None:
    """Leave without the interpreter's finalisation: after Ctrl-C everything is recorded, and
    tearing down TensorFlow's objects one by one takes tens of seconds."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _DetachedPrefectServer:
    """Prefect's own temporary server, started in its own session: Ctrl-C in the terminal reaches
    this process group only, so the server outlives the flow long enough to record how it ended."""

    @staticmethod
    def start() -> Any:
        import subprocess

        from prefect.server.api.server import SubprocessASGIServer

        class Server(SubprocessASGIServer):
            def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
                # Prefect builds the command; only this one Popen call gets start_new_session.
                popen = subprocess.Popen
                setattr(subprocess, "Popen", functools.partial(popen, start_new_session=True))  # noqa: B010
                try:
                    return super()._run_uvicorn_command()
                finally:
                    setattr(subprocess, "Popen", popen)  # noqa: B010

        server = Server()
        server.start()
        return server


@contextmanager
def _prefect_server() -> Iterator[bool]:
    """→ True while the CLI's own short-lived Prefect server serves the run; False when the user
    points Prefect at a server (PREFECT_API_URL)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield False
        return
    server = _DetachedPrefectServer.start()
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield True
            finally:  # the run's last logs and events reach the server before it stops, not retried after
                from prefect.events.worker import EventsWorker
                from prefect.logging.handlers import APILogWorker

                wait = 1.0 if interrupted() else 5.0  # after Ctrl-C the user waits: the crash report goes first
                APILogWorker.drain_all(timeout=wait)
                EventsWorker.drain_all(timeout=wait)
    finally:
        server.stop()


def train(
    root: Path = RootOpt,
    params_file: Path = ParamsOpt,
    plots: Path | None = typer.Option(None, help="also write the per-epoch curves here, as CSV (dvc plots)"),
) -> None:
    """Train the float model on data/prepared/ into models/keras/."""
    from tinymlops.pipeline import stages

    params = load_params(root, params_file)
    with epochs_progress(f"training {params.model.architecture}") as on_epoch:
        result = stages.train(params, root / stages.PREPARED_DIR, root / stages.MODEL_DIR, on_epoch, root=root)
    if plots is not None:
        keys = sorted(result.history)
        rows = [["epoch", *keys]]
        rows += [[str(i + 1), *(f"{result.history[k][i]:.6g}" for k in keys)] for i in range(result.epochs_run)]
        _write_csv(plots, rows)
    out.print(f"trained {result.architecture}: {result.epochs_run} epochs, best val accuracy {result.val_accuracy:.4f}")


def protect(
    root: Path = RootOpt,
    params_file: Path = ParamsOpt,
    model_dir: Path = typer.Option(Path("models/keras"), "--model", help="trained Keras model directory"),
    output: Path = typer.Option(Path("models/watermarked"), "--out", help="where the watermarked model goes"),
) -> None:
    """Embed the owner's watermark (the key in $TINYMLOPS_HOME, never in git) into the trained model.

    The same function the flow runs, so `dvc repro` ships the bytes the flow ships.
    """
    from tinymlops.ml.watermark import WatermarkConfig
    from tinymlops.pipeline import protect as stage
    from tinymlops.pipeline import stages
    from tinymlops.settings import Environment
    from tinymlops.util.io import atomic_dir

    params = load_params(root, params_file)
    env, config = Environment.from_env(root), WatermarkConfig.load_from(root)
    key, created = stage.owner_key(env.home, config)
    if created:
        console.print(f"created a development owner key in {config.key_path(env.home)}", soft_wrap=True)
    with epochs_progress("embedding the watermark") as on_epoch, atomic_dir(root / output) as tmp:
        stage.embed_watermark(params, root / stages.PREPARED_DIR, root / model_dir, tmp, key, config, on_epoch)
    refused = stage.refusal(root / output)
    if refused is not None:  # on_refusal: ship_unmarked — loud, never silent
        console.print(f"[bold red]WARNING: {output} is UNMARKED[/]: {refused}", soft_wrap=True)
        return
    plan = stage.read_plan(root / output) or {}
    out.print(
        f"watermarked {model_dir} → {output} (owner payload {key.payload_id}; {plan.get('reason', '')})",
        highlight=False,
    )


def quantize(
    root: Path = RootOpt,
    params_file: Path = ParamsOpt,
    model_dir: Path = typer.Option(Path("models/keras"), "--model", help="Keras model directory to quantize"),
) -> None:
    """Convert a Keras model to float and full-integer int8 .tflite in models/tflite/."""
    from tinymlops.pipeline import stages

    params = load_params(root, params_file)
    args = (params, root / stages.PREPARED_DIR, root / model_dir, root / stages.TFLITE_DIR)
    if params.quantize.mode == "qat":  # epochs to follow
        with epochs_progress("quantization-aware training") as on_epoch:
            report = stages.quantize(*args, on_epoch)
    else:  # post-training: one step, no epochs; a spinner, not a bar stuck at 0/?
        with status("post-training quantization (calibrating on the representative set)"):
            report = stages.quantize(*args)
    i8 = report.int8_model
    out.print(
        f"float {report.float_model.size_bytes:,} B → int8 {i8.size_bytes:,} B; ops {', '.join(i8.ops)}; "
        f"input scale {i8.inputs[0].scale:.6g} zero point {i8.inputs[0].zero_point}"
    )


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    from tinymlops.util.io import write_bytes

    write_bytes(path, ("\n".join(",".join(r) for r in rows) + "\n").encode())


def evaluate(
    model: Path = typer.Argument(..., help="int8 .tflite file"),
    root: Path = RootOpt,
    params_file: Path = ParamsOpt,
    keras_model: Path | None = typer.Option(None, help="float Keras model dir, for the float baseline"),
    report_dir: Path | None = typer.Option(None, help="write evaluation.json, metrics.json and PNG here"),
    plots: Path | None = typer.Option(None, help="also write (actual, predicted) per test sample here, as CSV"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Accuracy of an int8 model in TFLite and in TFLite Micro on the test split, and their parity."""
    import tempfile

    from tinymlops.pipeline import stages

    params = load_params(root, params_file)
    with status(f"evaluating {model} on TFLite and TFLite Micro"), tempfile.TemporaryDirectory() as scratch:
        report = stages.evaluate(params, root / stages.PREPARED_DIR, model, report_dir or Path(scratch), keras_model)
    if plots is not None:  # dvc's confusion template counts rows
        rows = [["actual", "predicted"]]
        for actual, counts in enumerate(report.confusion_int8):
            rows += [[str(actual), str(predicted)] for predicted, n in enumerate(counts) for _ in range(n)]
        _write_csv(plots, rows)
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
    """On the console, a user error inside a flow is its one-line message, not a traceback, and
    Ctrl-C is the CLI's one line, not every task's and the flow's crash report."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and (isinstance(record.exc_info[1], KeyboardInterrupt) or interrupted()):
            return False
        if interrupted() and record.levelno >= logging.WARNING:  # what the interrupt broke on its way out
            return False
        if "KeyboardInterrupt" in record.getMessage() or "interrupt signal" in record.getMessage():
            return False
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
