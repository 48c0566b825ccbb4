"""Tracing settings, from the environment (``SGS_TRACING_*``, or the OpenTelemetry names) or a component's own.

Tracing is off unless an OTLP endpoint is given: then no SDK is imported, no span is recorded and every hook
is a call on OpenTelemetry's no-op tracer.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TracingSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SGS_TRACING_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", "endpoint"),
        description="OTLP/HTTP base URL of the trace store or collector (http://host:4318); unset = tracing off.",
    )
    sampling: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        validation_alias=AliasChoices("SGS_TRACING_SAMPLING", "OTEL_TRACES_SAMPLER_ARG", "sampling"),
        description="Share of traces recorded, decided from the trace id alone: every component that uses the "
        "same share records the same Runs whole.",
    )
    export_timeout_s: float = Field(
        default=5.0,
        gt=0,
        validation_alias=AliasChoices("SGS_TRACING_EXPORT_TIMEOUT_S", "export_timeout_s"),
        description="Seconds one OTLP export may take before the batch is dropped (the component never waits).",
    )
    queue_size: int = Field(
        default=8192,
        ge=64,
        validation_alias=AliasChoices("SGS_TRACING_QUEUE_SIZE", "queue_size"),
        description="Finished spans buffered for export; beyond it spans are dropped, never the caller blocked.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint) and self.sampling > 0
