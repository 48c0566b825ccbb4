"""Service settings from the environment (``SGS_ARCHIVE_*``), refusing unsafe values outside development."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "admin", "secret", "token", "password"})
MIN_ADMIN_TOKEN_LENGTH = 16


class ArchiveSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SGS_ARCHIVE_", extra="ignore")

    dsn: str = Field(default="postgresql://postgres@127.0.0.1:5432/postgres", description="PostgreSQL DSN.")
    nats_url: str | None = Field(default=None, description="NATS server; events stay in the outbox when unset.")
    environment: Literal["development", "production"] = "development"
    admin_token: SecretStr | None = Field(default=None, description="Bearer token with every right.")
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

    @model_validator(mode="after")
    def _safe_outside_development(self) -> Self:
        if self.environment == "development":
            return self
        if self.admin_token is None:
            raise ValueError("admin_token: required when environment is production")
        token = self.admin_token.get_secret_value()
        if token.lower() in PLACEHOLDER_SECRETS or len(token) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(
                f"admin_token: a placeholder or shorter than {MIN_ADMIN_TOKEN_LENGTH} characters; "
                "refused outside development"
            )
        return self
