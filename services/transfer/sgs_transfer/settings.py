"""Service settings from the environment (``SGS_TRANSFER_*``), refusing unsafe values outside development.

Every timing the fault tests need short is a setting (defaults are production values), so a test runs the same
code with seconds where production has minutes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sgs.service.tokens import refuse_weak_admin_token


class TransferSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SGS_TRANSFER_", extra="ignore")

    dsn: str = Field(default="postgresql://postgres@127.0.0.1:5432/postgres", description="PostgreSQL DSN.")
    db_schema: str = Field(default="sgs_transfer", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="Own schema.")
    nats_url: str | None = Field(default=None, description="NATS server; without it nothing is evaluated or copied.")
    environment: Literal["development", "production"] = "development"
    admin_token: SecretStr | None = Field(default=None, description="Bearer token with every right.")
    sites_file: Path | None = Field(default=None, description="Sites file (Site + Secret manifests) when no cluster.")
    sites_from_cluster: bool = Field(default=False, description="Watch the Site resources of a cluster instead.")
    kubeconfig: Path | None = Field(default=None, description="Cluster credentials (default: in-cluster / env).")
    sites_namespace: str | None = Field(default=None, description="Namespace of the Sites watched (default: all).")
    archive_url: str | None = Field(default=None, description="Archive holding the datasets rules select.")
    archive_token: SecretStr | None = Field(default=None, description="Token for reading that archive.")
    namespace: str = Field(
        default="transfer",
        pattern=r"^[a-z][a-z0-9-]{0,30}$",
        description="Names this service's JetStream stream, subjects and consumers (several may share a NATS).",
    )
    worker_name: str = Field(default="", max_length=128, description="This worker's name (default: host:pid).")
    destinations: list[str] = Field(
        default_factory=list,
        description="Sites this worker copies into (a worker per Site, beside its store); empty: every Site.",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="`sgs transfer worker`: port of its Prometheus /metrics (unset: none).",
    )
    worker_metrics_address: str = Field(default="0.0.0.0", description="Address the worker's /metrics listens on.")
    migrate_on_start: bool = True
    pool_min_size: int = Field(default=1, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    embedded_worker: bool = Field(default=False, description="`serve` also runs a worker in its process.")
    max_page_size: int = Field(default=10_000, ge=1)

    # Work queue: a message not acknowledged within ack_wait_s is redelivered (a killed worker's copy resumes).
    ack_wait_s: float = Field(default=30.0, gt=0)
    # Retries: exponential backoff with full jitter from retry_base_s up to retry_max_s; after fast_attempts
    # failures, or stuck_after_s of failing, the transfer is STUCK (with its last error) and keeps retrying at
    # retry_max_s, so a Site back from a long outage is caught up without anyone's help.
    retry_base_s: float = Field(default=2.0, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    fast_attempts: int = Field(default=6, ge=1)
    stuck_after_s: float = Field(default=300.0, gt=0)
    # A destination failing pause_after_failures times in a row is paused (its queue waits, the others flow)
    # and probed every probe_interval_s; the first good probe resumes it.
    pause_after_failures: int = Field(default=3, ge=1)
    probe_interval_s: float = Field(default=5.0, gt=0)
    # Concurrency: copies into one destination, over one source -> destination link, out of one source.
    destination_concurrency: int = Field(default=4, ge=1, le=256)
    max_ack_pending: int = Field(default=1000, ge=1, description="Messages a destination consumer hands out at once.")
    link_concurrency: int = Field(default=2, ge=1, le=256)
    source_concurrency: int = Field(default=8, ge=1, le=256)
    # Safety nets behind the event-driven paths (push, not poll: these only catch what events missed).
    repair_interval_s: float = Field(default=30.0, gt=0)
    republish_after_s: float = Field(default=10.0, gt=0, description="Unpublished transfer rows older than this.")
    verify_batch: int = Field(default=200, ge=0, description="Copies re-checksummed per repair pass.")
    reaper_interval_s: float = Field(default=60.0, gt=0)
    # What killed copies left behind (temporary files, incomplete multipart uploads) is removed when older than
    # partial_max_age_s (longer than any live upload may take), every partials_interval_s; a retried transfer
    # also aborts the uploads an earlier attempt left under its own key at once.
    partial_max_age_s: float = Field(default=6 * 3600.0, gt=0)
    partials_interval_s: float = Field(default=600.0, gt=0)
    tombstone_grace_s: float = Field(default=0.0, ge=0, description="Unlocked copies are kept this long.")
    archive_timeout_s: float = Field(default=10.0, gt=0)
    # Debug hook for the fault tests: damage the destination object between the copy and its verification,
    # a fault that cannot be produced from outside at that instant (the test says so).
    fault_corrupt_after_copy: str | None = Field(default=None, description="Destination Site to damage (tests).")

    @model_validator(mode="after")
    def _safe_outside_development(self) -> Self:
        refuse_weak_admin_token(self.environment, self.admin_token)
        if self.environment == "production" and self.fault_corrupt_after_copy:
            raise ValueError("fault_corrupt_after_copy: a test hook, refused in production")
        return self
