"""Shared-secret checks, as GitHub and GitLab document them, in constant time."""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "sha256="


def github_signature(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub sends: HMAC-SHA256 of the raw body, hex, prefixed."""
    return PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith(PREFIX):
        return False
    return hmac.compare_digest(github_signature(secret, body).encode(), header.encode())


def gitlab_token_valid(secret: str, header: str | None) -> bool:
    # GitLab sends the secret itself; compare digests so timing does not leak its length either
    if not header:
        return False
    return hmac.compare_digest(hashlib.sha256(secret.encode()).digest(), hashlib.sha256(header.encode()).digest())
