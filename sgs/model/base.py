"""Shared base classes of the domain model: camelCase on the wire (Kubernetes style), snake_case in Python."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class SgsModel(BaseModel):
    """Base of every spec/status model.

    Unknown fields are rejected so a typo in a manifest (``walltme:``) is an error naming the field rather
    than a silently ignored setting.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
        use_enum_values=False,
        validate_assignment=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The manifest form: camelCase keys, defaults and unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(SgsModel):
    """A Kubernetes-style status condition: one aspect of the object's state with a machine-readable reason."""

    type: str = Field(description="Aspect of the object this condition describes, e.g. Ready, Progressing.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase machine-readable reason for the last transition.")
    message: str = Field(default="", description="Human-readable explanation.")
    last_transition_time: datetime | None = Field(default=None, description="When the status last changed (RFC 3339).")


GROUP = "sgs.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class ObjectMeta(BaseModel):
    """The part of Kubernetes object metadata sgs reads; everything else is kept as it came."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class PrinterColumn(BaseModel):
    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0


class KubeObject(SgsModel):
    """Base of the custom resources: apiVersion/kind/metadata around a typed spec and status.

    The class variables describe the CustomResourceDefinition that `sgs crds` generates from the model.
    """

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str
    metadata: ObjectMeta

    plural: ClassVar[str]
    short_names: ClassVar[tuple[str, ...]] = ()
    categories: ClassVar[tuple[str, ...]] = ("sgs",)
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = ()
