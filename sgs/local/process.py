"""A task's command line: the Executable's command, split once, followed by its ``--port=value`` arguments.

Shared by the local executor and the operator's Job builder. Running the command is ``sgs.launcher``'s part.
"""

from __future__ import annotations

import functools
import shlex


def command_argv(command: str, args: list[str]) -> list[str]:
    return [*_split_command(command), *args]


@functools.lru_cache(maxsize=256)
def _split_command(command: str) -> tuple[str, ...]:
    """A pipeline has a handful of commands and a fan-out runs each thousands of times: split each once."""
    return tuple(shlex.split(command))
