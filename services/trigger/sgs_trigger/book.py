"""The Pipelines (their triggers) and Sites the service acts on, kept current by Kubernetes watches.

Both are :class:`sgs.kube.Cache` implementations: updates are cheap dictionary writes on the event loop; the
triggers are compiled (against the archive's dimension universe) when first asked for after a change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from sgs.expression import ExpressionError, SiteFacts
from sgs.kube import JSON
from sgs.model.dataset import DataIdError, DimensionUniverse
from sgs.model.pipeline import PipelineSpec
from sgs.model.site import MaintenanceWindow, SitePhase
from sgs_trigger.match import CompiledTrigger, compile_trigger

log = logging.getLogger(__name__)

ObjectKey = tuple[str, str]  # (namespace, name)


def _key(obj: JSON) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class PipelineBook:
    """Every Pipeline that has triggers; ``triggers(universe)`` compiles them once per change."""

    def __init__(self) -> None:
        self._specs: dict[ObjectKey, PipelineSpec] = {}
        self._compiled: list[CompiledTrigger] | None = None
        self._universe: DimensionUniverse | None = None
        self.refused: dict[tuple[str, str, str], str] = {}
        """(namespace, pipeline, trigger) -> why it is not served (it does not fit the archive's universe)."""

    def replace(self, items: list[JSON]) -> None:
        self._specs = {}
        for obj in items:
            self._put(obj)
        self._changed()

    def apply(self, kind: str, obj: JSON) -> None:
        key = _key(obj)
        if kind == "DELETED":
            self._specs.pop(key, None)
        else:
            self._put(obj)
        self._changed()

    def _changed(self) -> None:
        # Compiled at once (a few expressions parsed) once the universe is known, so a refused trigger is logged
        # when it is applied, not at its first event.
        self._compiled = None
        if self._universe is not None:
            self.triggers(self._universe)

    def _put(self, obj: JSON) -> None:
        key = _key(obj)
        try:
            spec = PipelineSpec.model_validate(obj.get("spec") or {})
        except ValidationError as error:  # admitted before the webhook ran: the operator marks it Invalid
            log.warning("pipeline %s/%s is not valid, its triggers are not served: %s", *key, error)
            self._specs.pop(key, None)
            return
        if spec.triggers:
            self._specs[key] = spec
        else:
            self._specs.pop(key, None)

    @property
    def pipelines(self) -> int:
        return len(self._specs)

    def triggers(self, universe: DimensionUniverse) -> list[CompiledTrigger]:
        if self._compiled is not None and universe is self._universe:
            return self._compiled
        compiled: list[CompiledTrigger] = []
        refused: dict[tuple[str, str, str], str] = {}
        for (namespace, name), spec in sorted(self._specs.items()):
            for trigger in spec.triggers:
                try:
                    compiled.append(compile_trigger(namespace, name, trigger, universe))
                except (ExpressionError, DataIdError) as error:
                    refused[(namespace, name, trigger.name)] = str(error)
        for (namespace, name, trigger_name), reason in refused.items():
            if self.refused.get((namespace, name, trigger_name)) != reason:
                log.error("pipeline %s/%s trigger %s is not served: %s", namespace, name, trigger_name, reason)
        self.refused, self._compiled, self._universe = refused, compiled, universe
        log.info("serving %d trigger(s) of %d pipeline(s)", len(compiled), len(self._specs))
        return compiled


@dataclass(frozen=True)
class _Site:
    name: str
    labels: Mapping[str, str]
    maintenance: Sequence[MaintenanceWindow]
    phase: str


class SiteBook:
    """The Sites of every namespace, as the Site expression language sees them."""

    def __init__(self) -> None:
        self._sites: dict[ObjectKey, _Site] = {}

    def replace(self, items: list[JSON]) -> None:
        self._sites = {}
        for obj in items:
            self._put(obj)

    def apply(self, kind: str, obj: JSON) -> None:
        if kind == "DELETED":
            self._sites.pop(_key(obj), None)
        else:
            self._put(obj)

    def _put(self, obj: JSON) -> None:
        key = _key(obj)
        meta = obj.get("metadata") or {}
        try:
            windows = [MaintenanceWindow.model_validate(w) for w in (obj.get("spec") or {}).get("maintenance") or []]
        except ValidationError:
            windows = []
        phase = str((obj.get("status") or {}).get("phase") or SitePhase.PENDING.value)
        self._sites[key] = _Site(key[1], dict(meta.get("labels") or {}), windows, phase)

    def states(self, namespace: str) -> tuple[dict[str, str], dict[str, list[MaintenanceWindow]]]:
        """Each of the namespace's Sites' phase and maintenance windows (what a placement's fallback weighs)."""
        mine = [site for (ns, _), site in self._sites.items() if ns == namespace]
        return {s.name: s.phase for s in mine}, {s.name: list(s.maintenance) for s in mine}

    def facts(self, now: datetime | None = None) -> dict[str, list[SiteFacts]]:
        now = now or datetime.now(UTC)
        found: dict[str, list[SiteFacts]] = {}
        for (namespace, _), site in sorted(self._sites.items()):
            busy = any(w.start <= now < w.end for w in site.maintenance)
            found.setdefault(namespace, []).append(SiteFacts(site.name, site.labels, busy))
        return found
