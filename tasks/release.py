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
    KeyPaths,
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


def signing_keys(ctx: Context) -> KeyPaths:
    config = BundleConfig.load_from(ctx.env.root)
    keys = ensure_dev_keys(config.keys_path(ctx.env.home), os.environ.get(PASSPHRASE_ENV))
    if keys.created:
        print(f"created local development keys in {keys.dir}; for production move root.key offline")
    return keys


def sign_per_class(
    ctx: Context, model: bytes, *, version: str, sequence: int, lineage: Lineage, out_dir: Path
) -> dict[str, Path]:
    """`model` as one bundle per targeted device class → {class: bundle file}; manifests beside."""
    config = BundleConfig.load_from(ctx.env.root)
    signer = load_signer(signing_keys(ctx).dir, os.environ.get(PASSPHRASE_ENV))
    xq = hil.quantized_test(model, load_split(ctx.prepared_dir, "test"))
    selftest = hil.golden_vectors(model, xq, n=config.selftest_count, tolerance=config.selftest_tolerance)
    bundles = {}
    for device_class, profile in target_classes(load_profiles(ctx.env.root)).items():
        draft = hil.manifest_draft(
            model,
            profile,
            model_name=ctx.tracking.registered_model,
            model_version=version,
            sequence=sequence,
            selftest=selftest,
            lineage=lineage,
        )
        kek = ensure_kek(config.kek_path(ctx.env.home, device_class))[0] if config.encrypt else None
        bundles[device_class] = out_dir / f"{device_class}.bundle"
        manifest = build_bundle(model, draft, signer, bundles[device_class], kek=kek)
        write_json(out_dir / f"{device_class}.manifest.json", manifest.json_view())
    return bundles


@task(name="build-bundles", cache_policy=NO_CACHE)
def build_bundles(ctx: Context, tracker: Tracker, tflite_dir: Path, data_md5: str, watermark_id: str) -> Path:
    lineage = Lineage(
        mlflow_run_id=tracker.run_id, git_sha=git_state(ctx.env.root).sha, data_md5=data_md5, watermark_id=watermark_id
    )
    out_dir = ctx.run_dir / "bundles"
    # Anti-rollback: a device only installs a higher sequence; seconds since the epoch only grow.
    bundles = sign_per_class(
        ctx,
        (tflite_dir / stages.INT8_TFLITE).read_bytes(),
        version=tracker.run_id[:12],
        sequence=int(time.time()),
        lineage=lineage,
        out_dir=out_dir,
    )
    kid = load_signer(signing_keys(ctx).dir, os.environ.get(PASSPHRASE_ENV)).kid
    for device_class, bundle in bundles.items():
        manifest = out_dir / f"{device_class}.manifest.json"
        tracker.log_bundle(device_class, bundle, manifest, sha256_file(bundle), kid)
    keys = signing_keys(ctx)
    tracker.log_public_keys(keys.root_public, keys.signing_statement)
    return out_dir
