"""File checksums as values: adler32 compares as a number, sha256 as a case-folded digest.

Rucio compared adler32 values as text, so ``09600001`` from one storage and ``9600001`` from another were a
"checksum mismatch" (rucio#4127), and so were ``0A6862D0`` and ``0a6862d0`` (xrootd#139). Here an
:class:`Adler32` is a 32-bit number: it parses 1-8 hex digits in either case (an optional ``0x`` too), equals
only another ``Adler32`` of the same value, and always prints as 8 lowercase hex digits — the form the archive
stores. A :class:`Sha256` digest is lower-cased on the way in, so plain string equality is digest equality.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

ADLER32_INPUT_PATTERN = r"^(0[xX])?[0-9a-fA-F]{1,8}$"
ADLER32_PATTERN = r"^[0-9a-f]{8}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
SHA256_INPUT_PATTERN = r"^[0-9a-fA-F]{64}$"
_ADLER32_TEXT = re.compile(ADLER32_INPUT_PATTERN)
_MAX_ADLER32 = 0xFFFFFFFF


class Adler32:
    """An adler32 checksum: a 32-bit unsigned number, whatever text it was read from.

    ``Adler32.parse("9600001") == Adler32.parse("09600001") == Adler32(0x09600001)``; comparing with a ``str``
    or ``int`` is refused (``NotImplemented``, so ``==`` is False): parse the other side first.
    """

    __slots__ = ("value",)
    value: int

    def __init__(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_ADLER32:
            raise ValueError(f"adler32 must be an integer between 0 and {_MAX_ADLER32:#x}, got {value!r}")
        object.__setattr__(self, "value", value)

    @classmethod
    def parse(cls, text: str) -> Self:
        """From 1-8 hex digits, either case, optionally prefixed by ``0x``; ValueError otherwise."""
        if not isinstance(text, str) or _ADLER32_TEXT.fullmatch(text) is None:
            raise ValueError(f"adler32 must be 1 to 8 hex digits, got {text!r}")
        return cls(int(text, 16))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Adler32 is immutable")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Adler32):
            return self.value == other.value
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Adler32, self.value))

    def __int__(self) -> int:
        return self.value

    def __str__(self) -> str:
        return f"{self.value:08x}"

    def __repr__(self) -> str:
        return f"Adler32('{self}')"

    @classmethod
    def _from_wire(cls, value: object) -> Adler32:
        if isinstance(value, Adler32):
            return value
        try:
            if isinstance(value, str):
                return cls.parse(value)
        except ValueError as exc:
            raise PydanticCustomError("adler32", str(exc)) from None
        raise PydanticCustomError("adler32", "adler32 must be a string of 1 to 8 hex digits")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: type[Any], handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._from_wire, serialization=core_schema.plain_serializer_function_ser_schema(str, when_used="always")
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # Accepted on input in any of the forms storage systems print; always written as 8 lowercase digits.
        return {"type": "string", "pattern": ADLER32_INPUT_PATTERN, "examples": ["0a6862d0"]}


Sha256 = Annotated[str, StringConstraints(to_lower=True, pattern=SHA256_INPUT_PATTERN)]
"""A sha256 hex digest; either case on input, folded to lower case, so string equality is digest equality."""


class Checksums(BaseModel):
    """What identifies a file's content: its size, adler32 and sha256 (equal only if all three are)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(ge=0, le=2**62)
    adler32: Adler32
    sha256: Sha256

    def differences(self, other: Checksums) -> list[str]:
        """The fields that differ, each with both values, e.g. ``["adler32 0a6862d0 != 0a6862d1"]``."""
        return [
            f"{name} {getattr(self, name)} != {getattr(other, name)}"
            for name in ("size", "adler32", "sha256")
            if getattr(self, name) != getattr(other, name)
        ]
