"""Protection tasks: embed the owner's watermark (cached), and check it on the final int8 file."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.context import Context
from tasks.model import TrainedModel, progress_artifact
from tinymlops.ml.data.split import load_split
from tinymlops.ml.model import train as training
from tinymlops.ml.watermark import (
    OwnerKey,
    WatermarkConfig,
    WatermarkError,
    WatermarkRefused,
    WatermarkReport,
)
from tinymlops.pipeline import cache, protect, stages
from tinymlops.tracking import Tracker
from tinymlops.util.io import write_json


def owner_key(ctx: Context, config: WatermarkConfig) -> OwnerKey:
    key, created = protect.owner_key(ctx.env.home, config)
    if created:
        print(f"created a development owner key in {config.key_path(ctx.env.home)} (keep it secret, back it up)")
    return key


@task(name="embed-watermark", cache_policy=NO_CACHE)
def embed_watermark(ctx: Context, tracker: Tracker, trained: TrainedModel) -> TrainedModel:
    """Fine-tune the trained model with the key's trigger set mixed into clean batches (the same
    function as dvc.yaml's watermark stage)."""
    config = WatermarkConfig.load_from(ctx.env.root)
    key = owner_key(ctx, config)
    # The key's digest (never the key) is part of the cache key: another owner, another model.
    cache_key = cache.key(
        trained=trained.cache_key,
        # the base's own settings only: listing instance ids must not re-embed the shared base
        watermark=config.model_dump(exclude={"instances", "instance", "fingerprint"}),
        owner=protect.key_digest(key),
        seed=ctx.params.seed,
    )

    def build(out: Path) -> None:
        with progress_artifact("watermark fine-tune") as progress:
            protect.embed_watermark(ctx.params, ctx.prepared_dir, trained.model_dir, out, key, config, progress)

    try:
        model_dir, hit = cache.cached_dir(ctx.env.cache_dir, "watermark", cache_key, build)
    except WatermarkRefused as exc:  # the watermark stage fails with its reason, the plans tried on record
        path = write_json(ctx.run_dir / "reports" / protect.PLAN_REPORT, exc.report)
        tracker.log_watermark_plan(exc.report, path)
        raise
    plan = protect.read_plan(model_dir)
    if plan is not None:
        tracker.log_watermark_plan(plan, model_dir / protect.PLAN_REPORT)
        if not plan["accepted"]:
            print(f"WARNING: shipping UNMARKED (watermark.yaml on_refusal: ship_unmarked): {plan['reason']}")
    if (model_dir / protect.EMBED_REPORT).is_file():
        tracker.artifact(model_dir / protect.EMBED_REPORT, "reports/watermark")
    return TrainedModel(model_dir=model_dir, cache_key=cache_key, cache_hit=hit and trained.cache_hit)


@task(name="verify-watermark", cache_policy=NO_CACHE)
def verify_watermark(
    ctx: Context, tracker: Tracker, tflite_dir: Path, marked: TrainedModel | None = None
) -> WatermarkReport:
    """On the int8 file that ships, both owner tests (triggers; runner-up profile on the test split):
    the run fails unless the model is owned, or the watermark stage (`marked`) refused and the
    config says ship unmarked (then the report is returned not owned, and the run tagged)."""
    from tinymlops.ml.watermark.ownership import verify_ownership
    from tinymlops.ml.watermark.verify import tflite_predict

    config = WatermarkConfig.load_from(ctx.env.root)
    refused = protect.refusal(marked.model_dir) if marked is not None else None
    if marked is not None:
        config = protect.checked_config(config, marked.model_dir)  # the trigger prefix its plan marked
    int8 = tflite_dir / stages.INT8_TFLITE
    predict, shape, n_classes = tflite_predict(int8.read_bytes(), str(int8.name))
    probes = load_split(ctx.prepared_dir, "test").x
    report = verify_ownership(predict, owner_key(ctx, config), config, shape, n_classes, probes, source=int8.name)
    path = write_json(ctx.run_dir / "reports" / "watermark.json", report.model_dump(mode="json"))
    tracker.log_watermark(report.watermark, path)
    for line in report.lines():
        print(line)
    if refused is not None:
        print(f"WARNING: this model ships UNMARKED: {refused}")
        return report.watermark.model_copy(update={"owned": False})
    if not report.owned:
        report.watermark.raise_if_not_owned()  # WatermarkError: fails the run
    return report.watermark


# -- per-customer instances (configs/watermark.yaml `instances`; empty by default: no cost) ---------------

INSTANCE_REPORT = "instances.json"


