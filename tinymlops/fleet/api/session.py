"""Dashboard sessions: a signed, stateless cookie naming the admin, and a CSRF token bound to it.

The cookie is `<name>.<expiry>.<nonce>.<mac>` (name base64url), MAC'd with a key derived from that
admin's own token: rotating or removing a token ends its sessions on every replica, and the server
keeps no session table. The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site
sends it), Path=/ui, Secure behind HTTPS. Every state-changing request must also carry the CSRF token
(a hidden form field or the X-CSRF-Token header), an HMAC of the session's nonce that only a page
the server rendered for this session knows."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from tinymlops.errors import Forbidden, Unauthenticated

COOKIE = "tinymlops_session"
LOGIN_COOKIE = "tinymlops_login"  # the login form's own CSRF token (double submit)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    def __init__(self, admin_tokens: dict[str, str]) -> None:
        self._keys = {
            name: hashlib.sha256(b"tinymlops dashboard session\0" + token.encode()).digest()
            for name, token in admin_tokens.items()
        }

    def issue(self, name: str, hours: float, now: float | None = None) -> tuple[str, str]:
        """→ (cookie value, CSRF token) for a logged-in admin."""
        expiry = int((now or time.time()) + hours * 3600)
        nonce = secrets.token_urlsafe(16)
        body = f"{_b64(name.encode())}.{expiry}.{nonce}"
        return f"{body}.{self._mac(name, body)}", self._csrf(name, nonce)

    def who(self, cookie: str | None, now: float | None = None) -> tuple[str, str]:
        """The admin a cookie names and its CSRF token; Unauthenticated when absent, forged or expired."""
        if not cookie or cookie.count(".") != 3:
            raise Unauthenticated("not logged in")
        encoded, expiry, nonce, mac = cookie.split(".")
        try:
            name = _unb64(encoded).decode()
        except (ValueError, UnicodeDecodeError):
            raise Unauthenticated("not logged in") from None
        if name not in self._keys or not hmac.compare_digest(mac, self._mac(name, f"{encoded}.{expiry}.{nonce}")):
            raise Unauthenticated("not logged in")
        if not expiry.isdigit() or int(expiry) < (now or time.time()):
            raise Unauthenticated("session expired: log in again")
        return name, self._csrf(name, nonce)

    @staticmethod
    def check_csrf(expected: str, given: str | None) -> None:
        if not given or not hmac.compare_digest(expected, given):
            raise Forbidden("CSRF token missing or wrong: reload the page")

    def _mac(self, name: str, body: str) -> str:
        return _b64(hmac.new(self._keys[name], body.encode(), hashlib.sha256).digest())

    def _csrf(self, name: str, nonce: str) -> str:
        return _b64(hmac.new(self._keys[name], b"csrf\0" + nonce.encode(), hashlib.sha256).digest())[:32]
