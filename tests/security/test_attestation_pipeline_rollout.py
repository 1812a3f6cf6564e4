"""The pipeline's staged rollout (simulate_rollout over the release the pipeline builds: the
session's int8 model, one signed bundle per class) succeeds end to end with attestation on:
keys at enrolment, "confirmed" only on fresh evidence, signed telemetry; the canary group runs the
C agent on its part's emulated core (tasks/rollout.py: emulated_canary), which installs the
release's bundle and signs the evidence and telemetry; the usage reconciliation comes back with
the result (what the rollout run logs to MLflow)."""

from __future__ import annotations

from pathlib import Path

from tests.unit.fleetsim.test_fleet_simulation import POLICY, config, releases  # noqa: F401  (fixture)


def test_pipeline_staged_rollout_succeeds_with_attestation_on(releases, prepared_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from tinymlops.fleetsim.simulation import simulate_rollout

    trust, profiles, made = releases
    cfg = config(profiles, prepared_dir, devices=20).model_copy(update={"attestation": True, "emulated_canary": True})
    result = simulate_rollout("good", made["good"], "back", made["back"], trust, cfg, POLICY, tmp_path / "sim")
    assert result.status == "succeeded", result.reports[-1].reason
    assert result.reports[-1].counts.confirmed == 20  # every confirmation carried verified evidence
    assert result.emulated_devices >= len(profiles)  # the canaries: one part per class on the C agent
    assert len(result.usage["devices"]) == 20 and not any(d["counter_alarm"] for d in result.usage["devices"])
    assert all(d["inference_count"] == 0 for d in result.usage["devices"])  # counters reconciled from evidence
    booted = [d["boot_count"] for d in result.usage["devices"]]
    assert all(b is not None and b >= 1 for b in booted)  # every evidence carried a boot count
