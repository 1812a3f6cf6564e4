"""How fast the CLI answers: `tinymlops --help` and `tinymlops bundle verify` on a 16 KB bundle,
each in a fresh process (median of 7), and what the CLI module costs to import. Logs the figures
to MLflow (experiment `tinymlops-bench`). Goal (house issue): bundle verify under 1 s."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tinymlops  # noqa: F401,E402

TINYMLOPS = str(Path(sys.executable).parent / "tinymlops")


def wall(args: list[str], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([TINYMLOPS, *args], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def import_ms() -> float:
    """Cumulative import time of tinymlops.cli (python -X importtime), median of 5."""
    values = []
    for _ in range(5):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import tinymlops.cli"], capture_output=True, text=True
        )
        last = [ln for ln in proc.stderr.splitlines() if ln.rstrip().endswith("| tinymlops.cli")][-1]
        values.append(int(re.split(r"\s*\|\s*", last)[1]) / 1000)
    return statistics.median(values)


def main() -> None:
    from tests.support.bundle_keys import sign_releases
    from tinymlops.bundle import init_keys, load_signer
    from tinymlops.settings import Environment, TrackingConfig
    from tinymlops.tracking import Tracker

    work = Path(tempfile.mkdtemp(prefix="tinymlops-bench-cli-"))
    init_keys(work / "keys")
    bundle = sign_releases(load_signer(work / "keys"), work, {"v1": 1}, ("c",), payload=8192)[("v1", "c")]
    figures = {
        "cli_import_ms": import_ms(),
        "cli_help_seconds": wall(["--help"]),
        "cli_bundle_verify_16kb_seconds": wall(
            ["bundle", "verify", str(bundle), "--trust", str(work / "keys" / "root.pub")]
        ),
    }
    print(f"{'figure':<36} {'value':>10}")
    for name, value in figures.items():
        print(f"{name:<36} {value:>10.3f}")
    print(f"bundle size {bundle.stat().st_size:,} B; goal: bundle verify < 1 s")
    env = Environment.from_env(REPO)
    tracker = Tracker.start(env, TrackingConfig(experiment="tinymlops-bench"), "cli", {"bench": "cli"})
    tracker.metrics(figures)
    tracker.finish(True)


if __name__ == "__main__":
    main()
