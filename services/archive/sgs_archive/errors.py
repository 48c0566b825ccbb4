"""Domain errors that name the offending field (the core's service errors, under the archive's names)."""

from __future__ import annotations

from sgs.service.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    Loc,
    NotFoundError,
    ServiceError,
    TooLargeError,
    UnauthorizedError,
    field_loc,
)

ArchiveError = ServiceError

__all__ = [
    "ArchiveError",
    "ConflictError",
    "ForbiddenError",
    "InvalidInputError",
    "Loc",
    "NotFoundError",
    "TooLargeError",
    "UnauthorizedError",
    "field_loc",
]
