"""Wall time of a simulated four-group rollout (1 % → 10 % → 50 % → 100 %, configs/rollout.yaml) of
a good release to a 10,000-device fleet across four device classes: the real fleet server on
loopback (SQLite WAL) in processes of its own, devices as asyncio tasks over real HTTP, a seeded
2 % of them installing on the real firmware emulator, behaviour measured on TFLite Micro from the
default model. Goal ≤ 60 s. Prints the figures (with the CPU seconds of the simulating process and
of the server processes, to show which side bounds the wall time) and logs them to MLflow
(experiment tinymlops-bench).
Usage: python bench/fleet_rollout.py [--devices 10000] [--firmware-share 0.02] [--server-workers N]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 60.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--firmware-share", type=float, default=0.02)
    ap.add_argument("--server-workers", type=int, default=None, help="default: SimulationConfig's")
    args = ap.parse_args()

    from tinymlops.bundle import init_keys, load_signer
    from tinymlops.device.firmware import fit_problems
    from tinymlops.device.profiles import load_profiles
    from tinymlops.fleet.policy import RolloutPolicy
    from tinymlops.fleetsim.simulation import build_release, simulate_rollout
    from tinymlops.fleetsim.simulator import SimulationConfig
    from tinymlops.ml.data.split import load_split
    from tinymlops.pipeline import stages
    from tinymlops.settings import Environment, TrackingConfig, load_params
    from tinymlops.tracking import Tracker

    with tempfile.TemporaryDirectory(prefix="bench-fleet-rollout-") as tmp:
        work = Path(tmp)
        params = load_params(REPO / "params.yaml")
        stages.ingest(params, REPO, work / "raw")
        stages.prepare(params, work / "raw", work / "prepared")
        stages.train(params, work / "prepared", work / "keras")
        stages.quantize(params, work / "prepared", work / "keras", work / "tflite")
        model = (work / "tflite" / stages.INT8_TFLITE).read_bytes()
        profiles = [p for p in load_profiles(REPO) if p.target and not fit_problems(model, p)][:4]
        keys = init_keys(work / "keys", None, now=datetime.now(timezone.utc) - timedelta(days=1))
        signer = load_signer(work / "keys", None)
        field = load_split(work / "prepared", "test").x
        release = build_release(model, profiles, signer, work / "r2", sequence=2, model_version="r2", field_x=field)
        back = build_release(model, profiles, signer, work / "r1b", sequence=3, model_version="r1b", field_x=field)
        config = SimulationConfig(
            devices=args.devices,
            classes=[p.device_class for p in profiles],
            profiles=profiles,
            field_data=work / "prepared",
            firmware_share=args.firmware_share,
        )
        if args.server_workers:
            config = config.model_copy(update={"server_workers": args.server_workers})
        cpu, children = time.process_time(), _children_cpu()
        result = simulate_rollout(
            "r2", release, "r1b", back, keys.root_public, config, RolloutPolicy.load_from(REPO), work / "fleet"
        )
        cpu, children = time.process_time() - cpu, _children_cpu() - children
    figures = {
        "rollout_devices": float(result.devices),
        "rollout_wall_s": result.seconds,
        "rollout_rounds": float(len(result.rounds)),
        "rollout_firmware_devices": float(result.firmware_devices),
        "rollout_succeeded": float(result.status == "succeeded"),
        "rollout_simulator_cpu_s": cpu,
        "rollout_server_cpu_s": children,
    }
    verdict = "meets" if result.seconds <= GOAL_S else "misses"
    print(
        f"four-group rollout of {result.devices:,} devices over {len(profiles)} classes "
        f"({result.firmware_devices} on the real firmware): {result.status} in {result.seconds:.1f} s wall, "
        f"{len(result.rounds)} rounds — {verdict} the {GOAL_S:.0f} s goal "
        f"(CPU: simulator {cpu:.1f} s, {config.server_workers} server process(es) {children:.1f} s)"
    )
    env = Environment.from_env(REPO)
    tracker = Tracker.start(
        env, TrackingConfig(experiment="tinymlops-bench"), "fleet-rollout", {"bench": "fleet_rollout"}
    )
    tracker.metrics(figures)
    tracker.finish(True)
    print(f"logged to MLflow run {tracker.run_id} ({env.tracking_uri})")


def _children_cpu() -> float:
    """CPU seconds of finished child processes (the fleet server's, once simulate_rollout returns)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
