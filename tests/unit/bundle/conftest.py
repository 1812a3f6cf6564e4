"""Real keys in temp dirs (never in the checkout), a fixed clock, and a small draft manifest."""

from __future__ import annotations

from datetime import datetime

import pytest
from bundle_keys import NOW, keys, signer, trust  # noqa: F401  (shared fixtures)

from tinymlops.bundle import ManifestDraft


@pytest.fixture
def now() -> datetime:
    return NOW


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
