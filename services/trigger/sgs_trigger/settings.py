"""Settings from the environment (``SGS_TRIGGER_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class TriggerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SGS_TRIGGER_", extra="ignore")

    nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS server with the archive's stream.")
    archive_url: str = Field(default="http://127.0.0.1:8400", description="Archive holding the datasets.")
    archive_token: SecretStr | None = Field(default=None, description="Token for reading that archive.")
    archive_timeout_s: float = Field(default=10.0, gt=0)
    kubeconfig: Path | None = Field(default=None, description="Cluster credentials (default: in-cluster / env).")
    namespace: str | None = Field(default=None, description="Namespace whose Pipelines are served (default: all).")
    durable: str = Field(
        default="sgs-trigger",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="JetStream durable consumer name: replicas of this service share it (each event once).",
    )
    # An event whose Run could not be created (archive or API server down) is redelivered after this long.
    ack_wait_s: float = Field(default=30.0, gt=0)
    retry_s: float = Field(default=2.0, gt=0, description="Delay of a redelivery after a failed batch.")
    batch: int = Field(default=64, ge=1, le=1000, description="Events fetched at once.")
    concurrency: int = Field(default=16, ge=1, le=256, description="Groups evaluated at once.")
    batches_in_flight: int = Field(default=8, ge=1, le=256, description="Batches of events handled at once.")
    metrics_port: int | None = Field(default=None, ge=0, le=65535, description="Serve Prometheus metrics here.")
    universe_refresh_s: float = Field(default=300.0, gt=0)
