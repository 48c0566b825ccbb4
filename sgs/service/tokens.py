"""Bearer tokens: 256-bit random strings, stored only as SHA-256 hashes.

A fast hash is enough (there is nothing to brute-force in 256 random bits); comparing hashes keeps the token
itself out of the database and the logs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Protocol

from sgs.service.errors import UnauthorizedError

TOKEN_PREFIX = "sgs_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_hash(left: str, right: str) -> bool:
    return hmac.compare_digest(left, right)


def parse_bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None without the header."""
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise UnauthorizedError(("header", "authorization"), "expected 'Authorization: Bearer <token>'")
    return value.strip()


PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "admin", "secret", "token", "password"})
MIN_ADMIN_TOKEN_LENGTH = 16


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


def refuse_weak_admin_token(environment: str, admin_token: _Secret | None) -> None:
    """Outside development an admin token is required and must not be a placeholder or short (ValueError)."""
    if environment == "development":
        return
    if admin_token is None:
        raise ValueError(f"admin_token: required when environment is {environment}")
    token = admin_token.get_secret_value()
    if token.lower() in PLACEHOLDER_SECRETS or len(token) < MIN_ADMIN_TOKEN_LENGTH:
        raise ValueError(
            f"admin_token: a placeholder or shorter than {MIN_ADMIN_TOKEN_LENGTH} characters; "
            "refused outside development"
        )
