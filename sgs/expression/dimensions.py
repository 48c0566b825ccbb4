"""The dimension expression language, parsed to parameterised SQL (the archive) or to a matcher (the transfer
service's rules, evaluated on each registered dataset's data ID).

    band IN ('VIS', 'Y') AND tile = 102345
    instrument = 'NISP' AND (detector IN (1..8, 12) OR NOT exposure > 1000)
    region OVERLAPS CIRCLE(150.1, 2.2, 0.5)

Grammar (keywords case-insensitive)::

    expr       := and_expr ("OR" and_expr)*
    and_expr   := unary ("AND" unary)*
    unary      := "NOT" unary | "(" expr ")" | predicate
    predicate  := NAME op literal | NAME ["NOT"] "IN" "(" item ("," item)* ")" | NAME "OVERLAPS" region
    op         := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    item       := literal | INT ".." INT
    region     := "CIRCLE" "(" number "," number "," number ")"       -- ra, dec, radius in degrees

A dataset may lack a dimension (a raw has no tile; an implied dimension may be absent). Comparisons on a
missing dimension are *unknown*, and the logic is SQL's three-valued one: NOT unknown is unknown, ``TRUE OR
unknown`` is true, ``FALSE AND unknown`` is false, and a dataset matches only when the whole expression is true.
So ``NOT tile = 3``, ``tile != 3`` and ``tile NOT IN (3)`` select the same datasets, none of them without a
tile, and neither does any double negation of ``tile = 3``.

Values never reach the SQL text: the compiler emits ``%s`` placeholders and a parameter list. Column names come
only from the validated universe. ``region`` (or a HEALPix dimension's own name) before OVERLAPS turns a circle
into ranges of nested HEALPix pixels, a superset of the pixels the circle touches.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import astropy.units as u
import numpy as np
from astropy_healpix import HEALPix

from sgs.expression.errors import ExpressionError as ExpressionError
from sgs.model.dataset import DataIdError, DimensionElement, DimensionUniverse, DimensionValue

MAX_EXPRESSION_LENGTH = 10_000
MAX_IN_ITEMS = 10_000
MAX_DEPTH = 64
MAX_REGION_RANGES = 64
PIXEL_REACH = 1.05  # a HEALPix pixel's largest centre-to-edge distance, in units of its resolution (measured ≤ 1.044)
# astropy-healpix's cone search grows faster than its output: ~1,000 pixels took 6 ms here, ~4,000 took 60 ms.
MAX_REGION_PIXELS = 1024
REGION_KEYWORD = "region"


# --------------------------------------------------------------------------------------------------------------
# Tokens

_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<number>-?\d+(?=\.\.)|-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
  | (?P<range>\.\.)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)
_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "OVERLAPS", "CIRCLE"})


@dataclass(frozen=True)
class Token:
    kind: str  # string, number, range, op, punct, name, keyword, end
    text: str
    position: int


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_LENGTH} characters", MAX_EXPRESSION_LENGTH)
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if match is None:
            raise ExpressionError(f"unexpected character {text[position]!r}", position)
        kind = match.lastgroup or ""
        value = match.group()
        if kind == "name" and value.upper() in _KEYWORDS:
            tokens.append(Token("keyword", value.upper(), position))
        elif kind != "space":
            tokens.append(Token(kind, value, position))
        position = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# --------------------------------------------------------------------------------------------------------------
# Syntax tree


@dataclass(frozen=True)
class Compare:
    dimension: str
    op: str
    value: DimensionValue
    position: int


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int


@dataclass(frozen=True)
class InList:
    dimension: str
    items: tuple[DimensionValue | IntRange, ...]
    negated: bool
    position: int


@dataclass(frozen=True)
class Circle:
    ra: float
    dec: float
    radius: float


@dataclass(frozen=True)
class Overlaps:
    dimension: str  # REGION_KEYWORD or a HEALPix dimension
    region: Circle
    position: int


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND / OR
    operands: tuple[Node, ...]


Node = Compare | InList | Overlaps | Not | BoolOp


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def accept(self, kind: str, text: str | None = None) -> Token | None:
        token = self.current
        if token.kind == kind and (text is None or token.text == text):
            return self.advance()
        return None

    def expect(self, kind: str, text: str | None = None, what: str | None = None) -> Token:
        token = self.accept(kind, text)
        if token is None:
            found = self.current.text or "end of expression"
            raise ExpressionError(f"expected {what or text or kind}, found {found!r}", self.current.position)
        return token

    def parse(self) -> Node:
        if self.current.kind == "end":
            raise ExpressionError("empty expression", 0)
        node = self.expr()
        if self.current.kind != "end":
            raise ExpressionError(f"unexpected {self.current.text!r}", self.current.position)
        return node

    def expr(self) -> Node:
        return self._bool_chain("OR", self.and_expr)

    def and_expr(self) -> Node:
        return self._bool_chain("AND", self.unary)

    def _bool_chain(self, op: str, operand: Callable[[], Node]) -> Node:
        operands = [operand()]
        while self.accept("keyword", op):
            operands.append(operand())
        return operands[0] if len(operands) == 1 else BoolOp(op, tuple(operands))

    def unary(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"expression nested deeper than {MAX_DEPTH}", self.current.position)
        try:
            if self.accept("keyword", "NOT"):
                return Not(self.unary())
            if self.accept("punct", "("):
                node = self.expr()
                self.expect("punct", ")")
                return node
            return self.predicate()
        finally:
            self.depth -= 1

    def predicate(self) -> Node:
        name = self.expect("name", what="a dimension name")
        if op := self.accept("op"):
            return Compare(name.text, "!=" if op.text == "<>" else op.text, self.literal(), name.position)
        negated = self.accept("keyword", "NOT") is not None
        if self.accept("keyword", "IN"):
            return InList(name.text, self.in_items(), negated, name.position)
        if negated:
            raise ExpressionError("expected IN after NOT", self.current.position)
        if self.accept("keyword", "OVERLAPS"):
            return Overlaps(name.text, self.circle(), name.position)
        found = self.current.text or "end of expression"
        raise ExpressionError(
            f"expected a comparison, IN or OVERLAPS after {name.text!r}, found {found!r}", self.current.position
        )

    def in_items(self) -> tuple[DimensionValue | IntRange, ...]:
        self.expect("punct", "(")
        items: list[DimensionValue | IntRange] = [self.in_item()]
        while self.accept("punct", ","):
            items.append(self.in_item())
            if len(items) > MAX_IN_ITEMS:
                raise ExpressionError(f"more than {MAX_IN_ITEMS} items in IN list", self.current.position)
        self.expect("punct", ")")
        return tuple(items)

    def in_item(self) -> DimensionValue | IntRange:
        start = self.current.position
        value = self.literal()
        if not self.accept("range"):
            return value
        high = self.literal()
        if not isinstance(value, int) or not isinstance(high, int):
            raise ExpressionError("a range needs integer bounds, e.g. 1..8", start)
        if high < value:
            raise ExpressionError(f"empty range {value}..{high}", start)
        return IntRange(value, high)

    def literal(self) -> DimensionValue:
        token = self.current
        if token.kind == "string":
            self.advance()
            return token.text[1:-1].replace("''", "'")
        if token.kind == "number":
            self.advance()
            if re.fullmatch(r"-?\d+", token.text) is None:
                raise ExpressionError(f"dimension values are integers or strings, not {token.text}", token.position)
            return int(token.text)
        found = token.text or "end of expression"
        raise ExpressionError(f"expected a value (integer or 'string'), found {found!r}", token.position)

    def number(self) -> float:
        token = self.expect("number", what="a number")
        value = float(token.text)
        if not math.isfinite(value):
            raise ExpressionError(f"{token.text} is not a finite number", token.position)
        return value

    def circle(self) -> Circle:
        start = self.current.position
        self.expect("keyword", "CIRCLE", what="CIRCLE(ra, dec, radius)")
        self.expect("punct", "(")
        ra = self.number()
        self.expect("punct", ",")
        dec = self.number()
        self.expect("punct", ",")
        radius = self.number()
        self.expect("punct", ")")
        if not -90.0 <= dec <= 90.0:
            raise ExpressionError(f"CIRCLE dec must be within [-90, 90], got {dec}", start)
        if not 0.0 < radius <= 180.0:
            raise ExpressionError(f"CIRCLE radius must be within (0, 180] degrees, got {radius}", start)
        return Circle(ra % 360.0, dec, radius)


def parse(text: str) -> Node:
    """The syntax tree of ``text``; ExpressionError with the position of the first problem."""
    return _Parser(text).parse()


# --------------------------------------------------------------------------------------------------------------
# Compilation


@dataclass
class SqlFragment:
    """A boolean SQL expression with ``%s`` placeholders and its parameters, in order."""

    sql: str
    params: list[object] = field(default_factory=list)


def dimension_column(name: str) -> str:
    """The dataset table's column for a dimension (names are validated against NAME_PATTERN)."""
    return f'"dim_{name}"'


