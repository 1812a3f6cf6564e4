"""Real keys in temp dirs (never in the checkout), a fixed clock, and a small draft manifest."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.support.bundle_keys import NOW, keys, sample_draft, signer, trust  # noqa: F401  (shared fixtures)
from tinymlops.bundle import ManifestDraft


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def draft() -> ManifestDraft:
    return sample_draft(model_version="1.0.0", sequence=4, device_class="cortex-m4f-256k")
