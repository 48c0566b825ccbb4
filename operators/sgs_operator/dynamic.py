"""Dynamic resources for the operator's Runs: the files vetted against the Site's roots, named functions run
in the sandbox (``sgs.dynamic``) and never in the operator's process, only those its administrator allows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf

from sgs.dynamic.registry import DynamicFunctions
from sgs.dynamic.resolve import Answer, resolve_pending
from sgs.dynamic.sandbox import SandboxLimits
from sgs.planner import Task
from sgs_operator.objects import TaskStorage
from sgs_operator.settings import OperatorSettings


@dataclass
class DynamicResolver:
    functions: DynamicFunctions
    limits: SandboxLimits
    isolation: dict[str, str] = field(default_factory=dict)  # what the last sandbox achieved (logged on change)

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> DynamicResolver:
        return cls(
            DynamicFunctions.discover("the operator", settings.dynamic_functions),
            SandboxLimits(timeout_s=settings.dynamic_timeout_s, memory_bytes=settings.dynamic_memory_mib * 2**20),
        )

    def answers(self, pending: Sequence[tuple[Task, Any]], storage: TaskStorage, log: kopf.Logger) -> dict[str, Answer]:
        """Task id → overrides or the reason for none (blocking: call it off the event loop)."""
        isolation: dict[str, str] = {}
        answers = resolve_pending(
            pending,
            self.functions,
            self.limits,
            readable=lambda path: storage.readable(path, "dynamic resources"),
            isolation=isolation,
        )
        if isolation and isolation != self.isolation:
            self.isolation = isolation
            report = log.info if isolation.get("network") == "isolated" else log.warning
            report(f"dynamic-resources sandbox: network {isolation.get('network')}, user {isolation.get('user')}")
        return answers
