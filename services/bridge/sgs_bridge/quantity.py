"""Kubernetes resource quantities ("500m", "1Gi", "2", "1e9") as numbers."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_SUFFIXES = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^([+]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


class QuantityError(ValueError):
    pass


def parse_quantity(value: str | int | float) -> Decimal:
    """The quantity's value in base units (cores, bytes); raises QuantityError with the offending text."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if match is None:
        raise QuantityError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 1Gi)")
    number, suffix = match.groups()
    try:
        return Decimal(number) * _SUFFIXES[suffix or ""]
    except InvalidOperation as error:
        raise QuantityError(f"{text!r} is not a Kubernetes quantity") from error


def ceil_int(value: Decimal) -> int:
    return math.ceil(value)


def format_mib(n_bytes: int) -> str:
    return f"{math.ceil(n_bytes / 2**20)}Mi"
