"""A root + signing key pair made once per module, and the fixed clock the bundle tests sign at.

Imported by the bundle unit tests' conftest and by the attack tests (pytest collects imported
fixtures), so both test the same key hierarchy."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tinymlops.bundle import ManifestDraft, Signer, TrustAnchor, init_keys, load_signer, load_trust

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


def sample_draft(**changes: object) -> ManifestDraft:
    """A valid manifest draft for a small KWS model; tests change only the fields they are about."""
    fields: dict[str, object] = {
        "model_name": "kws",
        "model_version": "1",
        "sequence": 1,
        "vendor": "acme.example",
        "device_class": "m4",
        "arena_bytes": 24_000,
        "ops": ["CONV_2D", "FULLY_CONNECTED", "SOFTMAX"],
    }
    return ManifestDraft.model_validate(fields | changes)


def sign_releases(
    signer: Signer,
    out_dir: Path,
    releases: dict[str, int],
    classes: tuple[str, ...],
    *,
    payload: int = 4000,
    now: datetime | None = None,
) -> dict[tuple[str, str], Path]:
    """(release, class) → a signed bundle per class of each release (name → sequence), its payload
    the release name repeated (for fleet tests: what is verified is real, the model is not)."""
    from tinymlops.bundle import build_bundle

    made = {}
    for release, sequence in releases.items():
        for device_class in classes:
            draft = sample_draft(
                model_name="digits",
                model_version=release,
                sequence=sequence,
                vendor="tinymlops",
                device_class=device_class,
                arena_bytes=20_000,
                ops=["FULLY_CONNECTED"],
            )
            out = Path(out_dir) / f"{release}-{device_class}.bundle"
            build_bundle(release.encode() * payload, draft, signer, out, now=now)
            made[(release, device_class)] = out
    return made
