"""Checking a presented secret (an API key, a join token): reading, hashing, comparing it safely."""

from __future__ import annotations

import hashlib
import hmac


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if that is what it is."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def same_secret(given: str, expected: str) -> bool:
    """Compare in constant time, so response timing reveals nothing about the key."""
    return hmac.compare_digest(given.encode(), expected.encode())


def hash_secret(secret: str) -> str:
    """What is stored of a generated secret: its SHA-256.

    The secrets hashed here carry 256 random bits, so a slow hash (as for
    passwords) would add nothing.
    """
    return hashlib.sha256(secret.encode()).hexdigest()
