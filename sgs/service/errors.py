"""Domain errors that name the offending field; a service maps them to 4xx answers in FastAPI's error shape."""

from __future__ import annotations

from collections.abc import Sequence

Loc = tuple[str | int, ...]


class ServiceError(Exception):
    status = 400
    kind = "bad_request"

    def __init__(self, loc: Sequence[str | int], message: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {message}" if loc else message)
        self.loc: Loc = tuple(loc)
        self.message = message

    def body(self) -> dict[str, object]:
        return {"detail": [{"loc": list(self.loc), "msg": self.message, "type": self.kind}]}


class InvalidInputError(ServiceError):
    status = 422
    kind = "invalid"


class NotFoundError(ServiceError):
    status = 404
    kind = "not_found"


class ConflictError(ServiceError):
    status = 409
    kind = "conflict"


class UnauthorizedError(ServiceError):
    status = 401
    kind = "unauthorized"


class ForbiddenError(ServiceError):
    status = 403
    kind = "forbidden"


class TooLargeError(ServiceError):
    status = 413
    kind = "too_large"


class UnavailableError(ServiceError):
    status = 503
    kind = "unavailable"


def field_loc(field: str) -> Loc:
    """``"datasets[3].data_id"`` -> ``("datasets", 3, "data_id")``."""
    loc: list[str | int] = []
    for part in field.replace("]", "").split("."):
        name, *indexes = part.split("[")
        if name:
            loc.append(name)
        loc.extend(int(i) for i in indexes if i.isdigit())
    return tuple(loc)
