"""Checking a presented API key: reading it from a request and comparing it safely."""

from __future__ import annotations

import hmac


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if that is what it is."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def same_secret(given: str, expected: str) -> bool:
    """Compare in constant time, so response timing reveals nothing about the key."""
    return hmac.compare_digest(given.encode(), expected.encode())
