"""The Site expression language: which Sites a replication rule may place copies at.

    tier=primary & country=fr         both labels
    site-a | site-b                   either Site, by name
    * \\ site-c                        every Site but one
    !maintenance                      Sites not in a maintenance window right now
    (tier=primary | tier=secondary) & !country=us

Grammar (after Rucio's RSE expressions, plus ``!`` and ``!=``)::

    expr     := diff ("|" diff)*                 -- union, lowest precedence
    diff     := inter ("\\" inter)*               -- difference, left to right
    inter    := unary ("&" unary)*               -- intersection
    unary    := "!" unary | "(" expr ")" | term  -- "!" is the complement within all Sites
    term     := "*" | WORD | WORD ("=" | "!=") VALUE

A bare WORD is a Site name, a label key whose value is ``true`` at some Site, or ``maintenance``. A label key
may be written without its prefix (``country`` for ``sgs.io/country``) when that is unambiguous. Evaluation is
a pure function of the Sites it is given; :func:`check` refuses words that name no Site and no label, so a
typo is an error at rule creation rather than a rule that silently matches nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sgs.expression.errors import ExpressionError

MAX_SITE_EXPRESSION_LENGTH = 2_000
MAX_DEPTH = 32
MAINTENANCE = "maintenance"
TRUE_VALUES = frozenset({"true", "yes", "1"})


@dataclass(frozen=True)
class SiteFacts:
    """What a Site expression can see of a Site: its name, its labels and whether it is in maintenance now."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    in_maintenance: bool = False


# --------------------------------------------------------------------------------------------------------------
# Tokens

_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<op>!=|[=&|\\!()*])
  | (?P<word>[A-Za-z0-9_][A-Za-z0-9_.\-/]*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str  # string, op, word, end
    text: str
    position: int


def _tokenize(text: str) -> list[_Token]:
    if len(text) > MAX_SITE_EXPRESSION_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_SITE_EXPRESSION_LENGTH} characters", 0)
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if match is None:
            raise ExpressionError(f"unexpected character {text[position]!r}", position)
        if match.lastgroup != "space":
            tokens.append(_Token(match.lastgroup or "", match.group(), position))
        position = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


# --------------------------------------------------------------------------------------------------------------
# Syntax tree


@dataclass(frozen=True)
class AllSites:
    position: int


@dataclass(frozen=True)
class Word:
    """A Site name, a label set to true, or ``maintenance``."""

    word: str
    position: int


@dataclass(frozen=True)
class LabelIs:
    key: str
    value: str
    negated: bool
    position: int


@dataclass(frozen=True)
class Complement:
    operand: SiteNode


@dataclass(frozen=True)
class SetOp:
    op: str  # "|", "&" or "\\"
    left: SiteNode
    right: SiteNode


SiteNode = AllSites | Word | LabelIs | Complement | SetOp


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def accept(self, text: str) -> _Token | None:
        token = self.current
        if token.kind == "op" and token.text == text:
            self.index += 1
            return token
        return None

    def parse(self) -> SiteNode:
        if self.current.kind == "end":
            raise ExpressionError("empty Site expression", 0)
        node = self.union()
        if self.current.kind != "end":
            raise ExpressionError(f"unexpected {self.current.text!r}", self.current.position)
        return node

    def _chain(self, op: str, operand: Callable[[], SiteNode]) -> SiteNode:
        node = operand()
        while self.accept(op):
            node = SetOp(op, node, operand())
        return node

    def union(self) -> SiteNode:
        return self._chain("|", self.difference)

    def difference(self) -> SiteNode:
        return self._chain("\\", self.intersection)

    def intersection(self) -> SiteNode:
        return self._chain("&", self.unary)

    def unary(self) -> SiteNode:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"expression nested deeper than {MAX_DEPTH}", self.current.position)
        try:
            if self.accept("!"):
                return Complement(self.unary())
            if self.accept("("):
                node = self.union()
                if not self.accept(")"):
                    raise ExpressionError(f"expected ')', found {self._found()}", self.current.position)
                return node
            return self.term()
        finally:
            self.depth -= 1

    def term(self) -> SiteNode:
        token = self.current
        if star := self.accept("*"):
            return AllSites(star.position)
        if token.kind != "word":
            raise ExpressionError(f"expected a Site name or label, found {self._found()}", token.position)
        self.index += 1
        for op in ("=", "!="):
            if self.accept(op):
                return LabelIs(token.text, self.value(), op == "!=", token.position)
        return Word(token.text, token.position)

    def value(self) -> str:
        token = self.current
        if token.kind == "word":
            self.index += 1
            return token.text
        if token.kind == "string":
            self.index += 1
            return token.text[1:-1].replace("''", "'")
        raise ExpressionError(f"expected a label value, found {self._found()}", token.position)

    def _found(self) -> str:
        return repr(self.current.text) if self.current.text else "end of expression"


