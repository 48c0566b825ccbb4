"""The error both expression languages raise: a message and the 0-based offset of the first problem."""

from __future__ import annotations


class ExpressionError(ValueError):
    """The expression is malformed or does not fit what it is checked against; ``position`` is the offset."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at position {position})")
        self.message = message
        self.position = position
