"""Pilot mode's settings: the seed's ``pipelinerunner.pilots.<template>.*`` keys, validated by pydantic.

An administrator writes either the Euclid Pipeline Runner's properties, one key per line::

    pipelinerunner.pilots.heavy.CPUcores=22
    pipelinerunner.pilots.heavy.rssInMB=66000
    pipelinerunner.pilots.heavy.walltimeInMin=10080
    pipelinerunner.pilots.heavy.maxInstances=100
    pipelinerunner.pilots.heavy.maxQueued=50

or the same tree as YAML (``pipelinerunner: {pilots: {heavy: {CPUcores: 22, ...}}}``). Besides the templates,
``pipelinerunner.pilots.weights.*`` sets the fitness weights and ``pipelinerunner.pilots.policy.*`` the rest
(see :class:`PilotPolicy`). ``maxInstances=0`` disables a template, as in the seed. A bad value raises
PilotConfigError naming the key as the administrator wrote it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PREFIX = ("pipelinerunner", "pilots")
RESERVED = ("weights", "policy")


class PilotConfigError(ValueError):
    """The pilot settings cannot be used; the message names the key."""


class PilotTemplate(BaseModel):
    """One kind of pilot the bridge may submit: its Slurm allocation and how many may exist."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    cpu_cores: int = Field(alias="CPUcores", ge=1, le=4096)
    rss_mb: int = Field(alias="rssInMB", ge=1)
    walltime_min: int = Field(alias="walltimeInMin", ge=1)
    max_instances: int = Field(alias="maxInstances", ge=0)  # 0: the template is disabled
    max_queued: int = Field(alias="maxQueued", ge=0)
    partition: str | None = None

    @property
    def memory_bytes(self) -> int:
        return self.rss_mb * 2**20

    @property
    def walltime_s(self) -> int:
        return self.walltime_min * 60


class FitnessWeights(BaseModel):
    """The weight of each term of the fitness score (seed 002: share of the pilot's CPU, RAM, walltime; wait)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    cpu: float = Field(default=1.0, ge=0)
    ram: float = Field(default=1.0, ge=0)
    walltime: float = Field(default=1.0, ge=0)
    waiting: float = Field(default=1.0, ge=0)
    # Waiting time counts fully once a payload has waited this long (the term is waited / this, capped at 1).
    waiting_norm_s: float = Field(default=600.0, alias="waitingNormInSec", gt=0)
    # Added to a retry's score: larger than every other term together, so a retry goes first (seed 002).
    retry: float = Field(default=10.0, ge=0)
    # Added per unit of the pod's priority (spec.priority, from its PriorityClass).
    priority: float = Field(default=0.001, ge=0)


class PilotPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    # A pilot starts no payload that could not end this long before the pilot's walltime (seconds), and is
    # drained (recycled) once less than this is left.
    margin_s: float = Field(default=60.0, alias="marginInSec", ge=0)
    # A payload that declares no walltime (activeDeadlineSeconds, sgs.io/walltime-seconds) is assumed to need this.
    default_payload_walltime_s: float = Field(default=600.0, alias="defaultPayloadWalltimeInSec", gt=0)
    # A connected pilot with nothing to run for this long is drained (its allocation goes back to Slurm).
    idle_s: float = Field(default=60.0, alias="idleInSec", ge=0)
    # Share of the pilots run in starving mode: the biggest payload first, the rest filled with the smallest.
    starving_share: float = Field(default=0.5, alias="starvingShare", ge=0, le=1)
    # Pilots submitted in one pass, at most (seed: "max number of pilots submitted per pass").
    max_submit_per_pass: int = Field(default=4, alias="maxSubmitPerPass", ge=1)


class PilotSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    templates: dict[str, PilotTemplate]
    weights: FitnessWeights = FitnessWeights()
    policy: PilotPolicy = PilotPolicy()

    @model_validator(mode="after")
    def _some_template(self) -> PilotSettings:
        if not self.templates:
            raise ValueError("no pilot template: give at least pipelinerunner.pilots.<name>.CPUcores and the rest")
        for name in self.templates:
            if not name.replace("_", "").replace("-", "").isalnum() or len(name) > 40:
                raise ValueError(f"template name {name!r}: letters, digits, '-' and '_' only, at most 40")
        return self

    @property
    def enabled(self) -> dict[str, PilotTemplate]:
        return {name: template for name, template in self.templates.items() if template.max_instances > 0}


def load_pilot_settings(path: Path) -> PilotSettings:
    """Read a properties or YAML file into PilotSettings; PilotConfigError names the bad key."""
    try:
        text = path.read_text()
    except OSError as error:
        raise PilotConfigError(f"pilot settings {path}: {error.strerror or error}") from error
    tree = _properties(text, path) if _looks_like_properties(text) else _yaml(text, path)
    return settings_from_tree(tree, str(path))


def settings_from_tree(tree: Any, source: str = "pilot settings") -> PilotSettings:
    """PilotSettings from ``{"pipelinerunner": {"pilots": {...}}}`` (the file's tree)."""
    pilots = tree
    for key in PREFIX:
        if not isinstance(pilots, dict) or key not in pilots:
            raise PilotConfigError(f"{source}: expected keys under {'.'.join(PREFIX)}")
        pilots = pilots[key]
    if not isinstance(pilots, dict):
        raise PilotConfigError(f"{source}: {'.'.join(PREFIX)} must be a mapping of templates")
    body = {
        "templates": {name: value for name, value in pilots.items() if name not in RESERVED},
        **{name: pilots[name] for name in RESERVED if name in pilots},
    }
    try:
        return PilotSettings.model_validate(body)
    except ValidationError as error:
        raise PilotConfigError(f"{source}: {_describe(error)}") from error


def _looks_like_properties(text: str) -> bool:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return bool(lines) and all("=" in line and not line.startswith("pipelinerunner:") for line in lines)


def _properties(text: str, path: Path) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        parts = key.strip().split(".")
        if len(parts) != 4 or tuple(parts[:2]) != PREFIX:
            raise PilotConfigError(f"{path}:{number}: {key.strip()!r} is not pipelinerunner.pilots.<name>.<key>")
        tree.setdefault(parts[0], {}).setdefault(parts[1], {}).setdefault(parts[2], {})[parts[3]] = value.strip()
    return tree


def _yaml(text: str, path: Path) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PilotConfigError(f"{path}: not YAML nor pipelinerunner.pilots.* properties: {error}") from error


def _describe(error: ValidationError) -> str:
    """Each problem as ``pipelinerunner.pilots.<template>.<key>: <message>`` (the administrator's own words)."""
    problems = []
    for item in error.errors():
        where = [str(part) for part in item["loc"]]
        if where and where[0] == "templates":
            where = where[1:]
        problems.append(f"{'.'.join([*PREFIX, *where])}: {item['msg']}")
    return "; ".join(problems)
