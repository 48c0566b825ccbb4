"""The image configuration a Dockerfile's last stage declares (ENV, USER, WORKDIR, ENTRYPOINT, CMD, LABEL, EXPOSE).

The daemonless builder does not run Dockerfiles: it makes the base image's layers itself (sgs.images.build) and
takes each image's configuration from its Dockerfile, so the file Docker users build and the image CI builds say
the same thing. A per-deployable Dockerfile may hold configuration only; a RUN or COPY there would be a step the
daemonless build silently skipped, so it is refused (the base's own RUN/COPY steps are the builder's code).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

CONFIG_INSTRUCTIONS = frozenset({"ENV", "USER", "WORKDIR", "ENTRYPOINT", "CMD", "LABEL", "EXPOSE"})
# Steps the builder implements itself for the base image (see images/base/Dockerfile).
BUILD_INSTRUCTIONS = frozenset({"RUN", "COPY", "ADD"})


class DockerfileError(ValueError):
    """A Dockerfile the daemonless builder cannot honour, with the file and line."""


class ImageConfig(BaseModel):
    """The OCI image config fields a Dockerfile's last stage sets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    env: dict[str, str] = Field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    exposed_ports: list[str] = Field(default_factory=list)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Instructions with their first line number: comments dropped, backslash continuations joined."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        lines.append((start, " ".join(part for part in pending if part)))
        pending = []
    if pending:
        lines.append((start, " ".join(pending)))
    return lines


def _key_values(argument: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(argument))


def _exec_form(argument: str, where: str) -> list[str]:
    try:
        value = json.loads(argument)
    except json.JSONDecodeError as err:
        raise DockerfileError(f'{where}: use the exec form ["..."] (a shell form needs /bin/sh -c)') from err
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DockerfileError(f"{where}: expected a JSON list of strings")
    return value


def read_config(path: Path, *, allow_build_steps: bool) -> ImageConfig:
    """The configuration of `path`'s last stage. `allow_build_steps` skips RUN/COPY/ADD (the base image, whose
    steps the builder performs); otherwise they are an error."""
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    ports: list[str] = []
    fields: dict[str, object] = {}
    for number, line in _logical_lines(path.read_text()):
        where = f"{path}:{number}"
        instruction, _, argument = line.partition(" ")
        instruction = instruction.upper()
        argument = argument.strip()
        if instruction == "FROM":
            # A new stage: only the last one's configuration is the image's.
            env, labels, ports, fields = {}, {}, [], {}
        elif instruction == "ARG":
            continue
        elif instruction in BUILD_INSTRUCTIONS:
            if not allow_build_steps:
                raise DockerfileError(
                    f"{where}: {instruction} in an image's Dockerfile: the daemonless build adds configuration "
                    "only; put build steps in images/base/Dockerfile and sgs.images.build"
                )
        elif instruction == "ENV":
            env.update(_key_values(argument))
        elif instruction == "LABEL":
            labels.update(_key_values(argument))
        elif instruction == "EXPOSE":
            ports.extend(port if "/" in port else f"{port}/tcp" for port in argument.split())
        elif instruction == "USER":
            fields["user"] = argument
        elif instruction == "WORKDIR":
            fields["workdir"] = argument
        elif instruction in {"ENTRYPOINT", "CMD"}:
            fields[instruction.lower()] = _exec_form(argument, where)
        else:
            raise DockerfileError(f"{where}: {instruction} is not supported by the daemonless builder")
    return ImageConfig.model_validate({"env": env, "labels": labels, "exposed_ports": sorted(ports), **fields})
