"""Who calls: the admin token from the settings, or a named token an admin issued (stored as a hash).

Every endpoint but health and metrics needs a token. A named token may create rules (owned by it) and
suspend, resume or delete its own rules; only an admin acts on other owners' rules or issues tokens. A reader
token (``reader: true``) may read everything and change nothing: the console reads with one, so that the only
rule changes it passes on are made with the signed-in person's own token.
"""

from __future__ import annotations

from dataclasses import dataclass

from sgs.service.errors import ConflictError, ForbiddenError, NotFoundError, UnauthorizedError
from sgs.service.tokens import hash_token, new_token, same_hash
from sgs_transfer.db import Conn
from sgs_transfer.schemas import TokenCreate, TokenCreated, TokenPublic

ADMIN_NAME = "admin"


@dataclass(frozen=True)
class Principal:
    name: str
    is_admin: bool
    is_reader: bool = False

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ForbiddenError(("header", "authorization"), "an admin token is required")

    def require_writer(self) -> None:
        if self.is_reader:
            raise ForbiddenError(
                ("header", "authorization"), f"token {self.name!r} is a reader token: it may not change rules"
            )

    def require_owner(self, owner: str, loc: tuple[str | int, ...]) -> None:
        self.require_writer()
        if not (self.is_admin or self.name == owner):
            raise ForbiddenError(loc, f"token {self.name!r} may not change a rule owned by {owner!r}")


async def authenticate(conn: Conn, token: str, admin_hash: str | None) -> Principal:
    token_hash = hash_token(token)
    if admin_hash is not None and same_hash(token_hash, admin_hash):
        return Principal(ADMIN_NAME, True)
    cursor = await conn.execute("SELECT name, is_admin, is_reader FROM api_token WHERE token_hash = %s", (token_hash,))
    row = await cursor.fetchone()
    if row is None:
        raise UnauthorizedError(("header", "authorization"), "unknown or revoked token")
    return Principal(str(row["name"]), bool(row["is_admin"]), bool(row["is_reader"]))


async def create_token(conn: Conn, request: TokenCreate) -> TokenCreated:
    token = new_token()
    cursor = await conn.execute(
        """INSERT INTO api_token (name, is_admin, is_reader, token_hash) VALUES (%s, %s, %s, %s)
           ON CONFLICT (name) DO NOTHING RETURNING created_at""",
        (request.name, request.admin, request.reader, hash_token(token)),
    )
    row = await cursor.fetchone()
    if row is None:
        raise ConflictError(("body", "name"), f"a token named {request.name!r} exists")
    return TokenCreated(
        name=request.name, admin=request.admin, reader=request.reader, created_at=row["created_at"], token=token
    )


async def list_tokens(conn: Conn) -> list[TokenPublic]:
    cursor = await conn.execute("SELECT name, is_admin, is_reader, created_at FROM api_token ORDER BY name")
    return [
        TokenPublic(
            name=str(r["name"]), admin=bool(r["is_admin"]), reader=bool(r["is_reader"]), created_at=r["created_at"]
        )
        for r in await cursor.fetchall()
    ]


async def revoke_token(conn: Conn, name: str) -> None:
    cursor = await conn.execute("DELETE FROM api_token WHERE name = %s", (name,))
    if cursor.rowcount == 0:
        raise NotFoundError(("path", "name"), f"no token named {name!r}")