class InstanceBuild(BaseModel):
    instance_id: int
    int8_sha256: str
    trace_p_value: float  # family-wise, over the configured instance ids
    trigger_p_value: float  # owner test 1
    profile_p_value: float  # owner test 2
    bundles: dict[str, Path]  # device class → bundle signed for this instance


@task(name="build-instances", cache_policy=NO_CACHE)
def build_instances(ctx: Context, tracker: Tracker, marked: TrainedModel, data_md5: str) -> list[InstanceBuild]:
    """One instance per configured id: derive (cached), int8, trace + both owner tests on the int8
    file (the run fails unless each traces to its own id), one signed bundle per device class whose
    manifest records the instance id (never the key)."""
    import time

    from tasks.release import sign_per_class
    from tinymlops.bundle import Lineage
    from tinymlops.ml.watermark.instances import derive_instance, trace
    from tinymlops.ml.watermark.ownership import verify_ownership
    from tinymlops.ml.watermark.verify import tflite_predict
    from tinymlops.util.io import sha256_bytes
    from tinymlops.util.lineage import git_state

    config = WatermarkConfig.load_from(ctx.env.root)
    if not config.instances:
        return []
    if (refused := protect.refusal(marked.model_dir)) is not None:
        raise WatermarkError(f"watermark.yaml instances: the base shipped unmarked, no instance to derive ({refused})")
    config = protect.checked_config(config, marked.model_dir)
    key = owner_key(ctx, config)
    train = load_split(ctx.prepared_dir, "train")
    probes = load_split(ctx.prepared_dir, "test").x
    lineage = {"mlflow_run_id": tracker.run_id, "git_sha": git_state(ctx.env.root).sha, "data_md5": data_md5}
    sequence = int(time.time())
    builds = []
    for instance_id in config.instances:
        inst_key = cache.key(
            marked=marked.cache_key,
            instance=config.instance,
            owner=protect.key_digest(key),
            instance_id=instance_id,
            quantize=ctx.params.quantize,
        )

        def build(out: Path, instance_id: int = instance_id) -> None:
            model, report = derive_instance(training.load(marked.model_dir), train, key, instance_id, config)
            (out / "keras").mkdir()
            training.save(model, out / "keras")
            write_json(out / "keras" / stages.TRAIN_REPORT, stages.read_train_report(marked.model_dir).model_dump())
            stages.quantize(ctx.params, ctx.prepared_dir, out / "keras", out / "tflite")
            write_json(out / "instance.json", report.model_dump(mode="json"))

        inst_dir, _ = cache.cached_dir(ctx.env.cache_dir, "instance", inst_key, build)
        int8 = (inst_dir / "tflite" / stages.INT8_TFLITE).read_bytes()
        predict, shape, n_classes = tflite_predict(int8, f"instance {instance_id}")
        traced = trace(
            predict, key, config.instances, shape, n_classes, config.instance, probes, f"instance {instance_id}"
        )
        owned = verify_ownership(predict, key, config, shape, n_classes, probes, source=f"instance {instance_id}")
        print(f"instance {instance_id}: {traced.line()}; " + "; ".join(owned.lines()))
        if traced.instance_id != instance_id or not owned.owned:
            raise WatermarkError(f"instance {instance_id}: its int8 file does not trace to it ({traced.line()})")
        out_dir = ctx.run_dir / "instances" / str(instance_id)
        bundles = sign_per_class(
            ctx,
            int8,
            version=f"{tracker.run_id[:12]}-i{instance_id}",
            sequence=sequence,
            lineage=Lineage(**lineage, watermark_id=key.payload_id, instance_id=str(instance_id)),
            out_dir=out_dir,
        )
        for device_class, bundle in bundles.items():
            tracker.artifact(bundle, f"instances/{instance_id}/{device_class}")
            tracker.artifact(out_dir / f"{device_class}.manifest.json", f"instances/{instance_id}/{device_class}")
        builds.append(
            InstanceBuild(
                instance_id=instance_id,
                int8_sha256=sha256_bytes(int8),
                trace_p_value=traced.p_value,
                trigger_p_value=owned.watermark.p_value,
                profile_p_value=owned.profile.p_value if owned.profile else 1.0,
                bundles=bundles,
            )
        )
    path = write_json(ctx.run_dir / "reports" / INSTANCE_REPORT, [b.model_dump(mode="json") for b in builds])
    tracker.artifact(path, "reports/watermark")
    tracker.tags({"watermark.instances": ",".join(str(b.instance_id) for b in builds)})  # ids only, never the key
    return builds
