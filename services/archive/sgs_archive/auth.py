"""Bearer tokens: an admin token from the settings, and Site-scoped tokens stored as SHA-256 hashes.

Tokens are 256-bit random strings, so a fast hash is enough (nothing to brute-force); comparing hashes keeps
the token itself out of the database and the logs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sgs_archive.db import Conn
from sgs_archive.errors import ConflictError, ForbiddenError, NotFoundError, UnauthorizedError
from sgs_archive.schemas import TokenCreate, TokenCreated, TokenPublic

ADMIN_NAME = "admin"


@dataclass(frozen=True)
class Principal:
    name: str
    site: str | None
    is_admin: bool

    def may_write_site(self, site: str) -> bool:
        return self.is_admin or self.site == site

    def require_site(self, site: str, loc: tuple[str | int, ...]) -> None:
        if not self.may_write_site(site):
            raise ForbiddenError(loc, f"token {self.name!r} may not write at site {site!r}")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ForbiddenError(("header", "authorization"), "an admin token is required")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise UnauthorizedError(("header", "authorization"), "expected 'Authorization: Bearer <token>'")
    return value.strip()


async def authenticate(conn: Conn, token: str, admin_hash: str | None) -> Principal:
    token_hash = hash_token(token)
    if admin_hash is not None and hmac.compare_digest(token_hash, admin_hash):
        return Principal(ADMIN_NAME, None, True)
    cursor = await conn.execute("SELECT name, site, is_admin FROM api_token WHERE token_hash = %s", (token_hash,))
    row = await cursor.fetchone()
    if row is None:
        raise UnauthorizedError(("header", "authorization"), "unknown or revoked token")
    return Principal(str(row["name"]), row["site"], bool(row["is_admin"]))


async def create_token(conn: Conn, request: TokenCreate) -> TokenCreated:
    if not request.admin and request.site is None:
        raise ConflictError(("body", "site"), "a non-admin token must be scoped to a site")
    token = "sgs_" + secrets.token_urlsafe(32)
    cursor = await conn.execute(
        """INSERT INTO api_token (name, site, is_admin, token_hash) VALUES (%s, %s, %s, %s)
           ON CONFLICT (name) DO NOTHING RETURNING created_at""",
        (request.name, request.site, request.admin, hash_token(token)),
    )
    row = await cursor.fetchone()
    if row is None:
        raise ConflictError(("body", "name"), f"a token named {request.name!r} exists")
    return TokenCreated(
        name=request.name, site=request.site, admin=request.admin, created_at=row["created_at"], token=token
    )


async def list_tokens(conn: Conn) -> list[TokenPublic]:
    cursor = await conn.execute("SELECT name, site, is_admin, created_at FROM api_token ORDER BY name")
    return [
        TokenPublic(name=str(r["name"]), site=r["site"], admin=bool(r["is_admin"]), created_at=r["created_at"])
        for r in await cursor.fetchall()
    ]


async def revoke_token(conn: Conn, name: str) -> None:
    cursor = await conn.execute("DELETE FROM api_token WHERE name = %s", (name,))
    if cursor.rowcount == 0:
        raise NotFoundError(("path", "name"), f"no token named {name!r}")
