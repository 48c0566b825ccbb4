"""The pipeline DSL: Euclid Package Definition + Pipeline Script syntax, compiled into a Pipeline graph."""

from sgs.dsl.package import ComputingResources, DslError, Executable, Input, Output
from sgs.dsl.trace import ParallelFunction, PipelineFunction, parallel, pipeline
from sgs.dsl.trigger import Trigger
from sgs.model.pipeline import RetryPolicy

__all__ = [
    "ComputingResources",
    "DslError",
    "Executable",
    "Input",
    "Output",
    "ParallelFunction",
    "PipelineFunction",
    "RetryPolicy",
    "Trigger",
    "parallel",
    "pipeline",
]