@dataclass(frozen=True)
class _Compiler:
    universe: DimensionUniverse
    allowed: frozenset[str] | None
    table_alias: str

    def column(self, name: str) -> str:
        return f"{self.table_alias}.{dimension_column(name)}" if self.table_alias else dimension_column(name)

    def element(self, name: str, position: int) -> DimensionElement:
        if name not in self.universe.elements:
            known = ", ".join(self.universe.names)
            raise ExpressionError(f"unknown dimension {name!r} (known: {known})", position)
        if self.allowed is not None and name not in self.allowed:
            raise ExpressionError(f"{name!r} is not a dimension of the dataset type queried", position)
        return self.universe.elements[name]

    def checked(self, element: DimensionElement, value: DimensionValue, position: int) -> DimensionValue:
        try:
            return element.check_value(value)
        except DataIdError as error:
            raise ExpressionError(f"{element.name} {error.reason}", position) from None

    def compile(self, node: Node) -> SqlFragment:
        if isinstance(node, BoolOp):
            parts = [self.compile(operand) for operand in node.operands]
            return SqlFragment(
                "(" + f" {node.op} ".join(p.sql for p in parts) + ")", [x for p in parts for x in p.params]
            )
        if isinstance(node, Not):
            inner = self.compile(node.operand)
            # Plain SQL NOT keeps a missing dimension's NULL unknown (see the module docstring).
            return SqlFragment(f"(NOT {inner.sql})", inner.params)
        if isinstance(node, Compare):
            element = self.element(node.dimension, node.position)
            value = self.checked(element, node.value, node.position)
            return SqlFragment(f"{self.column(element.name)} {node.op} %s", [value])
        if isinstance(node, InList):
            return self.compile_in(node)
        return self.compile_overlaps(node)

    def compile_in(self, node: InList) -> SqlFragment:
        element = self.element(node.dimension, node.position)
        column = self.column(element.name)
        values: list[DimensionValue] = []
        clauses: list[str] = []
        params: list[object] = []
        for item in node.items:
            if isinstance(item, IntRange):
                self.checked(element, item.low, node.position)
                self.checked(element, item.high, node.position)
                clauses.append(f"{column} BETWEEN %s AND %s")
                params.extend([item.low, item.high])
            else:
                values.append(self.checked(element, item, node.position))
        if values:
            clauses.insert(0, f"{column} = ANY(%s)")
            params.insert(0, values)
        sql = clauses[0] if len(clauses) == 1 else "(" + " OR ".join(clauses) + ")"
        if node.negated:
            return SqlFragment(f"(NOT {sql})", params)
        return SqlFragment(sql, params)

    def compile_overlaps(self, node: Overlaps) -> SqlFragment:
        element = self.skypix_element(node)
        assert element.healpix_order is not None  # guaranteed by skypix_element
        ranges = healpix_ranges(node.region, element.healpix_order)
        column = self.column(element.name)
        clauses = [f"{column} BETWEEN %s AND %s" for _ in ranges]
        params: list[object] = [bound for low_high in ranges for bound in low_high]
        return SqlFragment("(" + " OR ".join(clauses) + ")", params)

    def skypix_element(self, node: Overlaps) -> DimensionElement:
        if node.dimension.lower() == REGION_KEYWORD:
            candidates = [
                e for e in self.universe.skypix_dimensions() if self.allowed is None or e.name in self.allowed
            ]
            if not candidates:
                raise ExpressionError(
                    "region queries need a HEALPix dimension in the dataset type queried", node.position
                )
            return candidates[0]
        element = self.element(node.dimension, node.position)
        if element.healpix_order is None:
            raise ExpressionError(f"{element.name!r} is not a sky pixelization dimension", node.position)
        return element


