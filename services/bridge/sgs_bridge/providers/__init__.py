"""Backends that run a pod's task: `process` (local subprocesses) and `slurm` (sbatch and friends)."""

from sgs_bridge.providers.base import BackendUnavailableError, Capacity, Provider, SubmitRefusedError

__all__ = ["BackendUnavailableError", "Capacity", "Provider", "SubmitRefusedError"]
