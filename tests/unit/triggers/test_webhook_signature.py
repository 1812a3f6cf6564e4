"""Signatures as GitHub documents them, and GitLab's token check."""

from __future__ import annotations

import hashlib
import hmac

from tests.support.webhook_payloads import SECRET
from tinymlops.triggers.signature import github_signature, github_signature_valid, gitlab_token_valid

# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries#testing-the-webhook-payload-validation
GITHUB_DOC_BODY = b"Hello, World!"
GITHUB_DOC_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_matches_githubs_documented_test_vector() -> None:
    assert github_signature(SECRET, GITHUB_DOC_BODY) == GITHUB_DOC_SIGNATURE
    assert github_signature_valid(SECRET, GITHUB_DOC_BODY, GITHUB_DOC_SIGNATURE)


def test_is_hmac_sha256_over_the_raw_bytes() -> None:
    body = b'{"ref": "refs/heads/main",  "after": "x"}'  # whitespace matters: no re-serialising
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert github_signature("s3cret", body) == expected
    assert not github_signature_valid("s3cret", body.replace(b"  ", b" "), expected)


def test_rejects_wrong_missing_and_legacy_signatures() -> None:
    assert not github_signature_valid(SECRET, GITHUB_DOC_BODY, None)
    assert not github_signature_valid(SECRET, GITHUB_DOC_BODY, "")
    assert not github_signature_valid("another secret", GITHUB_DOC_BODY, GITHUB_DOC_SIGNATURE)
    assert not github_signature_valid(SECRET, GITHUB_DOC_BODY, GITHUB_DOC_SIGNATURE.upper())
    sha1 = "sha1=" + hmac.new(SECRET.encode(), GITHUB_DOC_BODY, hashlib.sha1).hexdigest()
    assert not github_signature_valid(SECRET, GITHUB_DOC_BODY, sha1)  # X-Hub-Signature (SHA-1) is not accepted
    assert not github_signature_valid(SECRET, GITHUB_DOC_BODY, GITHUB_DOC_SIGNATURE.removeprefix("sha256="))


def test_gitlab_token() -> None:
    assert gitlab_token_valid("tok-123", "tok-123")
    assert not gitlab_token_valid("tok-123", "tok-124")
    assert not gitlab_token_valid("tok-123", "tok-1234")
    assert not gitlab_token_valid("tok-123", None)