def healpix_ranges(circle: Circle, order: int) -> list[tuple[int, int]]:
    """Inclusive ranges of nested HEALPix pixels at ``order`` that cover the circle.

    Searches at the finest order (≤ ``order``) whose cover still merges into at most MAX_REGION_RANGES ranges
    (and needs at most MAX_REGION_PIXELS pixels), then expresses those coarser pixels as ranges at ``order``
    (nested numbering keeps children contiguous). Orders whose outcome is known from the circle's area are not
    searched: coarser than one pixel per circle (a handful of pixels, always accepted and then refined), or
    finer than MAX_REGION_PIXELS pixels' worth of area (a cover needs at least that many).
    """
    lon, lat, radius = circle.ra * u.deg, circle.dec * u.deg, circle.radius * u.deg
    area = 2 * math.pi * (1 - math.cos(math.radians(min(circle.radius, 180.0))))
    best: list[tuple[int, int]] = [(0, 12 * 4**order - 1)]
    for search_order in range(_coarsest_useful_order(area, order), order + 1):
        if area / _pixel_area(search_order) > MAX_REGION_PIXELS:
            break
        healpix = _healpix(search_order)
        # astropy-healpix's cone search can miss a pixel the circle only clips (seen at order 10 with a radius
        # a quarter of a pixel); widened by the largest centre-to-edge distance of a pixel (1.05 × resolution),
        # every pixel with a point of the circle in it is found.
        padded = radius + PIXEL_REACH * healpix.pixel_resolution
        pixels = np.unique(np.asarray(healpix.cone_search_lonlat(lon, lat, radius=padded), np.int64))
        if len(pixels) > MAX_REGION_PIXELS:
            break  # a finer search would cost more than it saves (and a huge circle must stay cheap)
        ranges = _merge_ranges(pixels, 4 ** (order - search_order))
        if len(ranges) > MAX_REGION_RANGES:
            break
        best = ranges
    return best