def parse_sites(text: str) -> SiteNode:
    """The syntax tree of a Site expression; ExpressionError with the position of the first problem."""
    return _Parser(text).parse()


# --------------------------------------------------------------------------------------------------------------
# Meaning


def _label(site: SiteFacts, key: str) -> str | None:
    """The value of ``key`` at ``site``, also when written without its prefix (``country`` for ``x.io/country``)."""
    if key in site.labels:
        return site.labels[key]
    found = [value for name, value in site.labels.items() if name.rsplit("/", 1)[-1] == key]
    return found[0] if len(found) == 1 else None


def _known_label(key: str, sites: Iterable[SiteFacts]) -> bool:
    return any(_label(site, key) is not None for site in sites)


def evaluate_sites(node: SiteNode, sites: Sequence[SiteFacts]) -> frozenset[str]:
    """Names of the Sites the expression selects among ``sites``."""
    everyone = frozenset(site.name for site in sites)
    if isinstance(node, AllSites):
        return everyone
    if isinstance(node, Word):
        if node.word == MAINTENANCE:
            return frozenset(site.name for site in sites if site.in_maintenance)
        by_label = {s.name for s in sites if (_label(s, node.word) or "").lower() in TRUE_VALUES}
        return frozenset(by_label | ({node.word} & everyone))
    if isinstance(node, LabelIs):
        matching = frozenset(site.name for site in sites if _label(site, node.key) == node.value)
        return everyone - matching if node.negated else matching
    if isinstance(node, Complement):
        return everyone - evaluate_sites(node.operand, sites)
    left, right = evaluate_sites(node.left, sites), evaluate_sites(node.right, sites)
    if node.op == "|":
        return left | right
    if node.op == "&":
        return left & right
    return left - right


def _terms(node: SiteNode) -> Iterable[Word | LabelIs]:
    if isinstance(node, Word | LabelIs):
        yield node
    elif isinstance(node, Complement):
        yield from _terms(node.operand)
    elif isinstance(node, SetOp):
        yield from _terms(node.left)
        yield from _terms(node.right)


def check_sites(text: str, sites: Sequence[SiteFacts]) -> SiteNode:
    """Parse ``text`` and refuse words that name no known Site and no label of one (ExpressionError)."""
    node = parse_sites(text)
    names = {site.name for site in sites}
    for term in _terms(node):
        if isinstance(term, Word):
            if term.word != MAINTENANCE and term.word not in names and not _known_label(term.word, sites):
                known = ", ".join(sorted(names)) or "none"
                raise ExpressionError(f"unknown Site or label {term.word!r} (Sites: {known})", term.position)
        elif not _known_label(term.key, sites):
            labels = sorted({key for site in sites for key in site.labels})
            raise ExpressionError(
                f"unknown Site label {term.key!r} (labels: {', '.join(labels) or 'none'})", term.position
            )
    return node


def select_sites(text: str, sites: Sequence[SiteFacts]) -> frozenset[str]:
    """Parse, check and evaluate in one call."""
    return evaluate_sites(check_sites(text, sites), sites)
