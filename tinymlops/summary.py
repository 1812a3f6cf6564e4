"""What one pipeline run produced, and where to look at it."""

from __future__ import annotations

from pydantic import BaseModel


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
    alias: str
    prefect_flow_run_id: str
    prefect_ui_command: str
    prefect_run_url: str
    wall_seconds: float
    watermark_payload_id: str = ""
    watermark_ber: float = 0.0
    watermark_p_value: float = 1.0
    bundles: int = 0
    hil: dict[str, str] = {}  # profile → passed / excluded (reason) / failed (reason)
    rollout: str = "not run"

    def rows(self) -> list[tuple[str, str]]:
        drop = (self.accuracy_float - self.accuracy_int8_tflm) * 100
        return [
            ("dataset version (DVC md5)", f"{self.dataset} {self.data_md5}"),
            ("trained model", "reused from cache (nothing changed)" if self.train_cache_hit else "trained now"),
            ("float accuracy", f"{self.accuracy_float:.4f}"),
            (
                "int8 accuracy (TFLite / TFLM)",
                f"{self.accuracy_int8_tflite:.4f} / {self.accuracy_int8_tflm:.4f}"
                f"  ({drop:+.2f} pt vs float, {self.quantize_mode})",
            ),
            (
                "TFLM parity vs TFLite",
                f"top-1 agreement {self.tflm_top1_agreement:.4f}, max |Δ| {self.tflm_max_abs_diff} int8 steps",
            ),
            (
                "model size (float → int8)",
                f"{self.size_float_bytes:,} B → {self.size_int8_bytes:,} B "
                f"({self.size_float_bytes / self.size_int8_bytes:.2f}×)",
            ),
            ("int8 sha256", self.int8_sha256),
            (
                "watermark",
                f"owner payload {self.watermark_payload_id}: BER {self.watermark_ber:.3f}, "
                f"p = {self.watermark_p_value:.1e}",
            ),
            ("signed bundles", f"{self.bundles} (one per target device class)"),
            ("hardware-in-the-loop", ", ".join(f"{k} {v}" for k, v in self.hil.items())),
            ("staged rollout", self.rollout),
            ("MLflow run", self.mlflow_run_id),
            (
                "registered model",
                f"{self.registered_model} v{self.model_version} @{self.alias}"
                if self.model_version
                else "not registered (dry run)",
            ),
            ("Prefect flow run", self.prefect_flow_run_id),
            ("wall time", f"{self.wall_seconds:.1f} s"),
        ]

    def looking(self) -> list[tuple[str, str]]:
        return [
            ("MLflow UI", f"{self.mlflow_ui_command}   then open {self.mlflow_run_url}"),
            ("Prefect UI", f"{self.prefect_ui_command}   then open {self.prefect_run_url}"),
        ]

    def markdown(self) -> str:
        lines = ["# tinymlops pipeline run", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.rows()]
        lines += ["", "## Where to look", ""] + [f"- **{k}**: `{v}`" for k, v in self.looking()]
        return "\n".join(lines) + "\n"
