"""sgs: a Kubernetes-native science ground segment."""

__version__ = "0.1.0"
