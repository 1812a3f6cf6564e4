"""One MLflow run, addressed by id: the project's only MLflow caller, with no TensorFlow.

Runs are addressed by id (no thread-local "active run"), so tasks in any thread or process log to
the same parent run. Stage reports are typed only for the checker: importing this module must not
load TensorFlow (every CLI command imports it).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinymlops.settings import Environment, PipelineParams, TrackingConfig
from tinymlops.tracking.names import EXPERIMENT_KIND, SOURCE_NAME, SOURCE_TYPE, Artifact, Metric, Param, Tag, VersionTag
from tinymlops.util import layout
from tinymlops.util.interrupt import interrupted
from tinymlops.util.lineage import GitState

if TYPE_CHECKING:
    from tinymlops.ml.data.split import PreparedMeta, Split
    from tinymlops.ml.data.validate import ValidationReport
    from tinymlops.ml.evaluate import EvaluationReport
    from tinymlops.ml.model.train import TrainResult
    from tinymlops.ml.quantize import TensorInfo
    from tinymlops.pipeline.stages import QuantizeReport


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _is_commit(sha: str) -> bool:
    return len(sha) == 40 and all(c in "0123456789abcdef" for c in sha)


def _local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def _param(key: str, value: object):
    from mlflow.entities import Param as P

    return P(key, str(value))


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
            kind = {Tag.EXPERIMENT_KIND: EXPERIMENT_KIND}  # opens as model training, not GenAI
            experiment_id = client.create_experiment(config.experiment, artifact_location=location, tags=kind)
        else:
            experiment_id = experiment.experiment_id
            if experiment.tags.get(Tag.EXPERIMENT_KIND) != EXPERIMENT_KIND:  # made by an older version
                client.set_experiment_tag(experiment_id, Tag.EXPERIMENT_KIND, EXPERIMENT_KIND)
        standard = {Tag.SOURCE_NAME: SOURCE_NAME, Tag.SOURCE_TYPE: SOURCE_TYPE}
        run = client.create_run(experiment_id, run_name=run_name, tags={**standard, **tags})
        return cls(env.tracking_uri, run.info.run_id)

    def child(self, run_name: str, tags: dict[str, str]) -> Tracker:
        """A nested run under this one (MLflow's own parent tag), in the same experiment."""
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={Tag.PARENT_RUN: self.run_id, **tags})
        return Tracker(self.tracking_uri, run.info.run_id)

    def children(self) -> list[dict[str, str]]:
        """The tags of every run nested under this one."""
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{Tag.PARENT_RUN}` = '{self.run_id}'")
        return [dict(r.data.tags) for r in runs]

    def download(self, artifact_path: str, dst: Path) -> Path:
        return Path(self.client.download_artifacts(self.run_id, artifact_path, str(dst)))

    @property
    def experiment_id(self) -> str:
        return self.client.get_run(self.run_id).info.experiment_id

    # -- generic -------------------------------------------------------------------------------
    def tags(self, tags: dict[str, object]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def metrics(self, metrics: Mapping[str, float | None], step: int = 0) -> None:
        """Log the figures; a None (not measured on this run, e.g. no float model) is left out."""
        from mlflow.entities import Metric as M

        now = int(time.time() * 1000)
        batch = [M(key=k, value=float(v), timestamp=now, step=step) for k, v in metrics.items() if v is not None]
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

    def finish(self, status: str | bool) -> None:
        """FINISHED, FAILED or KILLED (stopped by its user, e.g. Ctrl-C); a bool: FINISHED or FAILED,
        KILLED once the user pressed Ctrl-C (a nested run cut short by it did not fail)."""
        if isinstance(status, bool):
            status = "FINISHED" if status else ("KILLED" if interrupted() else "FAILED")
        self.client.set_terminated(self.run_id, status)

    def describe(self, markdown: str) -> None:
        """The run's description (MLflow's note), shown on top of the run page."""
        self.client.set_tag(self.run_id, Tag.NOTE, markdown)

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
        alarm_id: str | None = None,
        alarm_url: str | None = None,
        dry_run: bool = False,
    ) -> None:
        origin = {
            Tag.GIT_REF: git_ref,
            Tag.TRIGGER_SHA: git_sha,
            Tag.REPOSITORY: repository,
            Tag.DRIFT_ALARM: alarm_id,
            Tag.DRIFT_ALARM_URL: alarm_url,
        }
        self.tags(
            {
                Tag.GIT_SHA: git.sha,
                **({Tag.SOURCE_GIT_COMMIT: git.sha} if _is_commit(git.sha) else {}),
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
        from mlflow.data.numpy_dataset import from_numpy
        from mlflow.entities import DatasetInput, InputTag

        self.tags({Tag.DATA_MD5: data_md5, Tag.DATASET: meta.dataset})
        self.metrics({Metric.DATA_SAMPLES: report.n_samples, Metric.DATA_DUPLICATES: report.duplicates})
        inputs = []
        for context, s in splits.items():
            with warnings.catch_warnings():  # a local path matches two equivalent source types
                warnings.simplefilter("ignore")
                ds = from_numpy(
                    s.x, targets=s.y, source=str(prepared_dir), name=f"{meta.dataset}-{context}", digest=data_md5[:36]
                )
            inputs.append(DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]))
        self.client.log_inputs(self.run_id, datasets=inputs)
        # The data itself lives in DVC (the digest above names it); MLflow keeps its reports.
        for name in (layout.VALIDATION_FILE, layout.SPLIT_META_FILE):
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
        self.artifact(model_dir / layout.KERAS_MODEL_FILE, Artifact.KERAS_MODEL)
        self.artifact(model_dir / layout.TRAIN_REPORT, Artifact.TRAIN_REPORTS)
        self.artifact(model_dir / layout.TRAINING_CURVES, Artifact.PLOTS)

    def log_quantization(self, report: QuantizeReport, tflite_dir: Path) -> None:
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
        self.artifact(tflite_dir / layout.FLOAT_TFLITE, Artifact.FLOAT_TFLITE)
        self.artifact(tflite_dir / layout.INT8_TFLITE, Artifact.INT8_TFLITE)
        self.log_signature(i8.inputs, i8.outputs, Artifact.INT8_TFLITE)
        self.artifact(tflite_dir / layout.QUANT_REPORT, Artifact.QUANT_REPORTS)

    def log_signature(self, inputs: list[TensorInfo], outputs: list[TensorInfo], artifact_path: str) -> None:
        """An MLmodel file beside the model: MLflow has no TFLite flavor, but its UI shows the
        input/output signature of a registered version from this file."""
        import tempfile

        import numpy as np
        from mlflow.models import Model
        from mlflow.models.signature import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        def schema(tensors: list[TensorInfo]) -> Schema:
            return Schema([TensorSpec(np.dtype(t.dtype), (-1, *t.shape[1:]), t.name) for t in tensors])

        model = Model(signature=ModelSignature(inputs=schema(inputs), outputs=schema(outputs)))
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp) / "MLmodel")
            self.artifact(Path(tmp) / "MLmodel", artifact_path)

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
        self.artifact(report_dir / layout.EVAL_REPORT, Artifact.EVAL_REPORTS)
        self.artifact(report_dir / layout.CONFUSION_PNG, Artifact.PLOTS)

    def register_candidate(
        self, config: TrackingConfig, *, sha256: str, tags: Mapping[str, object], description: str
    ) -> str:
        """This run's int8 artifact as a model version, and the candidate alias on it.

        Identical bytes are the same version: a run that rebuilt them moves the alias back to that
        version and refreshes its tags, instead of registering v2, v3, … of one file."""
        from mlflow.exceptions import MlflowException

        name = config.registered_model
        try:
            self.client.create_registered_model(name, description="int8 TFLite models for TFLite Micro (tinymlops)")
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        same = self.client.search_model_versions(f"name = '{name}' and tags.`{VersionTag.SHA256}` = '{sha256}'")
        if same:
            version = str(min(int(v.version) for v in same))
        else:
            source = f"{self.client.get_run(self.run_id).info.artifact_uri}/{Artifact.INT8_TFLITE}"
            created = self.client.create_model_version(
                name, source=source, run_id=self.run_id, tags={VersionTag.SHA256: sha256}, description=description
            )
            version = str(created.version)
        self.tag_version(config, version, {**tags, VersionTag.LAST_RUN: self.run_id})
        self.client.set_registered_model_alias(name, config.candidate_alias, version)
        return version

    def tag_version(self, config: TrackingConfig, version: str, tags: Mapping[str, object]) -> None:
        for key, value in tags.items():
            if value is not None and value != "":
                self.client.set_model_version_tag(config.registered_model, version, key, str(value))

    def log_watermark(self, report: Any, report_path: Path) -> None:
        """`report` is a tinymlops.ml.watermark report (BER, matches, p-value, public payload id)."""
        self.tags({Tag.WATERMARK_PAYLOAD: report.payload_id, Tag.WATERMARK_OWNED: report.owned})
        self.metrics(
            {
                Metric.WATERMARK_BER: report.ber,
                Metric.WATERMARK_MATCHES: report.matches,
                Metric.WATERMARK_LOG10_P: math.log10(max(report.p_value, 1e-300)),
            }
        )
        self.artifact(report_path, Artifact.WATERMARK)

    def log_watermark_plan(self, report: Mapping[str, Any], report_path: Path) -> None:
        """The embedding plan (tinymlops.ml.watermark.adaptive.AdaptiveReport, as JSON): the chosen
        plan as params (the best tried when refused), its cost and attempts as metrics."""
        attempts = report["attempts"]
        chosen = report["chosen"]
        if chosen is not None:
            shown = attempts[chosen]
        else:  # refused: the owned attempt with the lowest cost, else the lowest cost
            shown = min([a for a in attempts if a["owned"]] or attempts, key=lambda a: a["accuracy_cost"])
        plan = shown["plan"]
        self.client.log_batch(
            self.run_id,
            params=[
                _param(Param.WATERMARK_TRIGGERS, plan["n_triggers"]),
                _param(Param.WATERMARK_SHARE, plan["trigger_share"]),
                _param(Param.WATERMARK_CLEAN_REPEATS, plan["clean_repeats"]),
                _param(Param.WATERMARK_EPOCHS, plan["epochs"]),
            ],
        )
        self.metrics(
            {
                Metric.WATERMARK_COST_PT: shown["accuracy_cost"] * 100,
                Metric.WATERMARK_VAL_UNMARKED: shown["val_accuracy_before"],
                Metric.WATERMARK_VAL_MARKED: shown["val_accuracy_after"],
                Metric.WATERMARK_PLAN_ATTEMPTS: len(attempts),
                Metric.WATERMARK_MIN_TRIGGERS: report["min_triggers"],
                Metric.WATERMARK_PLAN_LOG10_P: math.log10(max(shown["p_value"], 1e-300)),
            }
        )
        accepted = bool(report["accepted"])
        self.tags({Tag.WATERMARK_PLAN: report["reason"] if accepted else "refused"})
        if not accepted:
            self.tags({Tag.WATERMARK_REFUSED: report["reason"], Tag.WATERMARK_OWNED: False})
        self.artifact(report_path, Artifact.WATERMARK)

    def log_bundle(
        self,
        device_class: str,
        bundle: Path,
        manifest_json: Path,
        digest: str,
        signing_kid: str,
        reference: Path | None = None,
    ) -> None:
        """The class's bundle and manifest; with `reference`, the .tflite its model image was
        compiled from, beside them (the HIL oracle's and the fleet simulator's model; not shipped)."""
        self.tags({Tag.BUNDLE_SHA256 + device_class: digest, Tag.SIGNING_KEY_ID: signing_kid})
        self.artifact(bundle, f"{Artifact.BUNDLES}/{device_class}")
        self.artifact(manifest_json, f"{Artifact.BUNDLES}/{device_class}")
        if reference is not None and reference.is_file():
            self.artifact(reference, f"{Artifact.BUNDLES}/{device_class}")

    def log_public_keys(self, *paths: Path) -> None:
        for path in paths:
            self.artifact(path, Artifact.PUBLIC_KEYS)

    def log_hil_profile(self, report: Any, report_path: Path) -> str:
        """One nested run per device profile under this parent run; returns its id."""
        child = self.child(f"hil-{report.profile}", {Tag.HIL_PROFILE: report.profile, Tag.HIL_STATUS: report.status})
        figures = {
            k: v
            for k, v in report.model_dump().items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None
        }
        if report.estimate is not None:
            figures |= {f"estimate_{k}": v for k, v in report.estimate.model_dump().items() if isinstance(v, float)}
        if getattr(report, "agent_ram", None) is not None:  # the update agent's RAM per boot phase
            figures |= {f"agent_ram_{k}": v for k, v in report.agent_ram.model_dump().items() if isinstance(v, int)}
        child.metrics(figures)
        if report.runtime:
            child.tags({Tag.HIL_RUNTIME: report.runtime})
        child.artifact(report_path, Artifact.HIL)
        child.finish(report.status != "failed")
        return child.run_id

    def log_hil_summary(self, counts: dict[str, int], markdown: str, plot: Path, seconds: float | None = None) -> None:
        self.metrics(
            {
                Metric.HIL_PASSED: counts.get("passed", 0),
                Metric.HIL_EXCLUDED: counts.get("excluded", 0),
                Metric.HIL_FAILED: counts.get("failed", 0),
            }
            | ({Metric.HIL_WALL_SECONDS: seconds} if seconds is not None else {})
        )
        self.text(markdown, f"{Artifact.HIL}/summary.md")
        self.artifact(plot, Artifact.PLOTS)

    def log_variant(self, trained: Any, serves: list[str]) -> None:
        """On a variant's nested run: its footprint, accuracy and which classes it serves."""
        fp = trained.footprint
        self.tags({Tag.VARIANT_NAME: trained.name, Tag.VARIANT_SERVES: ",".join(serves)})
        figures = {
            Metric.ACCURACY_FLOAT: trained.accuracy_float,
            Metric.ACCURACY_INT8_TFLM: trained.accuracy_int8,
            Metric.SIZE_INT8: fp.int8_bytes,
            "arena_bytes": fp.arena_bytes,
            "macs": fp.macs,
        }
        self.metrics(figures | {f"latency_ms.{c}": v for c, v in fp.latency_ms.items()})

    def log_release(self, release: Any, markdown: str, plot: Path | None, release_json: Path) -> None:
        """On the parent run: which model serves each class, the trade-off plot and the table."""
        self.tags({Tag.SERVED_BY + c: s.variant for c, s in release.served.items()})
        self.tags({Tag.SERVED_BY + c: "none" for c in release.unserved})
        self.metrics({Metric.VARIANTS_TRAINED: len(release.trained), Metric.CLASSES_SERVED: len(release.served)})
        self.text(markdown, f"{Artifact.VARIANTS}/summary.md")
        self.artifact(release_json, Artifact.VARIANTS)
        if plot is not None:
            self.artifact(plot, Artifact.PLOTS)

    def tag_model_version(self, config: TrackingConfig, version: str, tags: dict[str, str]) -> None:
        """Registry: e.g. which variant serves which class in this version's release."""
        for key, value in tags.items():
            self.client.set_model_version_tag(config.registered_model, version, key, value)

    def log_summary(self, markdown: str, seconds: float) -> None:
        self.metrics({Metric.WALL_SECONDS: seconds})
        self.text(markdown, f"{Artifact.SUMMARY}/summary.md")
