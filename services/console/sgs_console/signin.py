"""Sign-in with one's own Kubernetes bearer token, and sign-out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from sgs_console.app import ConsoleDep
from sgs_console.auth import COOKIE, SignInError

router = APIRouter()


def safe_next(target: str | None) -> str:
    """Only a path of this console: an absolute URL or `//host` would send the person elsewhere after sign-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/runs"
    return target


@router.get("/")
async def index() -> Response:
    return RedirectResponse("/runs", status_code=303)


@router.get("/signin")
async def sign_in_page(request: Request, console: ConsoleDep, next: str | None = None) -> Response:
    return console.render(request, "signin.html", next=safe_next(next), error=None)


@router.post("/signin")
async def sign_in(
    request: Request,
    console: ConsoleDep,
    token: Annotated[str, Form(max_length=8192)],
    transfer_token: Annotated[str, Form(max_length=512)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/runs",
) -> Response:
    try:
        session = await console.sessions.sign_in(token, transfer_token)
    except SignInError as error:
        return console.render(request, "signin.html", status_code=401, next=safe_next(next), error=str(error))
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        console.sessions.seal(session),
        max_age=console.settings.session_ttl_s,
        httponly=True,
        samesite="strict",
        secure=console.settings.cookies_secure,
        path="/",
    )
    return response


@router.post("/signout")
async def sign_out() -> Response:
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
