"""Release tasks: one signed (optionally encrypted) bundle per target device class."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.context import Context
from tinymlops import hil, stages
from tinymlops.bundle import (
    PASSPHRASE_ENV,
    BundleConfig,
    Lineage,
    build_bundle,
    ensure_dev_keys,
    ensure_kek,
    load_signer,
)
from tinymlops.data.split import load_split
from tinymlops.device.profiles import DeviceProfile, load_profiles
from tinymlops.io import sha256_file, write_json
from tinymlops.lineage import git_state
from tinymlops.tracking import Tracker


def target_classes(profiles: list[DeviceProfile]) -> dict[str, DeviceProfile]:
    """One profile per targeted device class (its vendor/class name gives the class UUID)."""
    return {p.device_class: p for p in reversed(profiles) if p.target}


@task(name="build-bundles", cache_policy=NO_CACHE)
def build_bundles(ctx: Context, tracker: Tracker, tflite_dir: Path, data_md5: str, watermark_id: str) -> Path:
    config = BundleConfig.load_from(ctx.env.root)
    passphrase = os.environ.get(PASSPHRASE_ENV)
    keys = ensure_dev_keys(config.keys_path(ctx.env.home), passphrase)
    if keys.created:
        print(f"created local development keys in {keys.dir}; for production move root.key offline")
    signer = load_signer(keys.dir, passphrase)
    model = (tflite_dir / stages.INT8_TFLITE).read_bytes()
    xq = hil.quantized_test(model, load_split(ctx.prepared_dir, "test"))
    selftest = hil.golden_vectors(model, xq, n=config.selftest_count, tolerance=config.selftest_tolerance)
    lineage = Lineage(
        mlflow_run_id=tracker.run_id, git_sha=git_state(ctx.env.root).sha, data_md5=data_md5, watermark_id=watermark_id
    )
    # Anti-rollback: a device only installs a higher sequence; seconds since the epoch only grow.
    sequence = int(time.time())
    out_dir = ctx.run_dir / "bundles"
    for device_class, profile in target_classes(load_profiles(ctx.env.root)).items():
        draft = hil.manifest_draft(
            model,
            profile,
            model_name=ctx.tracking.registered_model,
            model_version=tracker.run_id[:12],
            sequence=sequence,
            selftest=selftest,
            lineage=lineage,
        )
        kek = ensure_kek(config.kek_path(ctx.env.home, device_class))[0] if config.encrypt else None
        bundle = out_dir / f"{device_class}.bundle"
        manifest = build_bundle(model, draft, signer, bundle, kek=kek)
        view = write_json(out_dir / f"{device_class}.manifest.json", manifest.json_view())
        tracker.log_bundle(device_class, bundle, view, sha256_file(bundle), signer.kid)
    tracker.log_public_keys(keys.root_public, keys.signing_statement)
    return out_dir
