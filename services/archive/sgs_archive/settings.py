"""Service settings from the environment (``SGS_ARCHIVE_*``), refusing unsafe values in production.

``environment`` defaults to production: the service then refuses to start without an admin token, on a
placeholder or guessable one, on a placeholder password in the database or NATS URL, or with a crash-test hook
on; every problem is named in one message. ``sgs demo`` and ``sgs dev up`` say ``development`` explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sgs.placeholders import admin_token_problem, dsn_password_problem, url_password_problem


class ArchiveSettings(BaseSettings):
    # hide_input_in_errors: a refusal must not print the token or the DSN's password it refuses.
    model_config = SettingsConfigDict(env_prefix="SGS_ARCHIVE_", extra="ignore", hide_input_in_errors=True)

    dsn: str = Field(default="postgresql://postgres@127.0.0.1:5432/postgres", description="PostgreSQL DSN.")
    nats_url: str | None = Field(default=None, description="NATS server; events stay in the outbox when unset.")
    environment: Literal["development", "production"] = Field(
        default="production", description="development relaxes the refusals of unsafe secrets (never in a deployment)."
    )
    admin_token: SecretStr | None = Field(default=None, description="Bearer token with every right.")
    tls_cert_file: Path | None = Field(default=None, description="PEM certificate (chain): serve HTTPS with it.")
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file.")
    public_reads: bool = Field(default=False, description="Answer reads without a token (writes always need one).")
    source: str = Field(default="archive", max_length=128, description="Name put in events' `source` field.")
    universe_path: Path | None = Field(default=None, description="Dimension universe YAML (packaged default).")
    migrate_on_start: bool = True
    max_batch: int = Field(default=50_000, ge=1, le=500_000, description="Datasets per ingest call.")
    max_body_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    max_page_size: int = Field(default=10_000, ge=1)
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    relay_poll_interval_s: float = Field(default=1.0, gt=0)
    relay_batch: int = Field(default=256, ge=1)
    # Debug hooks for the crash tests: hold events in the outbox, or die right after publishing one.
    relay_paused: bool = False
    relay_crash_after_publish: bool = False

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file: give both (HTTPS) or neither (plain HTTP)")
        for name, path in (("tls_cert_file", self.tls_cert_file), ("tls_key_file", self.tls_key_file)):
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a readable file")
        return self

    @model_validator(mode="after")
    def _safe_in_production(self) -> Self:
        if self.environment == "development":
            return self
        problems = [
            admin_token_problem(self.admin_token, "SGS_ARCHIVE_ADMIN_TOKEN"),
            dsn_password_problem(self.dsn),
            url_password_problem("nats_url", self.nats_url),
            "relay_crash_after_publish: a crash-test hook" if self.relay_crash_after_publish else None,
        ]
        found = [p for p in problems if p is not None]
        if found:
            raise ValueError(
                "refusing to start in production: " + "; ".join(found) + " (set SGS_ARCHIVE_ENVIRONMENT=development "
                "only for a throw-away local archive)"
            )
        return self
