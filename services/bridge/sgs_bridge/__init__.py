"""The virtual-kubelet bridge: a Kubernetes node whose pods run on Slurm or as local processes.

Kept light on import: `python -m sgs_bridge.runner` (one per task) loads this package too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sgs_bridge.bridge import Bridge, BridgeConfig
    from sgs_bridge.launch import BridgeProcess, running_bridge

__all__ = ["Bridge", "BridgeConfig", "BridgeProcess", "running_bridge"]


def __getattr__(name: str) -> Any:
    if name in ("Bridge", "BridgeConfig"):
        from sgs_bridge import bridge

        return getattr(bridge, name)
    if name in ("BridgeProcess", "running_bridge"):
        from sgs_bridge import launch

        return getattr(launch, name)
    raise AttributeError(name)
