"""Credentials: admin tokens (named, for the audit log), one provisioning token, and per-device
credentials that are random 256-bit tokens stored only as SHA-256 digests.

A device credential has full entropy, so a plain digest is enough (no password hashing): what
the database leaks cannot be turned back into a credential.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from tinymlops.errors import Forbidden, Unauthenticated


def new_credential() -> str:
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer …` header, or Unauthenticated."""
    if not authorization:
        raise Unauthenticated("missing Authorization: Bearer header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be 'Bearer <token>'")
    return token.strip()


def matches(token: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(token), stored_digest)


class AdminTokens:
    """name → token digest. Compares every entry in constant time and returns who it was."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self._digests = {name: digest(token) for name, token in tokens.items()}

    def __bool__(self) -> bool:
        return bool(self._digests)

    def who(self, authorization: str | None) -> str:
        token = bearer(authorization)
        found = None
        for name, stored in self._digests.items():
            if matches(token, stored):
                found = name
        if found is None:
            raise Forbidden("not a valid admin token")
        return found
