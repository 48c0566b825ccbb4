"""Run pipelines on this machine: subprocesses scheduled by the planner, with a crash-safe run record.

Names are loaded lazily so that light users of ``sgs.local.process`` (the operator's Job builder) do not pay for
importing the planner and the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sgs.local.executor import LocalExecutor, LocalRunError, LocalRunResult, run_local

__all__ = ["LocalExecutor", "LocalRunError", "LocalRunResult", "run_local"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sgs.local import executor

        return getattr(executor, name)
    raise AttributeError(f"module 'sgs.local' has no attribute {name!r}")
