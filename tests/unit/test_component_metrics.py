"""The operator's metrics that are more than a counter bump: Runs by phase, Sites by phase, attempt timings,
used vs requested CPU, the webhook certificate's expiry (the default registry, read back as a scrape would)."""

from __future__ import annotations

import time
from pathlib import Path

import prometheus_client
from sgs_operator import metrics, tls

from sgs.kube.pki import Authority
from sgs.model.pipeline import Resources


def sample(name: str, **labels: str) -> float | None:
    return prometheus_client.REGISTRY.get_sample_value(name, labels)


def test_runs_are_counted_by_site_pipeline_and_phase_with_every_phase_shown() -> None:
    metrics.RUNS.set("t1/a", "site-m", "nir-m", "Running")
    metrics.RUNS.set("t1/b", "site-m", "nir-m", "Running")
    metrics.RUNS.set("t1/c", "site-m", "nir-m", "Failed")
    assert sample("sgs_operator_runs", site="site-m", pipeline="nir-m", phase="Running") == 2
    assert sample("sgs_operator_runs", site="site-m", pipeline="nir-m", phase="Failed") == 1
    assert sample("sgs_operator_runs", site="site-m", pipeline="nir-m", phase="Succeeded") == 0
    metrics.RUNS.set("t1/b", "site-m", "nir-m", "Succeeded")
    for key in ("t1/a", "t1/b", "t1/c"):
        metrics.RUNS.forget(key)
    assert sample("sgs_operator_runs", site="site-m", pipeline="nir-m", phase="Running") is None  # no stale series


def test_a_sites_phase_is_one_and_the_others_zero() -> None:
    metrics.site_phase("site-p", "Ready")
    metrics.site_phase("site-p", "Degraded")
    assert sample("sgs_operator_sites", site="site-p", phase="Degraded") == 1
    assert sample("sgs_operator_sites", site="site-p", phase="Ready") == 0


def test_an_attempt_gives_queue_wait_used_and_requested_cpu() -> None:
    before = sample("sgs_task_cpu_requested_seconds_total", site="site-q") or 0.0
    usage = {"wall_s": 10.0, "cpu_s": 15.0, "max_rss_mb": 100.0}
    metrics.observe_attempt("site-q", "calibrate", "Completed", usage, Resources(cores=2), attempt_s=12.5)
    assert sample("sgs_task_cpu_requested_seconds_total", site="site-q") == before + 20.0
    assert (sample("sgs_task_cpu_used_seconds_total", site="site-q") or 0) >= 15.0
    assert sample("sgs_operator_task_queue_wait_seconds_sum", site="site-q") == 2.5
    assert sample("sgs_operator_task_attempt_seconds_count", site="site-q") == 1
    labels = {"site": "site-q", "executable": "calibrate", "outcome": "Completed"}
    assert sample("sgs_operator_task_attempts_finished_total", **labels) == 1


def test_an_attempt_without_usage_or_a_seen_creation_times_nothing_it_cannot_know() -> None:
    metrics.observe_attempt("site-r", "calibrate", "Error", None, Resources(), attempt_s=None)
    assert sample("sgs_operator_task_attempt_seconds_count", site="site-r") is None
    assert sample("sgs_operator_task_queue_wait_seconds_count", site="site-r") is None


def test_the_webhook_certificates_expiry_is_exported(tmp_path: Path) -> None:
    certs = tls.serve_with(Authority.create("test-ca"), tmp_path, ["localhost"])
    metrics.webhook_certificates(certs.cert_file, certs.ca_file)
    serving = sample("sgs_operator_webhook_certificate_expiry_timestamp_seconds", kind="serving")
    ca = sample("sgs_operator_webhook_certificate_expiry_timestamp_seconds", kind="ca")
    assert serving is not None and ca is not None and time.time() + 86_400 < serving <= ca
