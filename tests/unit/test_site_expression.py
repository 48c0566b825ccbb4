"""The Site expression language: set algebra over Site names and labels, and errors that say where."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgs.expression import ExpressionError, SiteFacts, check_sites, evaluate_sites, parse_sites, select_sites
from sgs.expression.sites import SetOp, Word

SITES = (
    SiteFacts("sdc-fr", {"sgs.io/country": "fr", "tier": "primary", "tape": "true"}),
    SiteFacts("sdc-it", {"sgs.io/country": "it", "tier": "primary"}, in_maintenance=True),
    SiteFacts("sdc-de", {"sgs.io/country": "de", "tier": "secondary"}),
    SiteFacts("sdc-us", {"sgs.io/country": "us", "tier": "secondary", "tape": "yes"}),
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*", {"sdc-fr", "sdc-it", "sdc-de", "sdc-us"}),
        ("sdc-fr", {"sdc-fr"}),
        ("sdc-fr | sdc-de", {"sdc-fr", "sdc-de"}),
        ("tier=primary & country=fr", {"sdc-fr"}),
        ("tier=primary & sgs.io/country=it", {"sdc-it"}),
        ("!maintenance", {"sdc-fr", "sdc-de", "sdc-us"}),
        ("maintenance", {"sdc-it"}),
        ("tape", {"sdc-fr", "sdc-us"}),
        ("* \\ sdc-us", {"sdc-fr", "sdc-it", "sdc-de"}),
        ("tier!=primary", {"sdc-de", "sdc-us"}),
        ("!(tier=primary | country=us)", {"sdc-de"}),
        ("tier=primary | tier=secondary & tape", {"sdc-fr", "sdc-it", "sdc-us"}),
        ("(tier=primary | tier=secondary) & !country=us & !maintenance", {"sdc-fr", "sdc-de"}),
        ("tier='primary'", {"sdc-fr", "sdc-it"}),
        ("tier=nonexistent", set()),
    ],
)
def test_selects(text: str, expected: set[str]) -> None:
    assert select_sites(text, SITES) == expected


def test_intersection_binds_tighter_than_difference_and_union() -> None:
    node = parse_sites("a | b \\ c & d")
    assert node == SetOp("|", Word("a", 0), SetOp("\\", Word("b", 4), SetOp("&", Word("c", 8), Word("d", 12))))


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("", "empty Site expression", 0),
        ("tier=primary &", "expected a Site name or label, found end of expression", 14),
        ("(sdc-fr | sdc-de", "expected ')', found end of expression", 16),
        ("sdc-fr sdc-de", "unexpected 'sdc-de'", 7),
        ("tier=", "expected a label value, found end of expression", 5),
        ("sdc-fr ; sdc-de", "unexpected character ';'", 7),
        ("sdc-xx", "unknown Site or label 'sdc-xx' (Sites: sdc-de, sdc-fr, sdc-it, sdc-us)", 0),
        ("tier=primary & contry=fr", "unknown Site label 'contry'", 15),
    ],
)
def test_errors_name_the_problem_and_where(text: str, message: str, position: int) -> None:
    with pytest.raises(ExpressionError) as raised:
        check_sites(text, SITES)
    assert raised.value.message.startswith(message)
    assert raised.value.position == position


def test_an_ambiguous_short_label_key_is_not_guessed() -> None:
    sites = (SiteFacts("a", {"x.io/zone": "1", "y.io/zone": "2"}),)
    with pytest.raises(ExpressionError, match="unknown Site label 'zone'"):
        check_sites("zone=1", sites)
    assert select_sites("x.io/zone=1", sites) == {"a"}


def test_nesting_is_bounded() -> None:
    with pytest.raises(ExpressionError, match="nested deeper"):
        parse_sites("!" * 100 + "sdc-fr")


names = st.sampled_from([site.name for site in SITES])
labels = st.sampled_from(["tier=primary", "tier=secondary", "country=fr", "tape", "maintenance", "*"])
atoms = names | labels


@st.composite
def expressions(draw: st.DrawFn, depth: int = 3) -> str:
    if depth == 0 or draw(st.booleans()):
        return draw(atoms)
    op = draw(st.sampled_from(["|", "&", "\\"]))
    left, right = draw(expressions(depth - 1)), draw(expressions(depth - 1))
    text = f"({left} {op} {right})"
    return f"!{text}" if draw(st.booleans()) else text


@given(expressions())
def test_complement_and_de_morgan_hold(text: str) -> None:
    everyone = {site.name for site in SITES}
    selected = select_sites(text, SITES)
    assert selected <= everyone
    assert select_sites(f"!({text})", SITES) == everyone - selected
    assert select_sites(f"* \\ ({text})", SITES) == everyone - selected


@given(expressions(), expressions())
def test_set_algebra(left: str, right: str) -> None:
    a, b = select_sites(left, SITES), select_sites(right, SITES)
    assert select_sites(f"({left}) | ({right})", SITES) == a | b
    assert select_sites(f"({left}) & ({right})", SITES) == a & b
    assert select_sites(f"({left}) \\ ({right})", SITES) == a - b
    assert evaluate_sites(parse_sites(f"!({left}) & !({right})"), SITES) == select_sites(
        f"!(({left}) | ({right}))", SITES
    )
