"""Who is signed in, and the Kubernetes client that acts as them.

A person signs in with their own Kubernetes bearer token (what `kubectl` uses: an OIDC id-token, a
service-account token, a static token). The API server says who it belongs to (SelfSubjectReview, which needs
no rights), and the token is kept in an encrypted, HttpOnly, SameSite=Strict cookie — the console stores no
sessions. Every action and every read done for that person goes to the API server with that token and
without any credential of the console's (no client certificate on those connections: the API server would
take the certificate's identity before the token's).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography.fernet import Fernet, InvalidToken
from pydantic import BaseModel

from sgs.kube import ClusterConfig, KubeClient, KubeError
from sgs.kube.client import new_session

COOKIE = "sgs_console"
MAX_TOKEN_LENGTH = 8192
SELF_REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
ACCESS_REVIEW = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


class Session(BaseModel):
    token: str
    user: str
    groups: list[str] = []
    csrf: str
    transfer_token: str | None = None
    expires: float


class SignInError(RuntimeError):
    """The token was refused: the message says why, for the sign-in page."""


def fernet_of(key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


class Sessions:
    """Sign-in, the session cookie, and one client per person on a shared connection pool."""

    def __init__(self, config: ClusterConfig, key: str, ttl_s: int) -> None:
        # The person's requests carry their token and nothing of the console's: no client certificate.
        self.config = dataclasses.replace(config, cert_file=None, key_file=None, refreshes=False)
        self.fernet = fernet_of(key)
        self.ttl_s = ttl_s
        self._pool: aiohttp.ClientSession | None = None

    @property
    def pool(self) -> aiohttp.ClientSession:
        if self._pool is None:
            self._pool = new_session(self.config, pool_size=64)
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    def client(self, token: str) -> KubeClient:
        """The API as the holder of ``token`` (its close() leaves the shared pool open)."""
        return KubeClient(
            self.config,
            static_auth={"Authorization": f"Bearer {token}"},
            session=self.pool,
            user_agent="sgs-console",
            field_manager="sgs-console",
        )

    async def sign_in(self, token: str, transfer_token: str | None = None) -> Session:
        token = token.strip()
        if not token or len(token) > MAX_TOKEN_LENGTH or any(c.isspace() for c in token):
            raise SignInError("paste one bearer token (no spaces, at most 8192 characters)")
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        try:
            review = await self.client(token).create(SELF_REVIEW, body)
        except KubeError as error:
            if error.status == 401:
                raise SignInError("the API server does not accept this token (401 Unauthorized)") from error
            raise SignInError(f"the API server refused the sign-in: {error.status} {error.message}") from error
        except aiohttp.ClientError as error:
            raise SignInError(f"cannot reach the API server at {self.config.server}: {error}") from error
        info = (review.get("status") or {}).get("userInfo") or {}
        return Session(
            token=token,
            user=str(info.get("username") or "unknown"),
            groups=[str(g) for g in info.get("groups") or []],
            csrf=secrets.token_urlsafe(24),
            transfer_token=(transfer_token or "").strip() or None,
            expires=time.time() + self.ttl_s,
        )

    def seal(self, session: Session) -> str:
        return self.fernet.encrypt(session.model_dump_json().encode()).decode()

    def open(self, cookie: str | None) -> Session | None:
        """The session in a cookie, or None when absent, forged, or expired."""
        if not cookie:
            return None
        try:
            data = self.fernet.decrypt(cookie.encode(), ttl=self.ttl_s)
        except (InvalidToken, ValueError):
            return None
        session = Session.model_validate_json(data)
        return session if session.expires > time.time() else None


def same_csrf(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(session.csrf.encode(), given.encode())


@dataclass(frozen=True)
class Resource:
    group: str
    resource: str
    verb: str = "list"
    subresource: str = ""


class AccessCheck:
    """May this person do ``verb`` on a resource in a namespace? The API server says (SelfSubjectAccessReview,
    asked with their token); answers are kept ``ttl_s`` so a page does not ask on every poll."""

    def __init__(self, sessions: Sessions, ttl_s: float) -> None:
        self.sessions = sessions
        self.ttl_s = ttl_s
        self._answers: dict[tuple[str, Resource, str], tuple[float, bool, str]] = {}

    async def allowed(self, session: Session, what: Resource, namespace: str = "") -> tuple[bool, str]:
        """(allowed, the API server's reason); namespace "" asks for all namespaces."""
        key = (hashlib.sha256(session.token.encode()).hexdigest(), what, namespace)
        now = time.monotonic()
        known = self._answers.get(key)
        if known is not None and now - known[0] < self.ttl_s:
            return known[1], known[2]
        attributes: dict[str, Any] = {"group": what.group, "resource": what.resource, "verb": what.verb}
        if what.subresource:
            attributes["subresource"] = what.subresource
        if namespace:
            attributes["namespace"] = namespace
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        review = await self.sessions.client(session.token).create(ACCESS_REVIEW, body)
        status = review.get("status") or {}
        answer = bool(status.get("allowed")), str(status.get("reason") or "")
        if len(self._answers) > 10_000:
            self._answers.clear()
        self._answers[key] = (now, *answer)
        return answer
