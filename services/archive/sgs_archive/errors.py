"""Domain errors that name the offending field; the app maps them to 4xx answers in FastAPI's error shape."""

from __future__ import annotations

from collections.abc import Sequence

Loc = tuple[str | int, ...]


class ArchiveError(Exception):
    status = 400
    kind = "bad_request"

    def __init__(self, loc: Sequence[str | int], message: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {message}" if loc else message)
        self.loc: Loc = tuple(loc)
        self.message = message

    def body(self) -> dict[str, object]:
        return {"detail": [{"loc": list(self.loc), "msg": self.message, "type": self.kind}]}


class InvalidInputError(ArchiveError):
    status = 422
    kind = "invalid"


class NotFoundError(ArchiveError):
    status = 404
    kind = "not_found"


class ConflictError(ArchiveError):
    status = 409
    kind = "conflict"


class UnauthorizedError(ArchiveError):
    status = 401
    kind = "unauthorized"


class ForbiddenError(ArchiveError):
    status = 403
    kind = "forbidden"


class TooLargeError(ArchiveError):
    status = 413
    kind = "too_large"


def field_loc(field: str) -> Loc:
    """``"datasets[3].data_id"`` -> ``("datasets", 3, "data_id")``."""
    loc: list[str | int] = []
    for part in field.replace("]", "").split("."):
        name, *indexes = part.split("[")
        if name:
            loc.append(name)
        loc.extend(int(i) for i in indexes if i.isdigit())
    return tuple(loc)
