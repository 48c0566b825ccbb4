"""Pure planning: graph expansion, readiness, retries, priorities. No I/O, no clock."""

from sgs.planner.planner import (
    MapInstance,
    Planner,
    PlannerConfig,
    PlannerError,
    RunPhase,
    Task,
    TaskRecord,
    TaskState,
    Value,
)
from sgs.planner.policy import Capacity, FitnessWeights, apply_dynamic, retry_delay

__all__ = [
    "Capacity",
    "FitnessWeights",
    "MapInstance",
    "Planner",
    "PlannerConfig",
    "PlannerError",
    "RunPhase",
    "Task",
    "TaskRecord",
    "TaskState",
    "Value",
    "apply_dynamic",
    "retry_delay",
]
