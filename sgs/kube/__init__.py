"""The Kubernetes toolkit the deployables share: credentials (kubeconfig or in-cluster), one raw-JSON client on a
shared connection pool, a resumable LIST+WATCH, certificates, and leader election on a Lease."""

from sgs.kube.client import CONFLICT, GONE, JSON, MERGE_PATCH, NOT_FOUND, KubeClient, KubeError, is_status
from sgs.kube.config import SERVICE_ACCOUNT_DIR, ClusterConfig, ConfigError, load
from sgs.kube.watch import Cache, Watch, WatchExpiredError

__all__ = [
    "CONFLICT",
    "GONE",
    "JSON",
    "MERGE_PATCH",
    "NOT_FOUND",
    "SERVICE_ACCOUNT_DIR",
    "Cache",
    "ClusterConfig",
    "ConfigError",
    "KubeClient",
    "KubeError",
    "Watch",
    "WatchExpiredError",
    "is_status",
    "load",
]
