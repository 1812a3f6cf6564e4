"""Attestation benchmark: what evidence costs a device and what signed telemetry costs the server.

  per core      emulated cycles for the C agent to build and sign one evidence report (EAT claims,
                COSE_Sign1, Ed25519 with the device key from the provisioning page), on each
                part's emulated core (flash wait states counted), and the report's bytes
  report size   bytes of a report with both slots filled (the Python encoder writes the agent's
                bytes: tests/unit/fleet/test_identity.py)
  server        telemetry windows per second through the fleet app (in-process ASGI, SQLite), unsigned
                JSON vs COSE_Sign1 signed by the device key and verified against the enrolled key,
                measured in one run on this machine; and the verification alone per window

Prints the figures and logs them to MLflow (experiment tinymlops-bench).

    PYTHONPATH=. .venv/bin/python bench/attestation.py [--windows 400]
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = {"cortex-m0plus": "stm32l072-lora", "cortex-m4f": "nrf52840", "cortex-m7": "stm32h7a3",
         "cortex-m33": "stm32u585", "rv32imc": "esp32c3"}  # fmt: skip


def per_core() -> dict[str, dict]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tinymlops.device.agent.emulated import Board, EmuDevice
    from tinymlops.device.profiles import get_profile, load_profiles

    profiles = load_profiles(REPO)
    root = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    out = {}
    for core, name in PARTS.items():
        profile = get_profile(profiles, name)
        try:
            board = Board(profile, "budget", count_flash_reads=True)
        except Exception:  # noqa: BLE001  (the M0+ agent does not fit its RAM budget: docs/agent.md)
            board = Board(profile, "all", count_flash_reads=True)
        dev = EmuDevice(profile, board=board)
        dev.provision(root, uuid.uuid4(), uuid.uuid4())
        dev.evidence(secrets.token_bytes(16))  # first call boots the part
        report = dev.evidence(secrets.token_bytes(16))
        out[core] = {"part": name, "cycles": dev.last_cycles, "bytes": len(report),
                     "ms": dev.last_cycles / profile.clock_hz * 1e3, "mhz": profile.clock_hz / 1e6}  # fmt: skip
    return out


def full_report_bytes() -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tinymlops.bundle.evidence import Evidence, SlotClaim, sign_evidence

    ev = Evidence(
        nonce=secrets.token_bytes(16), device_id=uuid.uuid4(), class_id=uuid.uuid4(), running_slot=1,
        slots=(SlotClaim(state="inactive", sequence=1_764_000_000, digest="ab" * 32),
               SlotClaim(state="active", sequence=1_764_000_100, digest="cd" * 32)),
        floor=1_764_000_100, revocation_version=3, inference_count=1_234_567, running_sequence=1_764_000_100,
        state_record=42, quota_serial=7, quota_limit=2_000_000, boot_count=1_000,
    )  # fmt: skip
    return len(sign_evidence(ev, Ed25519PrivateKey.generate()))


def server(windows: int) -> dict[str, float]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from fastapi.testclient import TestClient

    from tinymlops.bundle.evidence import CONTENT_TELEMETRY, sign_payload
    from tinymlops.fleet.api import create_app
    from tinymlops.fleet.config import FleetSettings
    from tinymlops.fleet.telemetry import CONFIDENCE_BINS, LATENCY_BINS, TelemetryAggregate

    now = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory() as tmp:
        admin = secrets.token_hex(8)
        settings = FleetSettings(db_url=f"sqlite:///{tmp}/fleet.db", bundle_dir=Path(tmp) / "b",
                                 admin_tokens={"bench": admin}, tick_seconds=None, attestation=True)  # fmt: skip
        with TestClient(create_app(settings)) as client:
            body = {
                "batch": "bench",
                "classes": ["m4"],
                "max_uses": 10,
                "expires_at": (now + timedelta(days=1)).isoformat(),
            }
            token = client.post("/v1/admin/provisioning-tokens", json=body,
                                headers={"Authorization": f"Bearer {admin}"}).json()["token"]  # fmt: skip
            key = Ed25519PrivateKey.generate()
            enrol = {"device_id": "d", "device_class": "m4", "ueid": uuid.uuid4().hex,
                     "public_key": key.public_key().public_bytes_raw().hex()}  # fmt: skip
            cred = client.post("/v1/enrol", json=enrol, headers={"Authorization": f"Bearer {token}"}).json()[
                "credential"
            ]
            auth = {"Authorization": f"Bearer {cred}"}
            lat, conf = [0] * LATENCY_BINS, [0] * CONFIDENCE_BINS
            lat[6] = conf[18] = 300

            def window(i: int) -> bytes:
                end = now - timedelta(seconds=i)
                return TelemetryAggregate(sequence=1, window_start=end - timedelta(minutes=5), window_end=end,
                                          inference_count=300, latency_hist=lat, confidence_hist=conf,
                                          class_hist=[150, 150], boot_count=1).model_dump_json().encode()  # fmt: skip

            plain = [window(i) for i in range(windows)]
            signed = [sign_payload(w, key, CONTENT_TELEMETRY) for w in plain]
            rates = {}
            for label, bodies, kind in (
                ("unsigned", plain, "application/json"),
                ("signed", signed, "application/cose"),
            ):
                started = time.perf_counter()
                for b in bodies:
                    r = client.post("/v1/devices/d/telemetry", content=b, headers={**auth, "Content-Type": kind})
                    assert r.status_code == 202, r.text
                rates[label] = windows / (time.perf_counter() - started)
            service = client.app.state.service  # type: ignore[attr-defined]
            started = time.perf_counter()
            for b in signed:
                service.identity.signed_window("d", b)
            verify_us = (time.perf_counter() - started) / windows * 1e6
    return {"unsigned_windows_per_s": rates["unsigned"], "signed_windows_per_s": rates["signed"],
            "signed_over_unsigned": rates["signed"] / rates["unsigned"], "verify_us_per_window": verify_us,
            "signed_window_bytes": len(signed[0]), "unsigned_window_bytes": len(plain[0])}  # fmt: skip


def rollout_wall(model_path: Path, prepared: Path, devices: int) -> dict[str, float]:
    """The pipeline's simulated rollout (tasks/rollout.py: every shipped profile, configs/rollout.yaml,
    attestation on), wall time with the Python signer only vs the canary group on the C agent on
    its emulated core (install, evidence, telemetry signatures), in one run on this machine."""
    from tinymlops import bundle as bundle_lib
    from tinymlops.device.profiles import load_profiles
    from tinymlops.fleet.policy import RolloutPolicy
    from tinymlops.fleetsim.simulation import build_release, simulate_rollout
    from tinymlops.fleetsim.simulator import SimulationConfig
    from tinymlops.ml.data.split import load_split

    profiles = load_profiles(REPO)
    policy = RolloutPolicy.load_from(REPO)
    model = model_path.read_bytes()
    field = load_split(prepared, "test").x
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        keys = bundle_lib.init_keys(Path(tmp) / "keys", None, now=datetime.now(timezone.utc) - timedelta(days=1))
        signer = bundle_lib.load_signer(Path(tmp) / "keys", None)
        made = {name: build_release(model, profiles, signer, Path(tmp) / name, sequence=seq, model_version=name,
                                    field_x=field) for name, seq in (("good", 2), ("back", 3))}  # fmt: skip
        for label, emulated in (("python", False), ("c_agent", True)):
            config = SimulationConfig(devices=devices, classes=sorted(made["good"]), seed=0, profiles=profiles,
                                      field_data=prepared, attestation=True, emulated_canary=emulated)  # fmt: skip
            started = time.perf_counter()
            result = simulate_rollout("good", made["good"], "back", made["back"], keys.root_public, config, policy,
                                      Path(tmp) / f"sim-{label}")  # fmt: skip
            out[f"rollout_s_{label}"] = time.perf_counter() - started
            out[f"rollout_emulated_devices_{label}"] = float(result.emulated_devices)
            out[f"rollout_succeeded_{label}"] = float(result.status == "succeeded")
    out["rollout_c_agent_over_python"] = out["rollout_s_c_agent"] / out["rollout_s_python"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=400)
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--rollout-model", type=Path, help="an int8 .tflite: also time the pipeline's rollout")
    parser.add_argument("--rollout-data", type=Path, help="its prepared data dir (test split = field data)")
    parser.add_argument("--rollout-devices", type=int, default=400)
    parser.add_argument("--only-rollout", action="store_true")
    args = parser.parse_args()
    roll = rollout_wall(args.rollout_model, args.rollout_data, args.rollout_devices) if args.rollout_model else {}
    if roll:
        print(f"pipeline rollout ({args.rollout_devices} devices, attestation on): Python signer "
              f"{roll['rollout_s_python']:.1f} s; canaries on the C agent (emulated cores, "
              f"{roll['rollout_emulated_devices_c_agent']:.0f} devices) {roll['rollout_s_c_agent']:.1f} s "
              f"(x{roll['rollout_c_agent_over_python']:.2f})")  # fmt: skip
    if args.only_rollout:
        return
    cores = per_core()
    full = full_report_bytes()
    srv = server(args.windows)
    w = 78
    print("=" * w)
    print(f"{'core (part)':28}{'cycles/report':>15}{'ms':>9}{'at MHz':>8}{'bytes (empty slots)':>20}")
    for core, r in cores.items():
        print(f"{core + ' (' + r['part'] + ')':28}{r['cycles']:15,.0f}{r['ms']:9.1f}{r['mhz']:8.0f}{r['bytes']:20}")
    print(f"report with both slots filled: {full} bytes")
    print("-" * w)
    print(f"server, telemetry windows/s (in-process ASGI, SQLite, {args.windows} windows each, one run):")
    print(f"  unsigned JSON {srv['unsigned_windows_per_s']:8.0f}/s   "
          f"signed+verified {srv['signed_windows_per_s']:8.0f}/s ratio {srv['signed_over_unsigned']:.2f}")  # fmt: skip
    print(
        f"  Ed25519 verification + decode alone: {srv['verify_us_per_window']:.0f} µs/window; "
        f"{srv['unsigned_window_bytes']} B JSON → {srv['signed_window_bytes']} B COSE"
    )
    print("=" * w)
    if args.no_mlflow:
        return
    from tinymlops.settings import Environment, TrackingConfig
    from tinymlops.tracking import Tracker

    os.environ.pop("TINYMLOPS_HOME", None)
    env = Environment.from_env(REPO)
    tracker = Tracker.start(env, TrackingConfig(experiment="tinymlops-bench"), "attestation", {"bench": "attestation"})
    metrics = {f"evidence_cycles_{c.replace('-', '_')}": r["cycles"] for c, r in cores.items()}
    metrics |= {"evidence_bytes_empty": float(cores["cortex-m4f"]["bytes"]), "evidence_bytes_full": float(full)}
    metrics |= {k: float(v) for k, v in srv.items()} | roll
    tracker.metrics(metrics)
    tracker.finish(True)
    print(f"logged to MLflow run {tracker.run_id} ({env.tracking_uri})")


if __name__ == "__main__":
    main()
