"""Who may do what: bearer tokens with a role, and the write rules every route applies through ``Principal``.

Roles (``TokenRole``): every valid token reads (and, when ``public_reads`` is set, so does anyone);

- ``admin`` (the ``admin_token`` setting, or a stored admin token) may do everything: tokens, dataset types,
  placements, every collection and every Site's replicas;
- ``site`` (bound to one Site) writes replicas at its Site only (register, change state), creates collections
  (owned by its Site), and writes only the collections its Site owns: ingest into its RUN collections (with the
  lineage of those datasets), tag and untag its TAGGED ones, edit the chains of its CHAINED ones, delete them.
  A RUN collection an ingest creates is owned by the ingesting token's Site. Its chains and tags may *refer* to
  other Sites' collections and datasets (that only reads them);
- ``reader`` reads.

A collection without an owning Site is a survey collection: only admins write it (collections that existed
before ownership was recorded are such). Admins change an owner with ``PUT /collections/{name}/owner``. The
dimension universe has no write route at all: it changes only with the file the service starts with.

Tokens are 256-bit random strings, so a fast hash is enough (nothing to brute-force); comparing hashes keeps
the token itself out of the database and the logs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sgs_archive.db import Conn
from sgs_archive.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError, UnauthorizedError
from sgs_archive.schemas import TokenCreate, TokenCreated, TokenPublic, TokenRole

ADMIN_NAME = "admin"
AUTHORIZATION: tuple[str, ...] = ("header", "authorization")


@dataclass(frozen=True)
class Principal:
    name: str
    role: TokenRole
    site: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is TokenRole.ADMIN

    def may_write_site(self, site: str) -> bool:
        return self.is_admin or (self.role is TokenRole.SITE and self.site == site)

    def require_site(self, site: str, loc: tuple[str | int, ...]) -> None:
        if not self.may_write_site(site):
            raise ForbiddenError(loc, f"token {self.name!r} may not write at site {site!r}")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ForbiddenError(AUTHORIZATION, f"token {self.name!r} is a {self.role} token; this needs an admin")

    def require_writer(self) -> None:
        if self.role is TokenRole.READER:
            raise ForbiddenError(AUTHORIZATION, f"token {self.name!r} is read-only")

    def require_collection(self, name: str, owner: str | None, loc: tuple[str | int, ...]) -> None:
        """Writing a collection needs its owning Site's token or an admin's."""
        if self.is_admin or (owner is not None and self.may_write_site(owner)):
            return
        held = f"site {owner!r}" if owner is not None else "the survey (admins only)"
        raise ForbiddenError(loc, f"collection {name!r} belongs to {held}; token {self.name!r} may not write it")

    def owner_of_new_collection(self, requested: str | None, loc: tuple[str | int, ...]) -> str | None:
        """The owner a collection this principal creates gets: an admin's choice, or the Site token's own Site."""
        if self.is_admin:
            return requested
        if requested is not None and requested != self.site:
            raise ForbiddenError(loc, f"token {self.name!r} may not create collections for site {requested!r}")
        return self.site


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise UnauthorizedError(AUTHORIZATION, "expected 'Authorization: Bearer <token>'")
    return value.strip()


async def authenticate(conn: Conn, token: str, admin_hash: str | None) -> Principal:
    token_hash = hash_token(token)
    if admin_hash is not None and hmac.compare_digest(token_hash, admin_hash):
        return Principal(ADMIN_NAME, TokenRole.ADMIN)
    cursor = await conn.execute("SELECT name, role, site FROM api_token WHERE token_hash = %s", (token_hash,))
    row = await cursor.fetchone()
    if row is None:
        raise UnauthorizedError(AUTHORIZATION, "unknown or revoked token")
    return Principal(str(row["name"]), TokenRole(row["role"]), row["site"])


async def create_token(conn: Conn, request: TokenCreate) -> TokenCreated:
    if (request.role is TokenRole.SITE) != (request.site is not None):
        raise InvalidInputError(("body", "site"), "a site token names its Site; admin and reader tokens name none")
    token = "sgs_" + secrets.token_urlsafe(32)
    cursor = await conn.execute(
        """INSERT INTO api_token (name, role, site, token_hash) VALUES (%s, %s, %s, %s)
           ON CONFLICT (name) DO NOTHING RETURNING created_at""",
        (request.name, request.role.value, request.site, hash_token(token)),
    )
    row = await cursor.fetchone()
    if row is None:
        raise ConflictError(("body", "name"), f"a token named {request.name!r} exists")
    return TokenCreated(
        name=request.name, role=request.role, site=request.site, created_at=row["created_at"], token=token
    )


async def list_tokens(conn: Conn) -> list[TokenPublic]:
    cursor = await conn.execute("SELECT name, role, site, created_at FROM api_token ORDER BY name")
    return [TokenPublic.model_validate(row) for row in await cursor.fetchall()]


async def revoke_token(conn: Conn, name: str) -> None:
    cursor = await conn.execute("DELETE FROM api_token WHERE name = %s", (name,))
    if cursor.rowcount == 0:
        raise NotFoundError(("path", "name"), f"no token named {name!r}")
