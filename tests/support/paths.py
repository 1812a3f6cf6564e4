"""Where the repository is, for tests that read its shipped files (params.yaml, configs/)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
