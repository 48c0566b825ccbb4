"""The console's ASGI app: ``create_app(settings)``; `sgs console` serves it with uvicorn."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from sgs.kube import KubeClient
from sgs_console import filters
from sgs_console.auth import COOKIE, AccessCheck, Resource, Session, Sessions
from sgs_console.kubeview import KubeView
from sgs_console.records import TaskRecords
from sgs_console.settings import ConsoleSettings
from sgs_console.upstream import Service

HERE = Path(__file__).resolve().parent
log = logging.getLogger("sgs_console")
RUNS = Resource("sgs.io", "runs")


@dataclass
class Console:
    settings: ConsoleSettings
    kube: KubeClient
    view: KubeView
    sessions: Sessions
    access: AccessCheck
    records: TaskRecords | None
    archive: Service
    transfer: Service
    templates: Jinja2Templates

    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        session = getattr(request.state, "session", None)
        base = {
            "session": session,
            "poll_ms": int(self.settings.poll_interval_s * 1000),
            "view_errors": self.view.errors,
            "path": request.url.path,
        }
        return self.templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


class NotSignedInError(Exception):
    pass


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def current_session(request: Request) -> Session:
    console = console_of(request)
    session = console.sessions.open(request.cookies.get(COOKIE))
    if session is None:
        raise NotSignedInError
    request.state.session = session
    return session


ConsoleDep = Annotated[Console, Depends(console_of)]
SessionDep = Annotated[Session, Depends(current_session)]


def templates() -> Jinja2Templates:
    found = Jinja2Templates(directory=str(HERE / "templates"))
    filters.install(found.env)
    return found


def create_app(settings: ConsoleSettings | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()
    key = settings.session_key.get_secret_value() if settings.session_key else secrets.token_urlsafe(32)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        kube = await KubeClient.connect(settings.kubeconfig, user_agent="sgs-console")
        view = KubeView(kube, settings.namespaces)
        await view.start()
        records = await TaskRecords.open(settings.dsn) if settings.dsn else None
        sessions = Sessions(kube.config, key, settings.session_ttl_s)
        token = settings.archive_token.get_secret_value() if settings.archive_token else None
        transfer_token = settings.transfer_token.get_secret_value() if settings.transfer_token else None
        app.state.console = Console(
            settings=settings,
            kube=kube,
            view=view,
            sessions=sessions,
            access=AccessCheck(sessions, settings.access_ttl_s),
            records=records,
            archive=Service("archive", settings.archive_url, token),
            transfer=Service("transfer service", settings.transfer_url, transfer_token),
            templates=templates(),
        )
        log.info("sgs console ready")
        try:
            yield
        finally:
            console: Console = app.state.console
            await view.stop()
            await sessions.close()
            await console.archive.close()
            await console.transfer.close()
            if records is not None:
                await records.close()
            await kube.close()

    app = FastAPI(title="sgs console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(NotSignedInError)
    async def _sign_in_first(request: Request, _: NotSignedInError) -> Response:
        if request.method != "GET" or request.headers.get("accept", "").startswith("application/json"):
            return JSONResponse({"ok": False, "message": "sign in first"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        # Everything the pages use is served from here: no script, style or frame from anywhere else.
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
            "form-action 'self'; base-uri 'none'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "public, max-age=3600")
        else:
            response.headers.setdefault("Cache-Control", "no-cache")
        return response

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/readyz", include_in_schema=False)
    async def readyz(console: ConsoleDep) -> JSONResponse:
        synced = {kind: store.synced for kind, store in console.view.stores.items()}
        ready = synced["runs"]
        return JSONResponse({"ready": ready, "synced": synced, "errors": console.view.errors}, 200 if ready else 503)

    from sgs_console import actions, pages, services_pages, signin

    app.include_router(signin.router)
    app.include_router(pages.router)
    app.include_router(services_pages.router)
    app.include_router(actions.router)
    return app
