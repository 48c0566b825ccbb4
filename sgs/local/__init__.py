"""Run pipelines on this machine: subprocesses scheduled by the planner, with a crash-safe run record."""

from sgs.local.executor import LocalExecutor, LocalRunError, LocalRunResult, run_local

__all__ = ["LocalExecutor", "LocalRunError", "LocalRunResult", "run_local"]
