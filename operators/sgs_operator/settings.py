"""Operator settings: environment (``SGS_OPERATOR_*``) or the ``sgs operator`` options."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from sgs.kube.config import SERVICE_ACCOUNT_DIR


class FinishedJobs(StrEnum):
    KEEP = "keep"  # visible to `kubectl get jobs` until the Run is deleted
    DELETE = "delete"  # removed once their outcome is recorded (failed ones after failed_job_ttl_s)


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SGS_OPERATOR_", extra="ignore")

    dsn: str = Field(description="PostgreSQL DSN of the task table (psycopg conninfo or URL).")
    namespaces: list[str] = Field(default_factory=list, description="Namespaces served; empty = all.")
    kubeconfig: str | None = Field(default=None, description="Kubeconfig path; default $KUBECONFIG.")
    reconcile_interval: float = Field(default=1.0, gt=0, description="Seconds between reconciles of a Run.")
    create_concurrency: int = Field(default=32, ge=1, le=512, description="Job creations in flight at once.")
    record_wave: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="Tasks recorded Running per transaction; a wave's Jobs are created while the next is recorded.",
    )
    job_grace_s: float = Field(
        default=30.0,
        gt=0,
        description="A Job this operator created is trusted to exist for this long before "
        "the watch shows it; after that it is created again (same name, so at most once).",
    )
    finished_jobs: FinishedJobs = Field(
        default=FinishedJobs.DELETE,
        description="delete: a Job (and its pod) is deleted once its outcome is in the task table, so etcd stays "
        "small for 100k-task Runs; keep: Jobs stay until their Run is deleted.",
    )
    failed_job_ttl_s: int = Field(
        default=86_400,
        ge=0,
        description="With finished_jobs=delete, a failed Job is kept this long after it failed, for people to "
        "inspect its pod and logs; the cluster's TTL controller then deletes it (ttlSecondsAfterFinished).",
    )
    dynamic_functions: list[str] | None = Field(
        default=None,
        description="Dynamic-resource functions Pipelines may name: entry points of group sgs.dynamic_resources "
        "installed with the operator. Unset = every one installed; a list narrows them (empty = none).",
    )
    dynamic_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="Time a dynamic-resources function gets per file (sandboxed)."
    )
    dynamic_memory_mib: int = Field(
        default=1024, ge=64, description="Address space of the sandbox that runs dynamic-resources functions."
    )
    default_image: str = Field(
        default="ghcr.io/sgs/task-runner:latest",
        description="Image of executables that name none (the process provider ignores it).",
    )
    tmpdir_mount: str = Field(default="/sgs/tmp", description="Where the TMPDIR emptyDir is mounted.")
    task_wrapper: list[str] = Field(
        default_factory=lambda: ["sgs", "task", "exec"],
        min_length=1,
        description="What a task at an S3 Site runs its command under (then '--' and the command): the task image's "
        '`sgs task exec`; a JSON list, e.g. ["/opt/sgs/bin/python", "-m", "sgs.task", "exec"].',
    )
    webhook_host: str = Field(default="127.0.0.1", description="Address the API server reaches the webhook at.")
    webhook_port: int = Field(default=0, ge=0, le=65535, description="Webhook port; 0 = any free port.")
    webhook: bool = Field(default=True, description="Serve the validating admission webhook.")
    webhook_name: str = Field(default="sgs-operator.sgs.io", description="ValidatingWebhookConfiguration name.")
    metrics_port: int | None = Field(default=None, ge=0, le=65535, description="Prometheus /metrics port.")
    site_check_interval: float = Field(default=10.0, gt=0, description="Seconds between Site readiness checks.")

    # --- running in a cluster: credentials, listen addresses, leader election, the webhook's CA (kube-toolkit) ---
    service_account_dir: Path = Field(
        default=SERVICE_ACCOUNT_DIR,
        description="The pod's service-account files (token, ca.crt, namespace), used when no kubeconfig is given.",
    )
    operator_namespace: str | None = Field(
        default=None,
        description="Namespace of the operator's Lease and webhook CA Secret; default: its own pod's, else 'default'.",
    )
    webhook_listen: str = Field(
        default="127.0.0.1",
        description="Address the webhook listens on (0.0.0.0 in a pod); webhook_host is what the API server dials.",
    )
    webhook_ca_secret: str = Field(
        default="sgs-operator-webhook-ca",
        description="Secret keeping the webhook's CA: made once, reused by restarts and replicas (stable caBundle).",
    )
    metrics_address: str = Field(default="127.0.0.1", description="Address the Prometheus /metrics port listens on.")
    leader_election: bool = Field(default=True, description="Act only while holding the Lease (one replica acts).")
    leader_identity: str = Field(
        default="", description="This replica's name in the Lease; default: hostname and process id."
    )
    lease_name: str = Field(default="sgs-operator", description="Name of the coordination.k8s.io Lease.")
    lease_duration_s: float = Field(
        default=15.0, gt=0, description="A standby takes over this long after the leader's last renewal."
    )
    lease_renew_deadline_s: float = Field(
        default=10.0, gt=0, description="The leader stops acting this long after its last renewal."
    )
    transfer_url: str | None = Field(
        default=None, description="Transfer service: stages in a Run's archive inputs missing at its Site."
    )
    transfer_token: SecretStr | None = Field(default=None, description="Admin token of the transfer service.")
    stage_in: bool = Field(
        default=True, description="With transfer_url: stage in missing inputs (false: Pending, InputsNotAtSite)."
    )
    stage_in_lifetime_s: int = Field(
        default=7 * 86400, ge=60, le=365 * 86400, description="Lifetime of a Run's stage-in rule (deleted at its end)."
    )
    lease_retry_s: float = Field(default=2.0, gt=0, description="Seconds between renewals (and a standby's checks).")

    # --- cluster Sites (compute.kind cluster): another cluster's sgs operator runs the Runs sent there ---
    allowed_cluster_servers: list[str] = Field(
        default_factory=list,
        description="API servers a cluster Site's kubeconfig may name, as host or host:port (https only); "
        'a JSON list, e.g. ["sdc-fr.example.org:6443"]. Empty: no cluster Site is usable.',
    )
    redispatch_after_s: float = Field(
        default=120.0,
        ge=0,
        description="Seconds a cluster Site must have been unreachable before a Run sent there whose copy never "
        "got its start permit (so none of its tasks can have run) is sent to another Ready Site; 0: never. "
        "Only Runs whose Site the operator chose (spec.site unset).",
    )
    origin: str = Field(
        default="",
        max_length=63,
        description="This control plane's name on the copies it makes in cluster Sites (their sgs.io/origin "
        "label, what its garbage collection keys on); default: the uid of its cluster's kube-system namespace.",
    )
