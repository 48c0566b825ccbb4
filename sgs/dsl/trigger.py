"""``Trigger``: a Run created when data arrives, declared beside the pipeline (``@pipeline(triggers=[...])``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sgs.model.pipeline import TriggerSpec


@dataclass(frozen=True)
class Trigger:
    """Datasets of ``dataset_type`` matching ``where`` arriving at a Site (``sites``: a Site expression) are
    grouped by ``group_by``; a group is complete at ``count`` datasets, or with ``all_known`` when every dataset
    the archive knows for its key is there; each complete group becomes one Run, its datasets bound to ``input``
    and ``inputs`` (name -> URI or list of URIs) bound the same way in every Run."""

    name: str
    input: str
    dataset_type: str
    group_by: Sequence[str]
    count: int | None = None
    all_known: bool = False
    where: str = ""
    sites: str | None = None
    collections: Sequence[str] | None = None
    inputs: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    priority: int = 0

    def to_model(self) -> TriggerSpec:
        """The manifest's form; ValueError (pydantic's, naming the field) when it is not a valid trigger."""
        bound = {
            name: {"uri": value} if isinstance(value, str) else {"uris": list(value)}
            for name, value in self.inputs.items()
        }
        complete: dict[str, object] = {"allKnown": True} if self.all_known else {"count": self.count}
        if self.all_known and self.count is not None:
            complete["count"] = self.count  # both given: the model says which one to drop
        return TriggerSpec.model_validate(
            {
                "name": self.name,
                "input": self.input,
                "datasetType": self.dataset_type,
                "where": self.where,
                "sites": self.sites,
                "collections": list(self.collections) if self.collections is not None else None,
                "groupBy": list(self.group_by),
                "complete": {k: v for k, v in complete.items() if v is not None},
                "inputs": bound,
                "priority": self.priority,
            }
        )
