"""The Site resource: one data centre — where to compute, where the bytes live, how big it is."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Self

from pydantic import Field, model_validator

from sgs.model.base import Condition, KubeObject, PrinterColumn, SgsModel


class ComputeKind(StrEnum):
    KUBERNETES = "kubernetes"
    SLURM = "slurm"
    LOCAL = "local"
    CLUSTER = "cluster"  # another Kubernetes cluster running its own sgs release: Runs are mirrored there


class StorageKind(StrEnum):
    S3 = "s3"
    POSIX = "posix"


class SecretRef(SgsModel):
    name: str = Field(min_length=1, description="Secret in the Site's namespace.")
    access_key_key: str = Field(default="accessKey", description="Key holding the access key.")
    secret_key_key: str = Field(default="secretKey", description="Key holding the secret key.")


class TokenRef(SgsModel):
    name: str = Field(min_length=1, description="Secret in the Site's namespace.")
    key: str = Field(default="token", description="Key holding the bearer token.")


class KubeconfigRef(SgsModel):
    name: str = Field(min_length=1, description="Secret in the Site's namespace.")
    key: str = Field(default="kubeconfig", min_length=1, description="Key holding the kubeconfig (YAML).")


class Compute(SgsModel):
    """Where a Site runs tasks: Kubernetes nodes by labels, Slurm behind the bridge, or another cluster.

    A ``cluster`` Site is another Kubernetes cluster whose own sgs operator runs the Runs mirrored to it.
    """

    kind: ComputeKind = Field(default=ComputeKind.KUBERNETES)
    namespace: str | None = Field(
        default=None,
        description=(
            "Reserved: Jobs run in their Run's namespace (ownerReferences cannot cross namespaces). A value other "
            "than the Run's namespace keeps the Run Pending with reason SiteNamespaceUnsupported."
        ),
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Labels of the Site's nodes.")
    toleration: str | None = Field(
        default=None, description="Taint key tolerated by the Site's pods (e.g. the virtual-kubelet taint)."
    )
    partition: str | None = Field(default=None, description="Slurm partition, for a Slurm Site.")
    max_parallel: int = Field(default=100, ge=1, le=100_000, description="Tasks running at once at this Site.")
    kubeconfig: KubeconfigRef | None = Field(
        default=None,
        description="For kind cluster: Secret with the kubeconfig of the Site's own cluster (inline credentials "
        "only; its server must be one SGS_OPERATOR_ALLOWED_CLUSTER_SERVERS names).",
    )
    remote_namespace: str | None = Field(
        default=None,
        max_length=63,
        description="For kind cluster: namespace the Runs are mirrored into there; default the Run's namespace.",
    )
    remote_site: str | None = Field(
        default=None,
        max_length=253,
        description="For kind cluster: name of the Site in that cluster that runs them; default this Site's name.",
    )

    @model_validator(mode="after")
    def _cluster_fields(self) -> Self:
        remote = self.kubeconfig or self.remote_namespace or self.remote_site
        if self.kind is ComputeKind.CLUSTER and self.kubeconfig is None:
            raise ValueError("kind cluster needs kubeconfig (a Secret with the cluster's kubeconfig)")
        if self.kind is not ComputeKind.CLUSTER and remote:
            raise ValueError("kubeconfig, remoteNamespace and remoteSite go with kind cluster")
        return self


class Storage(SgsModel):
    """The Site's object store (S3) or file system (POSIX), where replicas live.

    The host directories a Run's tasks may see are declared here, and only these: ``path`` (the storage root,
    under which each Run writes its own output directory) and ``readOnlyPaths``. A Run naming any other path
    is refused.
    """

    kind: StorageKind = Field(default=StorageKind.S3)
    endpoint: str | None = Field(default=None, description="S3 endpoint host:port or URL.")
    bucket: str | None = Field(default=None, description="S3 bucket holding the Site's replicas.")
    path: str | None = Field(
        default=None,
        description="POSIX storage root: Run inputs may lie under it (mounted read-only) and each Run writes "
        "its outputs under it (only its own directory read-write). Required for posix storage; on an s3 Site, "
        "the shared directory the operator's Runs write to.",
    )
    read_only_paths: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Reference roots (calibration libraries, catalogues): Run inputs may lie under them; "
        "mounted read-only.",
    )
    secure: bool = Field(default=True, description="Use TLS to reach the endpoint.")
    credentials: SecretRef | None = Field(default=None, description="Secret with the S3 keys.")

    @model_validator(mode="after")
    def _fields_for_kind(self) -> Self:
        if self.kind is StorageKind.S3 and not (self.endpoint and self.bucket):
            raise ValueError("s3 storage needs endpoint and bucket")
        if self.kind is StorageKind.POSIX and not self.path:
            raise ValueError("posix storage needs path")
        return self


class Capacity(SgsModel):
    cores: int = Field(ge=0, description="Cores available to the survey at this Site.")
    storage_tb: float = Field(ge=0, description="Storage available to the survey, in TB.")
    gpus: int = Field(default=0, ge=0)


class MaintenanceWindow(SgsModel):
    start: datetime
    end: datetime
    reason: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError("maintenance window ends before it starts")
        return self


class SiteSpec(SgsModel):
    display_name: str | None = Field(default=None, description="Human name, e.g. 'SDC-FR (CC-IN2P3)'.")
    compute: Compute = Field(default_factory=Compute)
    storage: Storage
    archive_url: str | None = Field(default=None, description="Archive service endpoint serving this Site.")
    archive_credentials: TokenRef | None = Field(
        default=None,
        description=(
            "Secret with this Site's archive token: what registers replicas arriving at the Site (the transfer "
            "service's ingestion on arrival) as the Site itself."
        ),
    )
    capacity: Capacity
    weight: float = Field(default=1.0, ge=0, le=1000, description="Share of new data placed here (relative).")
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    ingests: list[str] = Field(
        default_factory=list, description="External data sources this Site ingests (e.g. ground telescopes)."
    )


class SitePhase(StrEnum):
    PENDING = "Pending"
    READY = "Ready"
    DEGRADED = "Degraded"
    MAINTENANCE = "Maintenance"


class SiteStatus(SgsModel):
    phase: SitePhase = Field(default=SitePhase.PENDING)
    nodes_ready: int | None = Field(default=None, description="Ready nodes matching the node selector.")
    running_tasks: int | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


class Site(KubeObject):
    """A data centre of the survey: compute target, object store and archive endpoint."""

    kind: str = "Site"
    spec: SiteSpec
    status: SiteStatus | None = None

    plural: ClassVar[str] = "sites"
    short_names: ClassVar[tuple[str, ...]] = ("sgssite",)
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Compute", type="string", json_path=".spec.compute.kind"),
        PrinterColumn(name="Cores", type="integer", json_path=".spec.capacity.cores"),
        PrinterColumn(name="Storage TB", type="number", json_path=".spec.capacity.storageTb"),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    )
