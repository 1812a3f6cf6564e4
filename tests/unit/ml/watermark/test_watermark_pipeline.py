"""The pipeline's instance step (tasks/protect.build_instances) on a temp project: with ids listed in
configs/watermark.yaml it derives each instance, gates it on its own int8 file, and signs bundles
whose manifests record the instance id and the public payload id, never the key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tinymlops.ml.watermark.key import write_key

pytestmark = pytest.mark.slow


def test_build_instances_signs_one_bundle_per_class_per_instance(
    project: Path, prepared_dir: Path, trained_dir: Path, marked, owner_key
) -> None:
    from tasks.context import PipelineRun, load_context
    from tasks.model import TrainedModel
    from tasks.protect import build_instances
    from tinymlops.bundle import read_manifest
    from tinymlops.ml.model import train as training
    from tinymlops.ml.watermark.config import WatermarkConfig
    from tinymlops.pipeline import stages
    from tinymlops.tracking import Tracker

    config_file = project / "configs" / "watermark.yaml"
    doc = yaml.safe_load(config_file.read_text())
    doc["instances"] = [3]
    config_file.write_text(yaml.safe_dump(doc))
    ctx = load_context(PipelineRun(root=str(project)), "instances-test")
    # the key `marked` was embedded with, in place of the project's own
    write_key(owner_key, WatermarkConfig.load_from(project).key_path(ctx.env.home), overwrite=True)
    shutil.copytree(prepared_dir, ctx.prepared_dir)
    model_dir = project / "marked"
    model_dir.mkdir()
    training.save(marked["model"], model_dir)
    shutil.copy(trained_dir / stages.TRAIN_REPORT, model_dir / stages.TRAIN_REPORT)
    tracker = Tracker.start(ctx.env, ctx.tracking, "instances-test", {})

    [build] = build_instances.fn(ctx, tracker, TrainedModel(model_dir=model_dir, cache_key="t", cache_hit=False), "md5")
    assert build.instance_id == 3 and build.trace_p_value < 1e-6 and build.trigger_p_value < 1e-9
    assert build.bundles
    secret = owner_key.secret.get_secret_value()
    for device_class, bundle in build.bundles.items():
        manifest = read_manifest(bundle)
        assert manifest.lineage.instance_id == "3" and manifest.lineage.watermark_id == owner_key.payload_id
        assert secret not in bundle.read_bytes() and secret.hex() not in bundle.read_bytes().decode("latin-1")
        arts = {a.path for a in tracker.client.list_artifacts(tracker.run_id, f"instances/3/{device_class}")}
        assert f"instances/3/{device_class}/{device_class}.bundle" in arts
    assert tracker.client.get_run(tracker.run_id).data.tags["watermark.instances"] == "3"
    tracker.finish(True)
