"""Release tasks: one signed (optionally encrypted) bundle per target device class."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.context import Context
from tinymlops.bundle import (
    BundleConfig,
    InputTransform,
    KeyPaths,
    Lineage,
    ensure_dev_keys,
    ensure_kek,
    load_signer,
)
from tinymlops.device import hil
from tinymlops.device.profiles import DeviceProfile, load_profiles
from tinymlops.ml.data.split import load_meta, load_split
from tinymlops.ml.variants import Release
from tinymlops.pipeline import stages
from tinymlops.pipeline.baseline import latency_hist
from tinymlops.pipeline.release import sign_release
from tinymlops.settings import key_passphrase
from tinymlops.tracking import Artifact, Tracker
from tinymlops.util.io import sha256_bytes, sha256_file, write_json
from tinymlops.util.lineage import git_state


def target_classes(profiles: list[DeviceProfile]) -> dict[str, DeviceProfile]:
    """One profile per targeted device class (its vendor/class name gives the class UUID)."""
    return {p.device_class: p for p in reversed(profiles) if p.target}


def signing_keys(ctx: Context) -> KeyPaths:
    config = BundleConfig.load_from(ctx.env.root)
    keys = ensure_dev_keys(config.keys_path(ctx.env.home), key_passphrase())
    if keys.created:
        print(f"created local development keys in {keys.dir}; for production move root.key offline")
    return keys


def input_transform(ctx: Context, model: bytes) -> InputTransform | None:
    """The device's input step for `model`: the data's preprocessing (fitted on its train split)
    and the model's int8 input parameters, derived together (tinymlops/ml/preprocess.py)."""
    from tinymlops.ml.quantize import inspect

    pre = load_meta(ctx.prepared_dir).preprocessing
    if pre is None:
        return None
    tensor = inspect(model).inputs[0]
    return InputTransform.from_floats(pre.method, pre.layout, pre.offset, pre.scale, tensor.scale, tensor.zero_point)


def sign_per_class(
    ctx: Context,
    model: bytes | dict[str, bytes],
    *,
    version: str,
    sequence: int,
    lineage: Lineage | dict[str, Lineage],
    out_dir: Path,
    classes: list[str] | None = None,
) -> dict[str, Path]:
    """One bundle per targeted device class → {class: bundle file}; manifests beside.

    `model` is one model for every class, or the release's model per class (a variant where the
    main model misses the class); golden vectors and the input transform come from the current
    data and each class's own model. `classes` limits the classes signed."""
    config = BundleConfig.load_from(ctx.env.root)
    signer = load_signer(signing_keys(ctx).dir, key_passphrase())
    test = load_split(ctx.prepared_dir, "test")
    # classes served by the same model (and lineage) share one self-test and one signing pass
    served: dict[str, tuple[bytes, list[DeviceProfile], Lineage]] = {}
    for device_class, profile in target_classes(load_profiles(ctx.env.root)).items():
        if classes is not None and device_class not in classes:
            continue
        payload = model if isinstance(model, bytes) else model.get(device_class)
        if payload is None:
            continue
        own = lineage if isinstance(lineage, Lineage) else lineage[device_class]
        served.setdefault(sha256_bytes(payload) + own.model_dump_json(), (payload, [], own))[1].append(profile)
    bundles: dict[str, Path] = {}
    for payload, profiles, own in served.values():
        xq = hil.quantized_test(payload, test)
        selftest = hil.golden_vectors(payload, xq, n=config.selftest_count, tolerance=config.selftest_tolerance)
        bundles |= sign_release(
            payload,
            profiles,
            signer,
            out_dir,
            model_name=ctx.tracking.registered_model,
            model_version=version,
            sequence=sequence,
            selftest=selftest,
            lineage=own,
            preprocessing=input_transform(ctx, payload),
            kek_for=(lambda c: ensure_kek(config.kek_path(ctx.env.home, c))[0]) if config.encrypt else None,
            write_manifests=True,
        )
    return bundles


def resign_release(
    ctx: Context, old_bundles: dict[str, Path], *, version: str, sequence: int, out_dir: Path
) -> dict[str, Path]:
    """A released set of bundles signed again at a higher sequence (a rollback keeps anti-rollback
    intact): each class keeps its own payload, golden vectors, input transform and lineage, all
    from the data that release was built on, never from the current data."""
    import io

    from tinymlops.bundle import ManifestDraft, build_bundle, load_trust, verify_bundle

    config = BundleConfig.load_from(ctx.env.root)
    keys = signing_keys(ctx)
    signer = load_signer(keys.dir, key_passphrase())
    trust = load_trust(keys.root_public)
    profiles = target_classes(load_profiles(ctx.env.root))
    out = {}
    for device_class, path in old_bundles.items():
        kek = ensure_kek(config.kek_path(ctx.env.home, device_class))[0] if config.encrypt else None
        sink = io.BytesIO()
        result = verify_bundle(path, trust, kek=kek, sink=sink)
        m = result.manifest
        if not result.ok or m is None or device_class not in profiles:
            continue  # expired, revoked or for a class no longer targeted: nothing to roll back to
        draft = ManifestDraft(
            model_name=m.model_name,
            model_version=version,
            sequence=sequence,
            vendor=profiles[device_class].vendor,
            device_class=device_class,
            arena_bytes=m.arena_bytes,
            ops=m.ops,
            lineage=m.lineage,
            selftest=m.selftest,
            preprocessing=m.preprocessing,
            image=m.image,
        )
        out[device_class] = out_dir / f"{device_class}.bundle"
        manifest = build_bundle(sink.getvalue(), draft, signer, out[device_class], kek=kek)
        write_json(out_dir / f"{device_class}.manifest.json", manifest.json_view())
        if hil.reference_for(path).is_file():  # the .tflite the image was compiled from travels along
            shutil.copyfile(hil.reference_for(path), hil.reference_for(out[device_class]))
    return out


