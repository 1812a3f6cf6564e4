"""`tinymlops …`: the pipeline, its DVC stages, keys, bundles, devices, the fleet, from a terminal.

User errors print one line and exit 1; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

import typer

from tinymlops.cli.common import console, state
from tinymlops.errors import TinyMLOpsError

app = typer.Typer(help="TinyML MLOps: versioned data → int8 model on TFLite Micro → fleet.", no_args_is_help=True)


@app.callback()
def _main(
    debug: bool = typer.Option(
        False, "--debug", help="show tracebacks instead of one-line errors (anywhere on the line)"
    ),
) -> None:
    state["debug"] = debug


def _register() -> None:
    """Every command group, named here: `--help` lists them in this order. Group modules keep
    heavy imports (TensorFlow, servers, Prefect) inside their commands."""
    from tinymlops.cli import bundle, data, device, export, fleet, pipeline, rollout, serve, watermark, webhook

    commands: list[tuple[str, Callable[..., Any]]] = [
        ("run", pipeline.run),
        ("train", pipeline.train),
        ("protect", pipeline.protect),
        ("quantize", pipeline.quantize),
        ("evaluate", pipeline.evaluate),
        ("hil", device.hil_command),
        ("export", export.export),
        ("serve", serve.serve),
        ("deploy", serve.deploy),
    ]
    groups = [
        ("data", data.data_app),
        ("keys", bundle.keys_app),
        ("bundle", bundle.bundle_app),
        ("device", device.device_app),
        ("fleet", fleet.app),
        ("rollout", rollout.app),
        ("watermark", watermark.app),
        ("webhook", webhook.app),
    ]
    for name, command in commands:
        app.command(name, help=reflow(inspect.getdoc(command)))(command)
    for name, group in groups:
        for info in group.registered_commands:
            info.help = reflow(info.help or inspect.getdoc(info.callback))
        app.add_typer(group, name=name)


def reflow(doc: str | None) -> str | None:
    """Docstring paragraphs as single lines, so `--help` wraps them to the terminal instead of
    keeping the source's line breaks mid-sentence. Blank lines still separate paragraphs; list
    items (lines starting with '- ') keep their own lines."""
    if not doc:
        return doc
    paragraphs = []
    for block in inspect.cleandoc(doc).split("\n\n"):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if any(line.startswith("- ") for line in lines):
            paragraphs.append("\n".join(lines))
        else:
            paragraphs.append(" ".join(lines))
    return "\n\n".join(paragraphs)


_register()


def _debug_anywhere(argv: list[str]) -> list[str]:
    """`--debug` is the root's option; accept it after the command too (`tinymlops run --debug`)."""
    if "--debug" in argv[1:] and "--" not in argv[: argv.index("--debug")]:
        return [argv[0], "--debug", *(a for a in argv[1:] if a != "--debug")]
    return argv


def main() -> None:
    sys.argv = _debug_anywhere(sys.argv)
    try:
        app()  # click/typer handle usage errors and --help themselves (exit 2 / 0)
    except TinyMLOpsError as exc:
        if state["debug"]:
            raise
        # soft_wrap: one line however narrow the terminal or log; markup off: paths are not markup
        console.print(f"error: {exc}", soft_wrap=True, markup=False, highlight=False)
        sys.exit(1)
