"""Why a Run cannot start yet: the condition its status shows (kind, reason, message)."""

from __future__ import annotations


class RunBlockedError(Exception):
    """The Run cannot start yet; carries the condition to show (reason + message). ``failed``: it never will
    (its stage-in failed for good): the Run is shown Failed, not Pending."""

    def __init__(self, kind: str, reason: str, message: str, *, failed: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason
        self.failed = failed
