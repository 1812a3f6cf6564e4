"""Every MLflow tag, metric and artifact path the project writes, named once.

Where MLflow has its own key (mlflow.parentRunId, mlflow.source.git.commit), it is used.
"""


class Tag:
    # MLflow's own keys (mlflow/utils/mlflow_tags.py): its UI reads them
    SOURCE_GIT_COMMIT = "mlflow.source.git.commit"
    SOURCE_NAME = "mlflow.source.name"
    SOURCE_TYPE = "mlflow.source.type"
    NOTE = "mlflow.note.content"  # the run's description
    EXPERIMENT_KIND = "mlflow.experimentKind"  # on the experiment: which UI it opens in
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
    DRIFT_ALARM = "trigger.alarm_id"  # the fleet's drift alarm that started a retrain-on-drift run
    DRIFT_ALARM_URL = "trigger.alarm_url"  # that alarm on the fleet dashboard
    DRY_RUN = "dry_run"
    WATERMARK_PAYLOAD = "watermark.payload_id"  # public id of owner + serial; never the key
    WATERMARK_OWNED = "watermark.owned"
    WATERMARK_PLAN = "watermark.plan"  # accepted: the plan's line; refused: "refused"
    WATERMARK_REFUSED = "watermark.refused"  # the refusal's one-line reason (shipped unmarked or failed)
    BUNDLE_SHA256 = "bundle.sha256."  # + device class
    SIGNING_KEY_ID = "bundle.signing_kid"
    HIL_PROFILE = "hil.profile"
    HIL_STATUS = "hil.status"
    HIL_RUNTIME = "hil.runtime"  # "emulated <core>" or "host reference (TFLM): <why>"
    PARENT_RUN = "mlflow.parentRunId"  # MLflow's own tag for nested runs
    ROLLOUT_STATUS = "rollout.status"
    ROLLOUT_DECISION = "rollout.decision"
    ROLLOUT_EXCLUDED = "rollout.excluded_classes"
    ROLLOUT_PROMOTED = "rollout.promoted"
    VARIANT_NAME = "variant.name"  # on a variant's nested run
    VARIANT_SERVES = "variant.serves"  # its classes, comma-separated (empty: trained, not chosen)
    SERVED_BY = "served_by."  # + device class, on the parent run and the registered version: the model serving it
    DATA_SOURCE = "data.source"  # on a model version: the data version it was trained on


EXPERIMENT_KIND = "custom_model_development"  # model training, not MLflow's GenAI view (traces, tokens)
SOURCE_NAME = "flows/pipeline.py:pipeline"  # the Prefect entrypoint that ran
SOURCE_TYPE = "JOB"  # mlflow.entities.SourceType: a scheduled or triggered job, not a notebook


class Alias:
    """Registry aliases besides configs/tracking.yaml's candidate and production."""

    SIMULATED_OK = "simulated-ok"  # passed a staged rollout on a *simulated* fleet (never production)


class VersionTag:
    """Tags on a registered model version: what tells v2 from v3 at a glance."""

    SHA256 = "sha256"  # of the int8 file: identical bytes are the same version
    ACCURACY = "accuracy_int8_tflm"
    ACCURACY_FLOAT = "accuracy_float"
    QUANT_MODE = "quantize.mode"
    DATA_MD5 = "dvc.data_md5"
    GIT_SHA = "git.sha"
    HIL = "hil."  # + profile: passed / excluded / failed
    ROLLOUT = "rollout"  # last rollout: status, where
    VARIANT = "variant"  # per-class variant, when the pipeline made one
    INSTANCE = "watermark.instance"  # watermark payload (owner + serial), when marked
    LAST_RUN = "last_run"  # the latest pipeline run that produced these bytes (the source is the first)


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
    WATERMARK_COST_PT = "watermark_accuracy_cost_pt"  # val accuracy lost to the mark (chosen or best plan)
    WATERMARK_VAL_UNMARKED = "watermark_val_accuracy_unmarked"
    WATERMARK_VAL_MARKED = "watermark_val_accuracy_marked"
    WATERMARK_PLAN_ATTEMPTS = "watermark_plan_attempts"
    WATERMARK_MIN_TRIGGERS = "watermark_min_triggers"  # the floor a meaningful owner test needs
    WATERMARK_PLAN_LOG10_P = "watermark_plan_log10_p_value"  # float model, × owner tests

    VARIANTS_TRAINED = "variants_trained"
    CLASSES_SERVED = "classes_served"
    HIL_PASSED = "hil_profiles_passed"
    HIL_EXCLUDED = "hil_profiles_excluded"
    HIL_FAILED = "hil_profiles_failed"
    HIL_WALL_SECONDS = "hil_wall_seconds"  # all profiles, in parallel: what the HIL adds to a run
    ROLLOUT_GROUP = "rollout_group_index"  # per round (step = round)
    ROLLOUT_SUCCESS_RATE = "rollout_success_rate"
    ROLLOUT_ERROR_RATE = "rollout_error_rate"
    ROLLOUT_INSTALLED = "rollout_devices_installed"
    ROLLOUT_FAILED = "rollout_devices_failed"
    ROLLOUT_USAGE_INFERENCES = "rollout_usage_inferences"  # attestation: reconciled from verified evidence
    ROLLOUT_USAGE_DEVICES = "rollout_usage_devices_attested"
    ROLLOUT_USAGE_ALARMS = "rollout_usage_counter_alarms"  # devices whose counter went backwards


class Param:
    """MLflow params besides params.yaml's flattened keys."""

    WATERMARK_TRIGGERS = "watermark.plan.triggers"
    WATERMARK_SHARE = "watermark.plan.trigger_share"
    WATERMARK_CLEAN_REPEATS = "watermark.plan.clean_repeats"
    WATERMARK_EPOCHS = "watermark.plan.epochs"


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
    VARIANTS = "variants"  # variants/release.json, variants/summary.md
