"""Why a Run cannot start yet: the condition its status shows (kind, reason, message)."""

from __future__ import annotations


class RunBlockedError(Exception):
    """The Run cannot start yet; carries the condition to show (reason + message)."""

    def __init__(self, kind: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason
