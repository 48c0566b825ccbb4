"""What a signed-in person may see: asked of the API server with their token, namespace by namespace."""

from __future__ import annotations

from sgs_console.app import Console
from sgs_console.auth import Resource, Session
from sgs_console.kubeview import Store


class AccessDeniedError(Exception):
    """Shown as a 403 page that says who was refused what, and the API server's reason."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def visible_namespaces(console: Console, session: Session, what: Resource, store: Store) -> list[str] | None:
    """The namespaces whose objects of ``what`` this person may list (None: all of them)."""
    allowed, _ = await console.access.allowed(session, what)
    if allowed:
        return None
    namespaces = sorted(store.namespaces() | set(console.settings.namespaces))
    return [ns for ns in namespaces if (await console.access.allowed(session, what, ns))[0]]


async def require(console: Console, session: Session, what: Resource, namespace: str) -> None:
    allowed, reason = await console.access.allowed(session, what, namespace)
    if not allowed:
        raise AccessDeniedError(
            f"{session.user} may not {what.verb} {what.resource}.{what.group} in namespace {namespace!r}"
            + (f": {reason}" if reason else " (no RBAC rule allows it)")
        )
