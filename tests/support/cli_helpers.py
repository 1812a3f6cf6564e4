"""Run the CLI in-process exactly as the console script does (tests import this directly)."""

from __future__ import annotations

import sys

import pytest

from tinymlops import cli
from tinymlops.cli import common as _common  # noqa: F401  (cli.common.state)


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """`tinymlops ARGS` → (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["tinymlops", *map(str, args)])
    monkeypatch.setitem(cli.common.state, "debug", False)
    capsys.readouterr()  # drop anything printed before
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
