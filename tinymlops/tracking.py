"""MLflow conventions: every metric, tag and artifact path is named here once, and this is the
only module that calls MLflow. Runs are addressed by id (no thread-local "active run"), so tasks
in any thread or process log to the same parent run.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from tinymlops import stages
from tinymlops.data.split import META_FILE, REPORT_FILE, PreparedMeta, Split
from tinymlops.data.validate import ValidationReport
from tinymlops.evaluate import EvaluationReport
from tinymlops.lineage import GitState
from tinymlops.model.train import MODEL_FILE, TrainResult
from tinymlops.settings import Environment, PipelineParams, TrackingConfig


class Tag:
    GIT_SHA = "git.sha"
    GIT_DIRTY = "git.dirty"
    DATA_MD5 = "dvc.data_md5"
    DATASET = "data.dataset"
    FLOW_RUN_ID = "prefect.flow_run_id"
    FLOW_NAME = "prefect.flow_name"
    TRAIN_CACHE_HIT = "cache.train_hit"
    QUANT_MODE = "quantize.mode"
    TRIGGER = "trigger"
    GIT_REF = "trigger.git_ref"  # what a webhook reported; git.sha is the checkout that ran
    TRIGGER_SHA = "trigger.git_sha"
    REPOSITORY = "trigger.repository"
    DRY_RUN = "dry_run"
    WATERMARK_PAYLOAD = "watermark.payload_id"  # public id of owner + serial; never the key
    WATERMARK_OWNED = "watermark.owned"
    BUNDLE_SHA256 = "bundle.sha256."  # + device class
    SIGNING_KEY_ID = "bundle.signing_kid"
    HIL_PROFILE = "hil.profile"
    HIL_STATUS = "hil.status"
    PARENT_RUN = "mlflow.parentRunId"  # MLflow's own tag for nested runs
    ROLLOUT_STATUS = "rollout.status"
    ROLLOUT_DECISION = "rollout.decision"
    ROLLOUT_EXCLUDED = "rollout.excluded_classes"
    ROLLOUT_PROMOTED = "rollout.promoted"


class Metric:
    ACCURACY_FLOAT = "accuracy_float"
    ACCURACY_INT8_TFLITE = "accuracy_int8_tflite"
    ACCURACY_INT8_TFLM = "accuracy_int8_tflm"
    ACCURACY_DROP = "accuracy_drop"
    TFLM_TOP1_AGREEMENT = "tflm_top1_agreement"
    TFLM_MAX_ABS_DIFF = "tflm_max_abs_diff"
    SIZE_FLOAT = "size_float_bytes"
    SIZE_INT8 = "size_int8_bytes"
    SIZE_RATIO = "size_ratio_float_to_int8"
    INPUT_SCALE = "int8_input_scale"
    INPUT_ZERO_POINT = "int8_input_zero_point"
    OUTPUT_SCALE = "int8_output_scale"
    OUTPUT_ZERO_POINT = "int8_output_zero_point"
    TRAIN_EPOCHS = "train_epochs_run"
    TRAIN_VAL_ACCURACY = "train_best_val_accuracy"
    TRAIN_SECONDS = "train_seconds"
    TRAIN_PARAMETERS = "model_parameters"
    DATA_SAMPLES = "data_samples"
    DATA_DUPLICATES = "data_duplicates"
    EPOCH_PREFIX = "epoch_"  # per-epoch curves: epoch_loss, epoch_val_accuracy, … (step = epoch)
    WALL_SECONDS = "pipeline_wall_seconds"
    WATERMARK_BER = "watermark_ber"
    WATERMARK_MATCHES = "watermark_matching_triggers"
    WATERMARK_LOG10_P = "watermark_log10_p_value"
    HIL_PASSED = "hil_profiles_passed"
    HIL_EXCLUDED = "hil_profiles_excluded"
    HIL_FAILED = "hil_profiles_failed"
    ROLLOUT_GROUP = "rollout_group_index"  # per round (step = round)
    ROLLOUT_SUCCESS_RATE = "rollout_success_rate"
    ROLLOUT_ERROR_RATE = "rollout_error_rate"
    ROLLOUT_INSTALLED = "rollout_devices_installed"
    ROLLOUT_FAILED = "rollout_devices_failed"


class Artifact:
    KERAS_MODEL = "model/keras"
    FLOAT_TFLITE = "model/float"
    INT8_TFLITE = "model/int8"
    DATA_REPORTS = "reports/data"
    TRAIN_REPORTS = "reports/train"
    QUANT_REPORTS = "reports/quantize"
    EVAL_REPORTS = "reports/evaluation"
    PLOTS = "plots"
    SUMMARY = "summary"
    WATERMARK = "reports/watermark"
    BUNDLES = "bundles"  # bundles/<device class>/{bundle file, manifest.json}
    PUBLIC_KEYS = "keys"  # root public key and the signing key's statement: public material only
    HIL = "hil"
    ROLLOUT = "rollout"


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


class Tracker:
    """One MLflow run, addressed by id."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.client = _client(tracking_uri)

    @classmethod
    def start(cls, env: Environment, config: TrackingConfig, run_name: str, tags: dict[str, str]) -> Tracker:
        client = _client(env.tracking_uri)
        experiment = client.get_experiment_by_name(config.experiment)
        if experiment is None:
            # With a local store, keep artifacts under the tinymlops home, not ./mlruns of the cwd.
            location = (env.home / "mlartifacts").as_uri() if _local_store(env.tracking_uri) else None
            experiment_id = client.create_experiment(config.experiment, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        return cls(env.tracking_uri, run.info.run_id)

    @property
    def experiment_id(self) -> str:
        return self.client.get_run(self.run_id).info.experiment_id

    # -- generic -------------------------------------------------------------------------------
    def tags(self, tags: dict[str, object]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric as M

        now = int(time.time() * 1000)
        batch = [M(key=k, value=float(v), timestamp=now, step=step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def _curves(self, history: dict[str, list[float]]) -> None:
        """Per-epoch curves (step = epoch), in as few requests as MLflow's batch limit allows."""
        from mlflow.entities import Metric as M

        now = int(time.time() * 1000)
        points = [
            M(key=Metric.EPOCH_PREFIX + key, value=float(v), timestamp=now, step=epoch)
            for key, values in history.items()
            for epoch, v in enumerate(values, start=1)
        ]
        for i in range(0, len(points), 1000):  # MLflow accepts at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=points[i : i + 1000])

    def artifacts(self, local_dir: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def artifact(self, local_file: Path, artifact_path: str) -> None:
        self.client.log_artifact(self.run_id, str(local_file), artifact_path)

    def text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def finish(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")

    # -- the pipeline's stages -----------------------------------------------------------------
    def log_params(self, params: PipelineParams) -> None:
        from mlflow.entities import Param

        flat = params.flat()
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in sorted(flat.items())])

    def log_lineage(
        self,
        git: GitState,
        flow_run_id: str | None,
        flow_name: str | None,
        trigger: str,
        *,
        git_ref: str | None = None,
        git_sha: str | None = None,
        repository: str | None = None,
        dry_run: bool = False,
    ) -> None:
        origin = {Tag.GIT_REF: git_ref, Tag.TRIGGER_SHA: git_sha, Tag.REPOSITORY: repository}
        self.tags(
            {
                Tag.GIT_SHA: git.sha,
                Tag.GIT_DIRTY: git.dirty,
                Tag.FLOW_RUN_ID: flow_run_id or "none",
                Tag.FLOW_NAME: flow_name or "none",
                Tag.TRIGGER: trigger,
                Tag.DRY_RUN: dry_run,
                **{k: v for k, v in origin.items() if v},  # only what the trigger reported
            }
        )

    def log_data(
        self, data_md5: str, meta: PreparedMeta, report: ValidationReport, splits: dict[str, Split], prepared_dir: Path
    ) -> None:
        import mlflow
        from mlflow.entities import DatasetInput, InputTag

        self.tags({Tag.DATA_MD5: data_md5, Tag.DATASET: meta.dataset})
        self.metrics({Metric.DATA_SAMPLES: report.n_samples, Metric.DATA_DUPLICATES: report.duplicates})
        inputs = []
        for context, s in splits.items():
            with warnings.catch_warnings():  # a local path matches two equivalent source types
                warnings.simplefilter("ignore")
                ds = mlflow.data.from_numpy(
                    s.x, targets=s.y, source=str(prepared_dir), name=f"{meta.dataset}-{context}", digest=data_md5[:36]
                )
            inputs.append(DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]))
        self.client.log_inputs(self.run_id, datasets=inputs)
        # The data itself lives in DVC (the digest above names it); MLflow keeps its reports.
        for name in (REPORT_FILE, META_FILE):
            self.artifact(Path(prepared_dir) / name, Artifact.DATA_REPORTS)

    def log_training(self, result: TrainResult, model_dir: Path, cache_hit: bool) -> None:
        self.tags({Tag.TRAIN_CACHE_HIT: cache_hit})
        self.metrics(
            {
                Metric.TRAIN_EPOCHS: result.epochs_run,
                Metric.TRAIN_VAL_ACCURACY: result.val_accuracy,
                Metric.TRAIN_SECONDS: result.seconds,
                Metric.TRAIN_PARAMETERS: result.parameters,
            }
        )
        self._curves(result.history)
        model_dir = Path(model_dir)
        self.artifact(model_dir / MODEL_FILE, Artifact.KERAS_MODEL)
        self.artifact(model_dir / stages.TRAIN_REPORT, Artifact.TRAIN_REPORTS)
        self.artifact(model_dir / stages.TRAINING_CURVES, Artifact.PLOTS)

    def log_quantization(self, report: stages.QuantizeReport, tflite_dir: Path) -> None:
        i8 = report.int8_model
        self.tags({Tag.QUANT_MODE: report.mode})
        self.metrics(
            {
                Metric.SIZE_FLOAT: report.float_model.size_bytes,
                Metric.SIZE_INT8: i8.size_bytes,
                Metric.SIZE_RATIO: report.size_ratio,
                Metric.INPUT_SCALE: i8.inputs[0].scale,
                Metric.INPUT_ZERO_POINT: i8.inputs[0].zero_point,
                Metric.OUTPUT_SCALE: i8.outputs[0].scale,
                Metric.OUTPUT_ZERO_POINT: i8.outputs[0].zero_point,
            }
        )
        tflite_dir = Path(tflite_dir)
        self.artifact(tflite_dir / stages.FLOAT_TFLITE, Artifact.FLOAT_TFLITE)
        self.artifact(tflite_dir / stages.INT8_TFLITE, Artifact.INT8_TFLITE)
        self.artifact(tflite_dir / stages.QUANT_REPORT, Artifact.QUANT_REPORTS)

    def log_evaluation(self, report: EvaluationReport, report_dir: Path) -> None:
        self.metrics(
            {
                Metric.ACCURACY_FLOAT: report.accuracy_float,
                Metric.ACCURACY_INT8_TFLITE: report.accuracy_int8_tflite,
                Metric.ACCURACY_INT8_TFLM: report.accuracy_int8_tflm,
                Metric.ACCURACY_DROP: report.accuracy_drop,
                Metric.TFLM_TOP1_AGREEMENT: report.tflite_vs_tflm.top1_agreement,
                Metric.TFLM_MAX_ABS_DIFF: report.tflite_vs_tflm.max_abs_diff,
            }
        )
        report_dir = Path(report_dir)
        self.artifact(report_dir / stages.EVAL_REPORT, Artifact.EVAL_REPORTS)
        self.artifact(report_dir / stages.CONFUSION_PNG, Artifact.PLOTS)

    def register_candidate(self, config: TrackingConfig) -> str:
        """Register this run's int8 artifact as a new model version and point the alias at it."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(
                config.registered_model, description="int8 TFLite models for TFLite Micro (tinymlops)"
            )
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/{Artifact.INT8_TFLITE}"
        version = self.client.create_model_version(config.registered_model, source=source, run_id=self.run_id)
        self.client.set_registered_model_alias(config.registered_model, config.candidate_alias, version.version)
        return str(version.version)

    def log_watermark(self, report: Any, report_path: Path) -> None:
        """`report` is a tinymlops.watermark report (BER, matches, p-value, public payload id)."""
        self.tags({Tag.WATERMARK_PAYLOAD: report.payload_id, Tag.WATERMARK_OWNED: report.owned})
        self.metrics(
            {
                Metric.WATERMARK_BER: report.ber,
                Metric.WATERMARK_MATCHES: report.matches,
                Metric.WATERMARK_LOG10_P: math.log10(max(report.p_value, 1e-300)),
            }
        )
        self.artifact(report_path, Artifact.WATERMARK)

    def log_bundle(self, device_class: str, bundle: Path, manifest_json: Path, digest: str, signing_kid: str) -> None:
        self.tags({Tag.BUNDLE_SHA256 + device_class: digest, Tag.SIGNING_KEY_ID: signing_kid})
        self.artifact(bundle, f"{Artifact.BUNDLES}/{device_class}")
        self.artifact(manifest_json, f"{Artifact.BUNDLES}/{device_class}")

    def log_public_keys(self, *paths: Path) -> None:
        for path in paths:
            self.artifact(path, Artifact.PUBLIC_KEYS)

    def log_hil_profile(self, report: Any, report_path: Path) -> str:
        """One nested run per device profile under this parent run; returns its id."""
        run = self.client.create_run(
            self.client.get_run(self.run_id).info.experiment_id,
            run_name=f"hil-{report.profile}",
            tags={Tag.PARENT_RUN: self.run_id, Tag.HIL_PROFILE: report.profile, Tag.HIL_STATUS: report.status},
        )
        child = Tracker(self.tracking_uri, run.info.run_id)
        figures = {
            k: v
            for k, v in report.model_dump().items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None
        }
        if report.estimate is not None:
            figures |= {f"estimate_{k}": v for k, v in report.estimate.model_dump().items() if isinstance(v, float)}
        child.metrics(figures)
        child.artifact(report_path, Artifact.HIL)
        child.finish(report.status != "failed")
        return run.info.run_id

    def log_hil_summary(self, counts: dict[str, int], markdown: str, plot: Path) -> None:
        self.metrics(
            {
                Metric.HIL_PASSED: counts.get("passed", 0),
                Metric.HIL_EXCLUDED: counts.get("excluded", 0),
                Metric.HIL_FAILED: counts.get("failed", 0),
            }
        )
        self.text(markdown, f"{Artifact.HIL}/summary.md")
        self.artifact(plot, Artifact.PLOTS)

    def log_summary(self, markdown: str, seconds: float) -> None:
        self.metrics({Metric.WALL_SECONDS: seconds})
        self.text(markdown, f"{Artifact.SUMMARY}/summary.md")


def ui_command(env: Environment, port: int = 5000) -> str:
    if _local_store(env.tracking_uri):
        mlflow_bin = Path(sys.executable).parent / "mlflow"  # the one installed beside us
        return f"{mlflow_bin} ui --backend-store-uri {env.tracking_uri} --port {port}"
    return f"open {env.tracking_uri}"


def run_url(env: Environment, experiment_id: str, run_id: str, port: int = 5000) -> str:
    base = f"http://127.0.0.1:{port}" if _local_store(env.tracking_uri) else env.tracking_uri.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def download_candidate(env: Environment, config: TrackingConfig, dst: Path | None = None) -> Path:
    """The int8 file behind the `candidate` alias (what later stages sign and ship)."""
    return download_alias(env, config, config.candidate_alias, dst)


def download_alias(env: Environment, config: TrackingConfig, alias: str, dst: Path | None = None) -> Path:
    import mlflow

    dst = Path(dst or tempfile.mkdtemp(prefix=f"tinymlops-{alias}-"))
    uri = f"models:/{config.registered_model}@{alias}"
    mlflow.set_tracking_uri(env.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    return next(iter(sorted(local.rglob("*.tflite"))), local)


class Registry:
    """The registered model's aliases: candidate (passed the pipeline) and production (rolled out)."""

    def __init__(self, env: Environment, config: TrackingConfig) -> None:
        self.env, self.config, self.client = env, config, _client(env.tracking_uri)

    def version(self, alias: str):  # → ModelVersion | None
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.config.registered_model, alias)
        except MlflowException:
            return None

    def production_model(self, dst: Path) -> Path | None:
        """The int8 file now in production, or None before the first successful rollout."""
        if self.version(self.config.production_alias) is None:
            return None
        return download_alias(self.env, self.config, self.config.production_alias, dst)

    def promote(self, version: str) -> None:
        self.client.set_registered_model_alias(self.config.registered_model, self.config.production_alias, version)
