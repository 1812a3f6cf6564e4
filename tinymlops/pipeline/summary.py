"""What one pipeline run produced, and where to look at it: as markdown (the Prefect artifact and
the MLflow run's summary.md) and as lines for an 80-column terminal. Also the rollout's words: its
one-line outcome and the health-gate table, from the engine's reports."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

from pydantic import BaseModel

from tinymlops.fleet.engine import RolloutReport

LABEL_WIDTH = 14  # terminal: label column; 14 + 2 + 64 (a sha256) = 80


class Link(BaseModel):
    text: str
    url: str = ""


class PipelineSummary(BaseModel):
    dataset: str
    data_md5: str
    quantize_mode: str
    accuracy_float: float
    accuracy_int8_tflite: float
    accuracy_int8_tflm: float
    tflm_top1_agreement: float
    tflm_max_abs_diff: int
    size_float_bytes: int
    size_int8_bytes: int
    int8_sha256: str
    train_cache_hit: bool
    mlflow_run_id: str
    mlflow_run_url: str
    mlflow_ui_command: str
    registered_model: str
    model_version: str
    alias: str  # the alias this run moved (candidate)
    prefect_flow_run_id: str
    prefect_ui_command: str
    prefect_run_url: str
    wall_seconds: float
    prefect_flow_run_name: str = ""
    aliases: list[str] = []  # every alias now on model_version (candidate, simulated-ok, production)
    trigger: str = ""
    int8_path: str = ""  # the int8 .tflite this run shipped, on this machine
    bundle_dir: str = ""  # its signed bundles, one per device class
    watermark_payload_id: str = ""
    watermark_ber: float = 0.0
    watermark_p_value: float = 1.0
    watermark_plan: str = ""  # the embedding plan chosen (triggers, mix, attempts, cost), or the refusal
    bundles: int = 0
    hil: dict[str, str] = {}  # profile → passed / excluded (reason) / failed (reason)
    rollout: str = "not run"
    rollout_url: str = ""  # the rollout's page on the fleet dashboard (a fleet server by URL)

    # -- the facts, once ---------------------------------------------------------------------------
    def _rollout_page(self) -> list[tuple[str, list[str | Link]]]:
        """The rollout's page on the fleet dashboard, when it ran on a fleet server."""
        return [("rollout page", [Link(text=self.rollout_url, url=self.rollout_url)])] if self.rollout_url else []

    def _registry(self) -> str:
        if not self.model_version:
            return "not registered (dry run)"
        shown = self.aliases or [self.alias]
        return f"{self.registered_model} v{self.model_version} " + " ".join(f"@{a}" for a in shown)

    def facts(self) -> list[tuple[str, list[str | Link]]]:
        """(label, parts): each part is one line of the cell; a Link becomes a link in markdown."""
        drop = (self.accuracy_int8_tflm - self.accuracy_float) * 100
        ratio = self.size_float_bytes / self.size_int8_bytes if self.size_int8_bytes else math.nan
        flow_run = self.prefect_flow_run_name or self.prefect_flow_run_id
        return [
            ("dataset", [f"{self.dataset}, DVC md5 {self.data_md5}"]),
            ("trained model", ["reused from cache (nothing changed)" if self.train_cache_hit else "trained now"]),
            ("float accuracy", [f"{self.accuracy_float:.4f}"]),
            (
                "int8 accuracy",
                [
                    f"{self.accuracy_int8_tflite:.4f} TFLite, {self.accuracy_int8_tflm:.4f} TFLM "
                    f"({drop:+.2f} pt vs float, {self.quantize_mode})"
                ],
            ),
            (
                "TFLM parity",
                [f"top-1 agreement {self.tflm_top1_agreement:.4f}, max |Δ| {self.tflm_max_abs_diff} int8 steps"],
            ),
            (
                "model size",
                [f"{self.size_float_bytes:,} B float → {self.size_int8_bytes:,} B int8 ({ratio:.2f}×)"],
            ),
            ("int8 sha256", [self.int8_sha256]),
            ("int8 file", [self.int8_path or "—"]),
            (
                "watermark",
                [
                    f"owner payload {self.watermark_payload_id}: BER {self.watermark_ber:.3f}, "
                    f"p = {self.watermark_p_value:.1e}",
                    *([self.watermark_plan] if self.watermark_plan else []),
                ],
            ),
            ("bundles", [f"{self.bundles} signed, one per target device class", self.bundle_dir or "—"]),
            ("HIL", [f"{profile}: {status}" for profile, status in self.hil.items()] or ["not run"]),
            ("rollout", [self.rollout]),
            *self._rollout_page(),
            ("registry", [self._registry()]),
            ("MLflow run", [Link(text=self.mlflow_run_id, url=self.mlflow_run_url)]),
            ("Prefect run", [Link(text=flow_run, url=self.prefect_run_url)]),
            ("started by", [self.trigger or "—"]),
            ("wall time", [f"{self.wall_seconds:.1f} s"]),
        ]

    def looking(self) -> list[tuple[str, str, str]]:
        """(what, command that serves the UI, page to open)."""
        return [
            ("MLflow UI", self.mlflow_ui_command, self.mlflow_run_url),
            ("Prefect UI", self.prefect_ui_command, self.prefect_run_url),
        ]

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) in plain text, one string per fact."""
        return [(label, "; ".join(_plain(p) for p in parts)) for label, parts in self.facts()]

    # -- markdown ----------------------------------------------------------------------------------
    def markdown(self) -> str:
        lines = ["# tinymlops pipeline run", "", "| what | result |", "|---|---|"]
        for label, parts in self.facts():
            lines.append(f"| {md_cell(label)} | {'<br>'.join(_md_part(p) for p in parts)} |")
        lines += ["", "## Where to look", ""]
        for what, command, url in self.looking():
            lines += [f"- **{what}**: run `{command}`, then open <{url}>" if command else f"- **{what}**: <{url}>"]
        return "\n".join(lines) + "\n"

    # -- terminal ----------------------------------------------------------------------------------
    def terminal_lines(self, width: int = 80) -> list[str]:
        """Label column, then the value wrapped between words. A word is never cut: a path or URL
        longer than the room left goes on its own line, whole, to copy; so do the commands."""
        lines = ["tinymlops pipeline run", ""]
        room = max(width - LABEL_WIDTH - 2, 20)
        indent = " " * (LABEL_WIDTH + 2)
        for label, parts in self.facts():
            first = True
            for part in parts:
                for chunk in _wrap(_plain(part), room):
                    if len(chunk) > room:  # one word wider than the value column: on a line of its own
                        lines += [label] if first else []
                        lines.append(f"  {chunk}")
                    else:
                        lines.append(f"{label:<{LABEL_WIDTH}}  {chunk}".rstrip() if first else f"{indent}{chunk}")
                    first = False
        for what, command, url in self.looking():
            lines += ["", f"{what}: run this, then open the page below" if command else f"{what}: open"]
            lines += [f"  {command}", f"  {url}"] if command else [f"  {url}"]
        return lines


def _plain(part: str | Link) -> str:
    """Plain text: a link's words (the terminal lists the addresses under "where to look")."""
    return part.text if isinstance(part, Link) else part


