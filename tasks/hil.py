"""Hardware-in-the-loop tasks: one mapped task per device profile, then the release gate."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.context import Context
from tinymlops import hil
from tinymlops.bundle import BundleConfig, load_kek, load_trust
from tinymlops.data.split import load_split
from tinymlops.device.profiles import DeviceProfile
from tinymlops.errors import ModelError
from tinymlops.tracking import Tracker


@task(name="hil", cache_policy=NO_CACHE, task_run_name="hil-{profile.name}")
def hil_profile(ctx: Context, profile: DeviceProfile, bundle_dir: Path) -> hil.HILReport:
    bundle = hil.route_bundles(bundle_dir, [profile])[profile.name]
    if bundle is None:
        report = hil.no_bundle_report(profile)
    else:
        config = BundleConfig.load_from(ctx.env.root)
        keys = config.keys_path(ctx.env.home)
        kek = load_kek(config.kek_path(ctx.env.home, profile.device_class)) if config.encrypt else None
        test = load_split(ctx.prepared_dir, "test")
        report = hil.run_hil(bundle, profile, load_trust(keys / "root.pub"), test, ctx.run_dir / "devices", kek=kek)
    report.write(ctx.run_dir / "hil" / f"{profile.name}.json")
    return report


@task(name="hil-gate", cache_policy=NO_CACHE)
def hil_gate(ctx: Context, tracker: Tracker, reports: list[hil.HILReport]) -> list[hil.HILReport]:
    """Log every profile as a nested MLflow run and the matrix as a Prefect table; stop the
    release if a targeted profile failed (excluded ones are skipped by the rollout)."""
    for report in reports:
        tracker.log_hil_profile(report, ctx.run_dir / "hil" / f"{report.profile}.json")
    markdown = hil.summary_markdown(reports)
    tracker.log_hil_summary(Counter(r.status for r in reports), markdown, hil.plot(reports, ctx.run_dir / "hil.png"))
    create_table_artifact(
        [dict(zip(hil.SUMMARY_HEADER, row, strict=True)) for row in hil.summary_rows(reports)],
        key="hil-matrix",
        description="HIL: every device profile against its budgets",
    )
    print(markdown)
    failures = hil.gate_failures(reports)
    if failures:
        raise ModelError(f"HIL gate failed: {'; '.join(failures)}")
    return reports