def _pixel_area(order: int) -> float:
    return 4 * math.pi / (12 * 4.0**order)


def _coarsest_useful_order(area: float, order: int) -> int:
    useful = 0
    while useful < order and _pixel_area(useful + 1) >= area:
        useful += 1
    return useful


@functools.cache
def _healpix(order: int) -> HEALPix:
    return HEALPix(nside=2**order, order="nested")


def _merge_ranges(pixels: np.ndarray, scale: int) -> list[tuple[int, int]]:
    """Sorted unique pixels as inclusive ranges of their children ``scale`` times finer."""
    if pixels.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(pixels) != 1) + 1
    starts = pixels[np.concatenate(([0], breaks))]
    ends = pixels[np.concatenate((breaks - 1, [pixels.size - 1]))]
    return list(zip((starts * scale).tolist(), ((ends + 1) * scale - 1).tolist(), strict=True))


def compile_expression(
    text: str,
    universe: DimensionUniverse,
    allowed: Sequence[str] | None = None,
    table_alias: str = "d",
) -> SqlFragment:
    """``text`` as a parameterised SQL condition over the dataset table's dimension columns.

    ``allowed`` restricts the dimensions to those of the dataset type queried (required and implied).
    """
    compiler = _Compiler(universe, frozenset(allowed) if allowed is not None else None, table_alias)
    return compiler.compile(parse(text))


