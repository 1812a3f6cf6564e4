"""Bundle speed: streaming verification against raw SHA-256, and signs/verifies per second.

  verify throughput — verify_bundle on a 256 MB plaintext bundle file (the full check: container,
                      COSE, key statement, signature, policy, payload streamed in 1 MiB chunks),
                      against hashlib.sha256 over the same 256 MB already in memory, in one run.
                      Goal: ratio >= 0.8. Also an encrypted bundle (AES-256-GCM decrypt + SHA-256 of
                      ciphertext and plaintext), for which there is no goal.
  small manifests   — COSE_Sign1 signs/s, full verify_bundle calls/s on a 16 KB model (the size of
                      our int8 digits model), and bundle builds/s.
Raw and verify runs are interleaved, ROUNDS times; best of each, and the median of the pairwise
ratios (the machine is shared, so single runs are noisy). Prints the figures and logs them to MLflow
(experiment `tinymlops-bench`).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tinymlops  # noqa: F401,E402

MB = 1 << 20
LARGE_MB = int(os.environ.get("TINYMLOPS_BENCH_BUNDLE_MB", "256"))
ROUNDS = 5


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def per_second(fn, seconds: float = 1.5) -> float:
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        count += 1
    return count / elapsed


def serial(fn) -> None:
    """Run fn with the read/hash pipeline off: what one core (a gateway, a device emulator) gets."""
    from tinymlops.bundle import verify

    saved, verify.PIPELINE_MIN_BYTES = verify.PIPELINE_MIN_BYTES, 1 << 62
    try:
        fn()
    finally:
        verify.PIPELINE_MIN_BYTES = saved


def main() -> None:
    from tinymlops.bundle import (
        ManifestDraft,
        build_bundle,
        generate_kek,
        init_keys,
        load_signer,
        load_trust,
        read_manifest,
        verify_bundle,
    )
    from tinymlops.bundle import manifest as mf
    from tinymlops.settings import Environment, TrackingConfig
    from tinymlops.tracking import Tracker

    work = Path(tempfile.mkdtemp(prefix="tinymlops-bench-bundle-"))
    try:
        init_keys(work / "keys")
        signer, trust = load_signer(work / "keys"), load_trust(work / "keys" / "root.pub")
        kek = generate_kek()
        draft = ManifestDraft(
            model_name="bench",
            model_version="1",
            sequence=1,
            vendor="acme.example",
            device_class="m4",
            arena_bytes=24_000,
            ops=["CONV_2D", "FULLY_CONNECTED", "SOFTMAX"],
            lifetime=timedelta(days=1),
        )

        payload = os.urandom(LARGE_MB * MB)
        (work / "payload.bin").write_bytes(payload)
        start = time.perf_counter()
        build_bundle(work / "payload.bin", draft, signer, work / "large.bundle")
        build_seconds = time.perf_counter() - start
        build_bundle(work / "payload.bin", draft, signer, work / "large-enc.bundle", kek)
        (work / "payload.bin").unlink()

        def check(path: Path, **kw) -> None:
            assert verify_bundle(path, trust, **kw).ok

        # interleaved rounds, so load from other processes on a shared machine hits both sides alike
        raw_t, plain_t, enc_t, serial_t = [], [], [], []
        for _ in range(ROUNDS):
            raw_t.append(best_of(1, lambda: hashlib.sha256(payload).digest()))
            plain_t.append(best_of(1, lambda: check(work / "large.bundle")))
            enc_t.append(best_of(1, lambda: check(work / "large-enc.bundle", kek=kek)))
            serial_t.append(best_of(1, lambda: serial(lambda: check(work / "large.bundle"))))
        raw, plain, encrypted, single = min(raw_t), min(plain_t), min(enc_t), min(serial_t)
        paired = sorted(r / p for r, p in zip(raw_t, plain_t, strict=True))
        payload = b""  # free the 256 MB before the small-manifest figures

        small = os.urandom(16 * 1024)
        build_bundle(small, draft, signer, work / "small.bundle")
        small_bundle = (work / "small.bundle").read_bytes()
        encoded = mf.encode(read_manifest(small_bundle))
        signs = per_second(lambda: signer.sign(encoded))
        verifies = per_second(lambda: verify_bundle(io.BytesIO(small_bundle), trust))
        builds = per_second(lambda: build_bundle(small, draft, signer, work / "b.bundle"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    size = LARGE_MB * MB
    figures = {
        "bundle_payload_mb": float(LARGE_MB),
        "raw_sha256_mb_per_s": size / raw / MB,
        "verify_plain_mb_per_s": size / plain / MB,
        "verify_plain_ratio_to_raw_sha256": raw / plain,
        "verify_plain_ratio_median_of_pairs": paired[len(paired) // 2],
        "verify_plain_serial_mb_per_s": size / single / MB,
        "verify_plain_serial_ratio_to_raw_sha256": raw / single,
        "verify_encrypted_mb_per_s": size / encrypted / MB,
        "verify_encrypted_ratio_to_raw_sha256": raw / encrypted,
        "build_plain_mb_per_s": size / build_seconds / MB,
        "manifest_signs_per_s": signs,
        "bundle_verifies_per_s_16kb": verifies,
        "bundle_builds_per_s_16kb": builds,
    }
    print("\n== tinymlops bundle benchmark ==")
    print(f"payload                               : {LARGE_MB} MB")
    print(f"raw hashlib.sha256 (in memory)        : {figures['raw_sha256_mb_per_s']:8.1f} MB/s")
    print(
        f"verify_bundle, plaintext (from file)  : {figures['verify_plain_mb_per_s']:8.1f} MB/s   "
        f"ratio {figures['verify_plain_ratio_to_raw_sha256']:.3f} best/best, "
        f"{figures['verify_plain_ratio_median_of_pairs']:.3f} median of {ROUNDS} pairs   (goal >= 0.8)"
    )
    print(
        f"verify_bundle, plaintext, 1 thread    : {figures['verify_plain_serial_mb_per_s']:8.1f} MB/s   "
        f"ratio {figures['verify_plain_serial_ratio_to_raw_sha256']:.3f}   (read/hash pipeline off)"
    )
    print(
        f"verify_bundle, AES-256-GCM + KEK      : {figures['verify_encrypted_mb_per_s']:8.1f} MB/s   "
        f"ratio {figures['verify_encrypted_ratio_to_raw_sha256']:.3f}   (no goal: decrypt + two digests)"
    )
    print(f"build_bundle, plaintext (from file)   : {figures['build_plain_mb_per_s']:8.1f} MB/s")
    print(f"manifest COSE_Sign1 signs             : {signs:8.0f} /s")
    print(f"full verify_bundle, 16 KB model       : {verifies:8.0f} /s")
    print(f"build_bundle, 16 KB model             : {builds:8.0f} /s")

    os.environ.pop("TINYMLOPS_HOME", None)
    env = Environment.from_env(REPO)
    tracker = Tracker.start(env, TrackingConfig(experiment="tinymlops-bench"), "bundle", {"bench": "bundle"})
    tracker.metrics(figures)
    tracker.finish(True)
    print(f"logged to MLflow run {tracker.run_id} ({env.tracking_uri})")


if __name__ == "__main__":
    sys.exit(main())
