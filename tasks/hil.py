"""Hardware-in-the-loop tasks: one mapped task per device profile (the emulated parts run their
firmware on threads in parallel: the emulator releases the GIL), then the release gate."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.context import Context
from tinymlops.bundle import BundleConfig, load_kek, load_trust
from tinymlops.bundle.quota import quota_issuer
from tinymlops.device import hil
from tinymlops.device.profiles import DeviceProfile
from tinymlops.errors import ModelError
from tinymlops.ml.data.split import load_split
from tinymlops.settings import key_passphrase
from tinymlops.tracking import Tracker


@task(name="hil", cache_policy=NO_CACHE, task_run_name="hil-{profile.name}")
def hil_profile(ctx: Context, profile: DeviceProfile, bundle_dir: Path) -> hil.HILReport:
    bundle = hil.route_bundles(bundle_dir, [profile])[profile.name]
    if bundle is None:
        report = hil.no_bundle_report(profile, bundle_dir)
    else:
        config = BundleConfig.load_from(ctx.env.root)
        keys = config.keys_path(ctx.env.home)
        kek = load_kek(config.kek_path(ctx.env.home, profile.device_class)) if config.encrypt else None
        test = load_split(ctx.prepared_dir, "test")
        trust = load_trust(keys / "root.pub")
        report = hil.run_hil(bundle, profile, trust, test, ctx.run_dir / "devices", kek=kek)
        # the metering key (`tinymlops keys metering`) when there is one, else root.key certifies a
        # one-day in-memory metering key (it never signs a token itself); None when there is neither
        issue = quota_issuer(keys, key_passphrase())  # encrypted like the signing key when a passphrase is set
        if report.status == "passed" and report.image_digest is not None and issue is not None:
            # the quota refusal on the emulated part: 3 inferences allowed, 5 asked (hil.metering_check)
            report = hil.with_metering(report, hil.metering_check(bundle, profile, trust, test, issue, kek=kek))
    report.write(ctx.run_dir / "hil" / f"{profile.name}.json")
    return report


@task(name="hil-gate", cache_policy=NO_CACHE)
def hil_gate(
    ctx: Context, tracker: Tracker, reports: list[hil.HILReport], seconds: float | None = None
) -> list[hil.HILReport]:
    """Log every profile as a nested MLflow run and the matrix as a Prefect table; stop the
    release if a targeted profile failed (excluded ones are skipped by the rollout). `seconds`: the
    HIL's wall time in the run (all profiles, in parallel)."""
    for report in reports:
        tracker.log_hil_profile(report, ctx.run_dir / "hil" / f"{report.profile}.json")
    markdown = hil.summary_markdown(reports)
    tracker.log_hil_summary(
        Counter(r.status for r in reports), markdown, hil.plot(reports, ctx.run_dir / "hil.png"), seconds
    )
    create_table_artifact(
        [dict(zip(hil.SUMMARY_HEADER, row, strict=True)) for row in hil.summary_rows(reports)],
        key="hil-matrix",
        description="HIL: every device profile against its budgets",
    )
    print(hil.summary_table(reports) + (f"HIL wall time {seconds:.1f} s\n" if seconds is not None else ""))
    failures = hil.gate_failures(reports)
    if failures:
        raise ModelError(f"HIL gate failed: {'; '.join(failures)}")
    return reports
