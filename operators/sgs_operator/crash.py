"""Named crash points for the crash-safety tests: ``SGS_OPERATOR_CRASH_AT=<point>[:<n>]`` makes the operator
SIGKILL itself the n-th time (default 1st) it passes that point, the way `kill -9` would at that instant.

A real kill at a random moment rarely lands in the narrow windows that matter (between the record write and
the Job create, say); these points make each window testable. Unset, they cost one dict lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

POINTS = (
    "after-record-before-job",  # the task is recorded Running, its Job not created yet
    "after-job-before-status",  # Jobs created, the Run's status not updated
    "after-finish-before-record",  # a Job finished and the planner took it, the record not written
    "before-status-patch",  # status computed, not yet written
    "after-finish-before-register",  # a task's success and its outputs' outbox rows written, nothing registered
    "after-register-before-mark",  # outputs registered at the archive, their outbox rows still pending
)
_passed: Counter[str] = Counter()


def crash_point(name: str) -> None:
    wanted = os.environ.get("SGS_OPERATOR_CRASH_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _passed[name] += 1
    if _passed[name] >= int(nth or "1"):
        os.kill(os.getpid(), signal.SIGKILL)