@task(name="build-bundles", cache_policy=NO_CACHE)
def build_bundles(
    ctx: Context,
    tracker: Tracker,
    tflite_dir: Path,
    data_md5: str,
    watermark_id: str | None,
    release: Release | None = None,
) -> Path:
    """One bundle per targeted class: the main model's, or the class's variant's when `release`
    says a variant serves it (its lineage names the variant's nested MLflow run); a class nothing
    serves gets no bundle (HIL and the rollout skip it)."""
    git_sha = git_state(ctx.env.root).sha

    def lineage(run_id: str) -> Lineage:
        return Lineage(mlflow_run_id=run_id, git_sha=git_sha, data_md5=data_md5, watermark_id=watermark_id)

    main = (tflite_dir / stages.INT8_TFLITE).read_bytes()
    if release is None:
        models: dict[str, bytes] = {c: main for c in target_classes(load_profiles(ctx.env.root))}
        lineages = {c: lineage(tracker.run_id) for c in models}
    else:
        models = {c: s.int8_path.read_bytes() for c, s in release.served.items()}
        lineages = {c: lineage(s.run_id or tracker.run_id) for c, s in release.served.items()}
    out_dir = ctx.run_dir / "bundles"
    # Anti-rollback: a device only installs a higher sequence; seconds since the epoch only grow.
    bundles = sign_per_class(
        ctx, models, version=tracker.run_id[:12], sequence=int(time.time()), lineage=lineages, out_dir=out_dir
    )
    kid = load_signer(signing_keys(ctx).dir, key_passphrase()).kid
    for device_class, bundle in bundles.items():
        manifest = out_dir / f"{device_class}.manifest.json"
        tracker.log_bundle(device_class, bundle, manifest, sha256_file(bundle), kid, hil.reference_for(bundle))
    keys = signing_keys(ctx)
    tracker.log_public_keys(keys.root_public, keys.signing_statement)
    return out_dir


@task(name="record-baselines", cache_policy=NO_CACHE)
def record_baselines(
    ctx: Context,
    tracker: Tracker,
    bundle_dir: Path,
    tflite_dir: Path,
    hil_reports: list[hil.HILReport],
    release: Release | None = None,
) -> Path | None:
    """Per class and model, the production-monitoring baseline (class mix, top-1 confidence and
    latency histograms from the validation split on the device runtime), written beside the
    bundles as baselines.json and logged with them, so whoever publishes the bundles to a fleet
    server publishes the baselines too (tinymlops.fleet.remote.publish). Each class is measured on
    the int8 model its bundle carries (the main model or its variant); the sequence is the bundle's."""
    import json

    from tinymlops.bundle import read_manifest
    from tinymlops.pipeline.baseline import measure_baseline

    main = (tflite_dir / stages.INT8_TFLITE).read_bytes()
    profiles = target_classes(load_profiles(ctx.env.root))
    if release is None:
        models: dict[str, bytes] = dict.fromkeys(profiles, main)
    else:
        models = {c: s.int8_path.read_bytes() for c, s in release.served.items()}
    val = load_split(ctx.prepared_dir, "val")
    latency: dict[str, float] = {}
    for report in hil_reports:
        if report.estimate is not None and report.status == "passed":
            latency[report.device_class] = max(latency.get(report.device_class, 0.0), report.estimate.latency_ms)
    baselines = []
    measured: dict[bytes, Any] = {}  # classes sharing a model share one TFLM pass
    for path in sorted(bundle_dir.rglob("*.bundle")):
        device_class = path.stem
        if device_class not in profiles or device_class not in models:
            continue
        manifest = read_manifest(path)
        model = models[device_class]
        if model not in measured:
            measured[model] = measure_baseline(
                model,
                val,
                device_class=device_class,
                sequence=manifest.sequence,
                latency_ms=None,
                arena_bytes=max(p.arena_budget_bytes for p in profiles.values()),
            )
        baseline = measured[model].model_copy(
            update={
                "device_class": device_class,
                "sequence": manifest.sequence,
                "model_name": manifest.model_name,
                "model_version": manifest.model_version,
                "latency_hist": latency_hist(latency.get(device_class), measured[model].samples),
            }
        )
        baselines.append(baseline.model_dump(mode="json"))
    if not baselines:
        return None
    out = bundle_dir / "baselines.json"
    out.write_text(json.dumps(baselines, indent=2))
    tracker.artifact(out, Artifact.BUNDLES)
    print(
        f"monitoring baselines for {', '.join(b['device_class'] for b in baselines)} ({len(val.y)} validation samples)"
    )
    return out
