"""Variant tasks: a model for every targeted device class (docs/variants.md).

The main model serves every class whose limits it meets. For each other class the variant search
(tinymlops.ml.variants) measures candidates untrained, then trains the most promising feasible
ones on the same data and takes each through the same steps as the main model, with the same
tasks' code: watermark embed (cached), int8 quantization (cached), evaluation and quality gates on
the test split, watermark verification on the int8 bytes. Each trained candidate is a nested MLflow
run; the release (which model serves which class) and the trade-off plot go to the parent run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.context import Context
from tasks.model import TrainedModel, quantize_model
from tasks.protect import embed_watermark, verify_watermark
from tasks.release import target_classes
from tinymlops.device.profiles import DeviceProfile, load_profiles
from tinymlops.errors import TinyMLOpsError
from tinymlops.ml import variants
from tinymlops.ml.data.split import load_meta, load_split
from tinymlops.ml.evaluate import EvaluationReport
from tinymlops.pipeline import cache, stages
from tinymlops.tracking import Tag, Tracker
from tinymlops.util.io import write_json


def _train_variant(ctx: Context, data_md5: str, candidate: variants.Candidate) -> TrainedModel:
    p = ctx.params
    key = cache.key(
        data=data_md5,
        seed=p.seed,
        architecture=candidate.architecture,
        options=candidate.options(),
        train=p.train,
        code=cache.code_fingerprint(cache.TRAIN_CODE),
        builder=cache.builder_fingerprint(candidate.architecture, ctx.env.root),
    )
    model_dir, hit = cache.cached_dir(
        ctx.env.cache_dir,
        "train",
        key,
        lambda out: stages.train(
            p,
            ctx.prepared_dir,
            out,
            root=ctx.env.root,
            architecture=candidate.architecture,
            options=candidate.options(),
        ),
    )
    return TrainedModel(model_dir=model_dir, cache_key=key, cache_hit=hit)


def _derive(
    ctx: Context, parent: Tracker, data_md5: str, candidate: variants.Candidate, profiles: list[DeviceProfile]
) -> variants.Trained:
    """Train → watermark → int8 → evaluate → verify, as the main model; one nested run."""
    child = parent.child(f"variant-{candidate.name}", {Tag.VARIANT_NAME: candidate.name})
    ok = False
    try:
        trained = _train_variant(ctx, data_md5, candidate)
        child.log_training(stages.read_train_report(trained.model_dir), trained.model_dir, trained.cache_hit)
        marked = embed_watermark.fn(ctx, child, trained)
        tflite_dir = quantize_model.fn(ctx, child, marked)
        int8_path = tflite_dir / stages.INT8_TFLITE
        report_dir = ctx.run_dir / "variants" / candidate.name
        evaluation: EvaluationReport = stages.evaluate(
            ctx.params, ctx.prepared_dir, int8_path, report_dir, marked.model_dir
        )
        child.log_evaluation(evaluation, report_dir)
        result = variants.Trained(
            name=candidate.name,
            footprint=variants.measure(candidate.name, int8_path.read_bytes(), profiles),
            accuracy_float=evaluation.accuracy_float,
            accuracy_int8=evaluation.accuracy_int8_tflm,
            gate_failures=stages.quality_gates(ctx.params, evaluation),
            int8_path=int8_path,
            run_id=child.run_id,
        )
        try:
            owned = verify_watermark.fn(ctx, child, tflite_dir, marked).owned  # not owned: shipped unmarked
            result = result.model_copy(update={"watermarked": owned})
        except TinyMLOpsError as exc:  # not detected on the int8 bytes: this candidate cannot ship
            result = result.model_copy(update={"gate_failures": [*result.gate_failures, f"watermark: {exc}"]})
        ok = True
        return result
    except TinyMLOpsError as exc:
        child.describe(f"Variant {candidate.name} not shipped: {exc}")  # why this nested run FAILED, on its page
        return variants.Trained(
            name=candidate.name,
            footprint=variants.Footprint(name=candidate.name, error=str(exc)),
            accuracy_float=None,
            accuracy_int8=None,
            error=str(exc),
            run_id=child.run_id,
        )
    finally:
        child.finish(ok)


@task(name="variants", cache_policy=NO_CACHE)
def derive_variants(
    ctx: Context, tracker: Tracker, data_md5: str, tflite_dir: Path, evaluation: EvaluationReport
) -> variants.Release:
    """The release: the main model for each class it fits, else the best variant that does."""
    p = ctx.params
    profiles = list(target_classes(load_profiles(ctx.env.root)).values())
    main_path = tflite_dir / stages.INT8_TFLITE
    main = variants.measure(variants.MAIN, main_path.read_bytes(), profiles)
    release = variants.Release()
    missed: dict[str, DeviceProfile] = {}
    for profile in profiles:
        why = variants.misses(main, profile)
        if not why:
            release.served[profile.device_class] = variants.Served(
                device_class=profile.device_class,
                variant=variants.MAIN,
                int8_path=main_path,
                run_id=tracker.run_id,
                accuracy_int8=evaluation.accuracy_int8_tflm,
            )
        else:
            missed[profile.device_class] = profile
            print(f"variants: the main model misses {profile.device_class}: {'; '.join(why)}")
    footprints: dict[str, variants.Footprint] = {}
    trained: dict[str, variants.Trained] = {}
    if missed and p.variants.enabled:
        meta = load_meta(ctx.prepared_dir)
        train_split = load_split(ctx.prepared_dir, "train")
        sample = np.random.default_rng(p.seed).permutation(len(train_split.x))[:64]
        grid = variants.candidates(
            p.model.architecture, p.variants.families, p.variants.widths, p.variants.depths, ctx.env.root
        )
        by_name = {c.name: c for c in grid}
        for candidate in grid:
            footprints[candidate.name] = variants.footprint(
                candidate,
                tuple(meta.input_shape),
                len(meta.labels),
                train_split.x[sample],
                profiles,
                p.seed,
                ctx.env.root,
            )
        plan = variants.to_train(footprints, missed, p.variants.per_class, p.variants.max_trained)
        for name in dict.fromkeys(n for names in plan.values() for n in names):
            print(f"variants: training {name}")
            trained[name] = _derive(ctx, tracker, data_md5, by_name[name], profiles)
    for device_class, profile in missed.items():
        best = variants.choose(profile, list(trained.values()))
        main_why = variants.misses(main, profile)
        if best is None:
            tried = [f"{t.name}: {'; '.join(t.gate_failures) or t.error or 'does not fit'}" for t in trained.values()]
            why_not = "variants disabled" if not p.variants.enabled else ("; ".join(tried) or "no candidate fits")
            release.unserved[device_class] = f"main model misses ({'; '.join(main_why)}); {why_not}"
            continue
        assert best.int8_path is not None
        release.served[device_class] = variants.Served(
            device_class=device_class,
            variant=best.name,
            int8_path=best.int8_path,
            run_id=best.run_id,
            accuracy_int8=best.accuracy_int8,
            main_misses=main_why,
        )
    release = release.model_copy(
        update={
            "candidates": list(footprints.values()),
            "trained": list(trained.values()),
            "main": main,
            "main_accuracy_int8": evaluation.accuracy_int8_tflm,
        }
    )
    for t in trained.values():
        serves = sorted(c for c, s in release.served.items() if s.variant == t.name)
        Tracker(tracker.tracking_uri, t.run_id).log_variant(t, serves)
    chosen = {c: s.variant for c, s in release.served.items()}
    plot = None
    if footprints:
        plot = variants.plot_tradeoff(
            profiles, footprints, trained, main, evaluation.accuracy_int8_tflm, chosen, ctx.run_dir / "variants.png"
        )
    markdown = release_markdown(release, main, evaluation.accuracy_int8_tflm, profiles)
    print(markdown)
    path = write_json(ctx.run_dir / "variants" / "release.json", release.model_dump(mode="json"))
    tracker.log_release(release, markdown, plot, path)
    return release


def release_markdown(
    release: variants.Release, main: variants.Footprint, main_accuracy: float | None, profiles: list[DeviceProfile]
) -> str:
    trained = {t.name: t for t in release.trained}
    lines = [
        "| device class | served by | int8 acc. | vs main | int8 size | arena | MACs | latency |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for profile in profiles:
        served = release.served.get(profile.device_class)
        if served is None:
            lines.append(f"| {profile.device_class} | none | — | — | — | — | — | — |")
            continue
        fp = main if served.variant == variants.MAIN else trained[served.variant].footprint
        acc = served.accuracy_int8
        delta = "—" if acc is None or main_accuracy is None else f"{100 * (acc - main_accuracy):+.1f} pt"
        shown = "—" if acc is None else f"{acc:.4f}"
        lines.append(
            f"| {profile.device_class} | {served.variant} | {shown} | {delta} | {fp.int8_bytes / 1024:.1f} KB | "
            f"{fp.arena_bytes / 1024:.1f} KB | {fp.macs:,} | {fp.latency_ms.get(profile.device_class, 0):.2f} ms |"
        )
    notes = [f"- **{c}** not served: {why}" for c, why in release.unserved.items()]
    notes += [
        f"- **{s.device_class}**: main model misses {'; '.join(s.main_misses)}"
        for s in release.served.values()
        if s.main_misses
    ]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


@task(name="tag-release", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def tag_release(ctx: Context, tracker: Tracker, version: str, release: variants.Release, data_md5: str) -> None:
    """Registry: the candidate version records which variant serves which class (and its data)."""
    if not version:
        return
    tags = {Tag.SERVED_BY + c: s.variant for c, s in release.served.items()}
    tags |= {Tag.SERVED_BY + c: "none" for c in release.unserved}
    tracker.tag_model_version(ctx.tracking, version, {**tags, Tag.DATA_SOURCE: data_md5})
