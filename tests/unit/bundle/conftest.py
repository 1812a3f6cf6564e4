"""Real keys in temp dirs (never in the checkout), a fixed clock, and a small draft manifest."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tinymlops.bundle import ManifestDraft, Signer, TrustAnchor, init_keys, load_signer, load_trust

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def now() -> datetime:
    return NOW


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


@pytest.fixture
def draft() -> ManifestDraft:
    return ManifestDraft(
        model_name="kws",
        model_version="1.0.0",
        sequence=4,
        vendor="acme.example",
        device_class="cortex-m4f-256k",
        arena_bytes=24_000,
        ops=["CONV_2D", "FULLY_CONNECTED", "SOFTMAX"],
    )
