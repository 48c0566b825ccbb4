from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from sgs_transfer import auth
from sgs_transfer.deps import Admin, StateDep
from sgs_transfer.schemas import TokenCreate, TokenCreated, TokenPublic

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.post("", status_code=status.HTTP_201_CREATED, summary="Issue a token (admin); shown once.")
async def create(body: TokenCreate, state: StateDep, _: Admin) -> TokenCreated:
    async with state.transaction() as conn:
        return await auth.create_token(conn, body)


@router.get("", summary="Tokens issued (admin); never the tokens themselves.")
async def list_tokens(state: StateDep, _: Admin) -> list[TokenPublic]:
    async with state.transaction() as conn:
        return await auth.list_tokens(conn)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke a token (admin).")
async def revoke(name: Annotated[str, Path(max_length=128)], state: StateDep, _: Admin) -> Response:
    async with state.transaction() as conn:
        await auth.revoke_token(conn, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
