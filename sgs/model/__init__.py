"""The domain model: pydantic v2 models that are the single source of truth for CRDs and APIs."""

from sgs.model.base import API_VERSION, GROUP, VERSION, Condition, ConditionStatus, KubeObject, ObjectMeta
from sgs.model.pipeline import (
    Binding,
    DynamicResources,
    ExecutableSpec,
    MapSpec,
    NamedBinding,
    OutputSpec,
    Pipeline,
    PipelineSpec,
    PipelineStatus,
    PortSpec,
    Ref,
    Resources,
    RetryPolicy,
    StepSpec,
)
from sgs.model.placement import DataPlacement, DataPlacementSpec, DataPlacementStatus
from sgs.model.run import Run, RunInput, RunPhase, RunSpec, RunStatus, TaskCounts
from sgs.model.site import Site, SiteSpec, SiteStatus

CUSTOM_RESOURCES: tuple[type[KubeObject], ...] = (Site, Pipeline, Run, DataPlacement)

__all__ = [
    "API_VERSION",
    "CUSTOM_RESOURCES",
    "GROUP",
    "VERSION",
    "Binding",
    "Condition",
    "ConditionStatus",
    "DataPlacement",
    "DataPlacementSpec",
    "DataPlacementStatus",
    "DynamicResources",
    "ExecutableSpec",
    "KubeObject",
    "MapSpec",
    "NamedBinding",
    "ObjectMeta",
    "OutputSpec",
    "Pipeline",
    "PipelineSpec",
    "PipelineStatus",
    "PortSpec",
    "Ref",
    "Resources",
    "RetryPolicy",
    "Run",
    "RunInput",
    "RunPhase",
    "RunSpec",
    "RunStatus",
    "Site",
    "SiteSpec",
    "SiteStatus",
    "StepSpec",
    "TaskCounts",
]