def _md_part(part: str | Link) -> str:
    if isinstance(part, Link):
        return f"[{md_cell(part.text)}]({part.url})" if part.url else md_cell(part.text)
    return md_cell(part)


def md_cell(text: object) -> str:
    """Text safe inside a markdown table cell: a `|` no longer ends the cell, a line break stays
    inside it, and nothing turns into HTML or code."""
    out = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")
    out = out.replace("<", "&lt;").replace(">", "&gt;")
    return "<br>".join(line.strip() for line in out.splitlines()) if "\n" in out else out


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _wrap(text: str, room: int) -> list[str]:
    return textwrap.wrap(text, room, break_long_words=False, break_on_hyphens=False) or [""]


# -- the rollout, in words -------------------------------------------------------------------------
VERDICTS = ("advance", "succeed", "pause", "rollback", "abort")


def judged_group(report: RolloutReport, groups: Sequence[str]) -> str:
    """The group a report's verdict is about. After `advance` the engine's state (and so the
    report) already names the next group; the verdict was on the one before."""
    index = report.group_index - 1 if report.decision == "advance" else report.group_index
    if 0 <= index < len(groups):
        return groups[index]
    return report.group_name or "—"


def significant(value: float | None, digits: int = 3) -> str:
    """A figure rounded to what it means: 3 significant digits, no float noise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value == 0:
        return "0"
    return f"{value:.{digits}g}"


GATE_HEADER = ("step", "group judged", "verdict", "gate", "canary", "control", "value", "limit", "passed")


def gate_rows(reports: Sequence[RolloutReport], groups: Sequence[str]) -> list[dict[str, str]]:
    """The health gates at every verdict of a rollout: which group was judged, canary next to
    control, the compared value and its limit."""
    rows = []
    for step, report in enumerate(reports):
        if report.decision not in VERDICTS or report.health is None or not report.health.judged:
            continue
        for g in report.health.gates:
            cells = (
                str(step),
                judged_group(report, groups),
                report.decision,
                g.gate,
                significant(g.canary),
                significant(g.control),
                significant(g.value),
                significant(g.limit),
                "yes" if g.passed else "NO",
            )
            rows.append(dict(zip(GATE_HEADER, cells, strict=True)))
    return rows


def rollout_line(
    status: str, where: str, reports: Sequence[RolloutReport], groups: Sequence[str], moved: str | None
) -> str:
    """One line: the outcome, where, the groups that passed, where it stopped and why, the alias."""
    passed = [judged_group(r, groups) for r in reports if r.decision in ("advance", "succeed")]
    text = f"{status} on {where}"
    if passed:
        text += f"; passed: {', '.join(dict.fromkeys(passed))}"
    last = next((r for r in reversed(reports) if r.decision in VERDICTS), None)
    if last is not None and last.decision not in ("advance", "succeed"):
        text += f"; stopped at {judged_group(last, groups)}: {last.reason}"
    if moved:
        text += f"; @{moved} moved"
    return text
