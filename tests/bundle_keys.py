"""A root + signing key pair made once per module, and the fixed clock the bundle tests sign at.

Imported by the bundle unit tests' conftest and by the attack tests (pytest collects imported
fixtures), so both test the same key hierarchy."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tinymlops.bundle import Signer, TrustAnchor, init_keys, load_signer, load_trust

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    init_keys(directory, now=NOW - timedelta(days=1))
    return directory


@pytest.fixture(scope="module")
def trust(keys: Path) -> TrustAnchor:
    return load_trust(keys / "root.pub")


@pytest.fixture(scope="module")
def signer(keys: Path) -> Signer:
    return load_signer(keys, now=NOW)
