"""Refusing placeholder secrets: what the services' settings check before they start in production.

A placeholder is a value that ships in templates, charts and tutorials (the FastAPI template's "changethis"
among them), compared lower-case with separators removed, or one short word or a few characters repeated.
Each check returns the reason (naming the setting, never the value) or None.
"""

from __future__ import annotations

import re
from typing import Protocol
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


# Compared after _normalised (lower-case, separators removed).
PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme",
        "changethis",
        "admin",
        "administrator",
        "secret",
        "token",
        "password",
        "passw0rd",
        "postgres",
        "default",
        "example",
        "test",
        "demo",
        "placeholder",
        "sgs",
        "letmein",
        "root",
        "nats",
    }
)
MIN_ADMIN_TOKEN_LENGTH = 32  # secrets.token_urlsafe(24); the tokens the archive issues have 47 characters
MIN_DISTINCT_CHARACTERS = 8
_REPEATED = re.compile(r"(.{1,8}?)\1+")


def _normalised(secret: str) -> str:
    return re.sub(r"[^a-z0-9]", "", secret.lower())


def is_placeholder(secret: str) -> bool:
    """A well-known value, or one word or a few characters repeated ('changeme-changeme', 'xxxx')."""
    normalised = _normalised(secret)
    return not normalised or normalised in PLACEHOLDER_SECRETS or _REPEATED.fullmatch(normalised) is not None


def admin_token_problem(token: _Secret | None, variable: str) -> str | None:
    """Why ``token`` may not guard a production service (None: it may); ``variable`` is where it is set."""
    if token is None:
        return f"admin_token: required ({variable}; make one with `openssl rand -base64 32`)"
    value = token.get_secret_value()
    if is_placeholder(value):
        return "admin_token: a placeholder value"
    if len(value) < MIN_ADMIN_TOKEN_LENGTH:
        return f"admin_token: shorter than {MIN_ADMIN_TOKEN_LENGTH} characters"
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return f"admin_token: fewer than {MIN_DISTINCT_CHARACTERS} different characters"
    return None


def dsn_password_problem(dsn: str) -> str | None:
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        return None  # not ours to judge here: connecting names the mistake
    if password is not None and is_placeholder(str(password)):
        return "dsn: its password is a placeholder value"
    return None


def url_password_problem(field: str, url: str | None) -> str | None:
    if url is None:
        return None
    password = urlsplit(url).password
    if password is not None and is_placeholder(password):
        return f"{field}: its password is a placeholder value"
    return None