# --------------------------------------------------------------------------------------------------------------
# Matching one data ID (the same three-valued logic as the SQL: a dimension the data ID lacks is unknown)

Truth = bool | None
DataIdMatcher = Callable[[Mapping[str, DimensionValue]], bool]
_Predicate = Callable[[Mapping[str, DimensionValue]], Truth]
_COMPARE: dict[str, Callable[[DimensionValue, DimensionValue], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class _MatcherBuilder:
    compiler: _Compiler

    def build(self, node: Node) -> _Predicate:
        if isinstance(node, BoolOp):
            parts = [self.build(operand) for operand in node.operands]
            return _all_of(parts) if node.op == "AND" else _any_of(parts)
        if isinstance(node, Not):
            inner = self.build(node.operand)
            # Unknown stays unmatched under NOT: a dataset lacking the dimension matches neither x = v nor NOT x = v.
            return lambda data_id: None if (value := inner(data_id)) is None else not value
        if isinstance(node, Compare):
            element = self.compiler.element(node.dimension, node.position)
            wanted = self.compiler.checked(element, node.value, node.position)
            compare = _COMPARE[node.op]
            name = element.name
            return lambda data_id: None if (v := data_id.get(name)) is None else _safe(compare, v, wanted)
        if isinstance(node, InList):
            return self.build_in(node)
        return self.build_overlaps(node)

    def build_in(self, node: InList) -> _Predicate:
        element = self.compiler.element(node.dimension, node.position)
        values: set[DimensionValue] = set()
        ranges: list[IntRange] = []
        for item in node.items:
            if isinstance(item, IntRange):
                self.compiler.checked(element, item.low, node.position)
                self.compiler.checked(element, item.high, node.position)
                ranges.append(item)
            else:
                values.add(self.compiler.checked(element, item, node.position))
        name, negated = element.name, node.negated

        def predicate(data_id: Mapping[str, DimensionValue]) -> Truth:
            value = data_id.get(name)
            if value is None:
                return None
            found = value in values or (isinstance(value, int) and any(r.low <= value <= r.high for r in ranges))
            return not found if negated else found

        return predicate

    def build_overlaps(self, node: Overlaps) -> _Predicate:
        element = self.compiler.skypix_element(node)
        assert element.healpix_order is not None  # guaranteed by skypix_element
        ranges = healpix_ranges(node.region, element.healpix_order)
        name = element.name

        def predicate(data_id: Mapping[str, DimensionValue]) -> Truth:
            value = data_id.get(name)
            if value is None:
                return None
            return isinstance(value, int) and any(low <= value <= high for low, high in ranges)

        return predicate


def _safe(
    compare: Callable[[DimensionValue, DimensionValue], bool], left: DimensionValue, right: DimensionValue
) -> Truth:
    try:
        return compare(left, right)
    except TypeError:  # a data ID value of the wrong type cannot be compared: unknown, as in SQL's cast failure
        return None


def _all_of(parts: list[_Predicate]) -> _Predicate:
    def predicate(data_id: Mapping[str, DimensionValue]) -> Truth:
        unknown = False
        for part in parts:
            value = part(data_id)
            if value is False:
                return False
            unknown = unknown or value is None
        return None if unknown else True

    return predicate


def _any_of(parts: list[_Predicate]) -> _Predicate:
    def predicate(data_id: Mapping[str, DimensionValue]) -> Truth:
        unknown = False
        for part in parts:
            value = part(data_id)
            if value is True:
                return True
            unknown = unknown or value is None
        return None if unknown else False

    return predicate


def compile_matcher(text: str, universe: DimensionUniverse, allowed: Sequence[str] | None = None) -> DataIdMatcher:
    """``text`` as a predicate over one data ID: True exactly when the SQL condition would select the dataset.

    Checks the expression against the universe the way :func:`compile_expression` does (same errors).
    """
    if not text.strip():
        return lambda data_id: True
    compiler = _Compiler(universe, frozenset(allowed) if allowed is not None else None, "")
    predicate = _MatcherBuilder(compiler).build(parse(text))
    return lambda data_id: predicate(data_id) is True
