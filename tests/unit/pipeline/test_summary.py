"""The run summary as people read it: summary.md rendered as a markdown table (the Prefect
artifact and the MLflow file), and the terminal lines at 80 columns."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from markdown_it import MarkdownIt

from tinymlops.fleet.engine import Counts, RolloutReport
from tinymlops.fleet.gates import GateResult, HealthReport
from tinymlops.pipeline.summary import GATE_HEADER, PipelineSummary, gate_rows, md_table, rollout_line

SHA = "9f2c4b0e1a7d3c5b8e6f0a1b2c3d4e5f60718293a4b5c6d7e8f90123456789ab"
RUN = "0123456789abcdef0123456789abcdef"
FLOW_RUN = "6b7c2f1e-9d3a-4e2b-8c1f-0a9b8c7d6e5f"
GROUPS = ["canary", "early", "half", "all"]


@pytest.fixture
def summary() -> PipelineSummary:
    return PipelineSummary(
        dataset="digits",
        data_md5="3f1d0c2b9a8e7f6d5c4b3a2918273645.dir",
        quantize_mode="ptq",
        accuracy_float=0.9861,
        accuracy_int8_tflite=0.9833,
        accuracy_int8_tflm=0.9833,
        tflm_top1_agreement=1.0,
        tflm_max_abs_diff=0,
        size_float_bytes=92_312,
        size_int8_bytes=27_880,
        int8_sha256=SHA,
        int8_path=f"/home/ada/tinyml/.tinymlops/runs/{FLOW_RUN}/model_int8.tflite",
        bundle_dir=f"/home/ada/tinyml/.tinymlops/runs/{FLOW_RUN}/bundles",
        train_cache_hit=False,
        mlflow_run_id=RUN,
        mlflow_run_url=f"http://127.0.0.1:5000/#/experiments/1/runs/{RUN}",
        mlflow_ui_command="/home/ada/.venv/bin/mlflow ui --backend-store-uri sqlite:////home/ada/mlflow.db --port 5000",
        registered_model="tinymlops-int8",
        model_version="3",
        alias="candidate",
        aliases=["candidate", "simulated-ok"],
        prefect_flow_run_id=FLOW_RUN,
        prefect_flow_run_name="crimson-otter",
        prefect_ui_command="PREFECT_HOME=/home/ada/.tinymlops/prefect /home/ada/.venv/bin/prefect server start",
        prefect_run_url=f"http://127.0.0.1:4200/runs/flow-run/{FLOW_RUN}",
        trigger="cli",
        wall_seconds=312.4,
        watermark_payload_id="0000000100000001",
        watermark_ber=0.0,
        watermark_p_value=1e-60,
        bundles=4,
        hil={
            "nrf52840": "passed",
            "stm32l4r5": "passed",
            "stm32h7a3": "passed",
            "esp32s3": "passed",
            "stm32l072-lora": "excluded (arena)",
        },
        rollout="succeeded on 400 simulated devices; passed: canary, early, half, all; @simulated-ok moved",
    )


def table_rows(markdown: str) -> list[list[str]]:
    """Render with a CommonMark+tables parser, as GitHub/Prefect/MLflow do: rows of cell HTML."""
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    rows: list[list[str]] = []
    for i, tok in enumerate(tokens):
        if tok.type == "tr_open":
            rows.append([])
        elif tok.type == "inline" and i and tokens[i - 1].type in ("th_open", "td_open"):
            rows[-1].append(MarkdownIt("commonmark").renderInline(tok.content).strip())
    return rows


def test_summary_markdown_renders_as_a_two_column_table(summary: PipelineSummary) -> None:
    rows = table_rows(summary.markdown())
    header, body = rows[0], rows[1:]
    assert header == ["what", "result"]  # a header people can read, not an empty row
    assert all(len(row) == 2 for row in body), [r for r in body if len(r) != 2]
    cells = dict((label, value) for label, value in body)
    # the `|` in max |Δ| no longer cuts the cell
    assert cells["TFLM parity"] == "top-1 agreement 1.0000, max |Δ| 0 int8 steps"
    assert cells["int8 sha256"] == SHA
    # links to the runs
    assert cells["MLflow run"] == f'<a href="{summary.mlflow_run_url}">{RUN}</a>'
    assert cells["Prefect run"] == f'<a href="{summary.prefect_run_url}">crimson-otter</a>'
    # where the files are
    assert cells["int8 file"] == summary.int8_path
    assert summary.bundle_dir in cells["bundles"]
    # one HIL profile per line of its cell, not one overflowing line
    assert cells["HIL"].split("<br>") == [f"{k}: {v}" for k, v in summary.hil.items()]
    assert cells["registry"] == "tinymlops-int8 v3 @candidate @simulated-ok"


def test_cells_are_escaped() -> None:
    rows = table_rows(md_table(["a|b", "c"], [["x | y", "line one\nline two"], ["<script>", "`tick`"]]))
    assert rows[0] == ["a|b", "c"]
    assert rows[1] == ["x | y", "line one<br>line two"]
    assert rows[2] == ["&lt;script&gt;", "`tick`"]


def test_terminal_summary_fits_80_columns_and_keeps_every_word_whole(summary: PipelineSummary) -> None:
    lines = summary.terminal_lines(80)
    long = [line for line in lines if len(line) > 80]
    # only one unbreakable word (a path, a URL) or a command to copy whole may run past 80
    commands = {f"  {summary.mlflow_ui_command}", f"  {summary.prefect_ui_command}"}
    assert all(len(line.split()) == 1 or line in commands for line in long), long
    assert f"  {summary.int8_path}" in lines and f"  {summary.prefect_run_url}" in lines
    assert any(line.endswith(SHA) and len(line) <= 80 for line in lines)  # the sha256 on one line, whole
    text = "\n".join(lines)
    assert summary.mlflow_ui_command in text and summary.prefect_ui_command in text  # whole, to copy
    assert "(succeed)" not in text and "waiting for telemetry" not in text
    assert "v3 @candidate @simulated-ok" in text
    for profile, status in summary.hil.items():  # one profile per line
        assert any(line.strip() == f"{profile}: {status}" or line.endswith(f"  {profile}: {status}") for line in lines)
    # a phrase is wrapped between words only: the facts' words come back in order
    words = " ".join(summary.rows()[4][1].split())
    assert words in " ".join(" ".join(lines).split())


def report(decision: str, index: int, gates: list[GateResult], judged: bool = True) -> RolloutReport:
    health = HealthReport(
        judged=judged,
        passed=all(g.passed for g in gates),
        canary_devices=4,
        control_devices=396,
        canary_inferences=640,
        control_inferences=61_440,
        gates=gates,
        reason="all gates passed" if judged else "waiting for telemetry: 0 of 500 inferences on the thinner side",
    )
    return RolloutReport(
        rollout_id="v3",
        at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        status="running" if decision != "succeed" else "succeeded",
        decision=decision,  # type: ignore[arg-type]
        reason=f"group {GROUPS[max(index - (decision == 'advance'), 0)]} passed: success 1.000, {health.reason}",
        group_index=index,
        group_name=GROUPS[index],
        percent=[1, 10, 50, 100][index],
        counts=Counts(assigned=4, confirmed=4),
        success_rate=1.0,
        error_rate=0.0,
        soaked_seconds=700.0,
        health=health,
    )


def test_gate_table_names_the_group_judged_rounds_and_shows_both_sides() -> None:
    latency = GateResult(
        gate="p95_latency_ratio", passed=True, value=1.0007552083333332, limit=1.25, canary=4.4032, control=4.4,
        detail="",
    )  # fmt: skip
    errors = GateResult(
        gate="error_rate_increase", passed=True, value=0.0007552083333332016, limit=0.01, canary=0.00075, control=0.0,
        detail="",
    )  # fmt: skip
    reports = [
        report("wait", 0, [latency, errors]),  # judged but not a verdict: not in the table
        report("advance", 1, [latency, errors]),  # the canary's verdict; the state already names `early`
        report("succeed", 3, [], judged=False),
    ]
    rows = gate_rows(reports, GROUPS)
    assert [r["group judged"] for r in rows] == ["canary", "canary"]
    assert list(rows[0]) == list(GATE_HEADER)
    by_gate = {r["gate"]: r for r in rows}
    assert by_gate["error_rate_increase"]["value"] == "0.000755"
    assert (by_gate["p95_latency_ratio"]["canary"], by_gate["p95_latency_ratio"]["control"]) == ("4.4", "4.4")
    assert by_gate["p95_latency_ratio"]["value"] == "1" and by_gate["p95_latency_ratio"]["limit"] == "1.25"
    assert by_gate["error_rate_increase"]["control"] == "0"


def test_rollout_line_says_what_passed_without_engine_words() -> None:
    ok = [report("advance", i, []) for i in (1, 2, 3)] + [report("succeed", 3, [], judged=False)]
    line = rollout_line("succeeded", "400 simulated devices", ok, GROUPS, "simulated-ok")
    assert line == "succeeded on 400 simulated devices; passed: canary, early, half, all; @simulated-ok moved"
    bad = [report("rollback", 0, [])]
    stopped = rollout_line("rolled_back", "200 simulated devices", bad, GROUPS, None)
    assert stopped.startswith("rolled_back on 200 simulated devices; stopped at canary: ")
