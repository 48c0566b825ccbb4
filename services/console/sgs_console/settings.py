"""Console settings from the environment (``SGS_CONSOLE_*``), refusing unsafe values in production.

The console reads with identities of its own (a Kubernetes service account that may get/list/watch the sgs
resources and nodes, a read-only PostgreSQL role on the operator's task tables, an archive reader token, a
transfer-service token) and acts only with the signed-in person's token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sgs.placeholders import dsn_password_problem, is_placeholder

MIN_SESSION_KEY_LENGTH = 32


class ConsoleSettings(BaseSettings):
    # hide_input_in_errors: a refusal must not print the key or the DSN's password it refuses.
    model_config = SettingsConfigDict(env_prefix="SGS_CONSOLE_", extra="ignore", hide_input_in_errors=True)

    environment: Literal["development", "production"] = Field(
        default="production", description="development allows plain-HTTP cookies and a random session key."
    )
    kubeconfig: Path | None = Field(
        default=None, description="The console's own read-only Kubernetes credentials (default: in-cluster / env)."
    )
    namespaces: list[str] = Field(default_factory=list, description="Namespaces shown (default: all).")
    dsn: str | None = Field(
        default=None, description="PostgreSQL DSN of the operator's task records (a role with SELECT only)."
    )
    archive_url: str | None = Field(default=None, description="Archive service base URL.")
    archive_token: SecretStr | None = Field(default=None, description="An archive token with the reader role.")
    transfer_url: str | None = Field(default=None, description="Transfer service base URL.")
    transfer_token: SecretStr | None = Field(
        default=None, description='A transfer-service reader token (POST /tokens {"reader": true}).'
    )
    session_key: SecretStr | None = Field(
        default=None, description="Secret that encrypts the session cookies (>= 32 characters; random if unset in dev)."
    )
    session_ttl_s: int = Field(default=8 * 3600, ge=60, le=7 * 86400, description="A sign-in lasts this long.")
    secure_cookies: bool | None = Field(default=None, description="Cookies only over HTTPS (default: production).")
    poll_interval_s: float = Field(default=2.0, gt=0, le=60, description="How often open pages ask for changes.")
    access_ttl_s: float = Field(
        default=30.0, ge=0, le=600, description="How long a person's read rights, asked of the API server, are kept."
    )
    page_size: int = Field(default=100, ge=10, le=1000, description="Rows per page of the task and Runs tables.")
    tls_cert_file: Path | None = Field(default=None, description="PEM certificate (chain): serve HTTPS with it.")
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file.")

    @property
    def cookies_secure(self) -> bool:
        return self.secure_cookies if self.secure_cookies is not None else self.environment == "production"

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file: give both (HTTPS) or neither (plain HTTP)")
        return self

    @model_validator(mode="after")
    def _safe_in_production(self) -> Self:
        if self.environment == "development":
            return self
        problems = [session_key_problem(self.session_key), dsn_password_problem(self.dsn) if self.dsn else None]
        found = [p for p in problems if p is not None]
        if found:
            raise ValueError(
                "refusing to start in production: " + "; ".join(found) + " (set SGS_CONSOLE_ENVIRONMENT=development "
                "only for a local console)"
            )
        return self


def session_key_problem(key: SecretStr | None) -> str | None:
    if key is None:
        return "session_key: required (SGS_CONSOLE_SESSION_KEY; make one with `openssl rand -base64 32`)"
    value = key.get_secret_value()
    if is_placeholder(value):
        return "session_key: a placeholder value"
    if len(value) < MIN_SESSION_KEY_LENGTH:
        return f"session_key: shorter than {MIN_SESSION_KEY_LENGTH} characters"
    return None
