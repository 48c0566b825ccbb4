"""The dimension expression language: parsing, errors with positions, and parameterised SQL."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sgs_archive.universe import load_universe

from sgs.expression.dimensions import (
    MAX_REGION_RANGES,
    BoolOp,
    Circle,
    Compare,
    ExpressionError,
    InList,
    IntRange,
    Not,
    Overlaps,
    compile_expression,
    compile_matcher,
    healpix_ranges,
    parse,
)
from sgs.model.dataset import DimensionUniverse


@pytest.fixture(scope="module")
def universe() -> DimensionUniverse:
    return load_universe()


def test_parses_the_issue_example() -> None:
    tree = parse("band IN ('VIS','Y') AND tile = 102345")
    assert tree == BoolOp(
        "AND", (InList("band", ("VIS", "Y"), negated=False, position=0), Compare("tile", "=", 102345, 24))
    )


def test_and_binds_tighter_than_or_and_parentheses_override() -> None:
    flat = parse("tile = 1 OR tile = 2 AND band = 'Y'")
    assert isinstance(flat, BoolOp) and flat.op == "OR"
    assert isinstance(flat.operands[1], BoolOp) and flat.operands[1].op == "AND"
    grouped = parse("(tile = 1 OR tile = 2) AND band = 'Y'")
    assert isinstance(grouped, BoolOp) and grouped.op == "AND"


def test_keywords_are_case_insensitive_and_not_nests() -> None:
    tree = parse("not not detector in (1..4, 9)")
    assert tree == Not(Not(InList("detector", (IntRange(1, 4), 9), negated=False, position=8)))


def test_string_escapes_and_not_in() -> None:
    tree = parse("instrument NOT IN ('it''s', 'VIS')")
    assert tree == InList("instrument", ("it's", "VIS"), negated=True, position=0)


def test_region_circle() -> None:
    tree = parse("region OVERLAPS CIRCLE(370.5, -2.25, 0.5)")
    assert tree == Overlaps("region", Circle(10.5, -2.25, 0.5), 0)


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("", "empty expression", 0),
        ("band = ", "expected a value", 7),
        ("band IN ('VIS'", "expected )", 14),
        ("band == 'VIS'", "expected a value", 6),
        ("tile = 1 AND", "expected a dimension name", 12),
        ("tile = 1.5", "integers or strings", 7),
        ("tile ; drop table dataset", "unexpected character", 5),
        ("(tile = 1", "expected )", 9),
        ("tile = 1)", "unexpected ')'", 8),
        ("detector IN (8..1)", "empty range", 13),
        ("detector IN ('a'..3)", "integer bounds", 13),
        ("region OVERLAPS CIRCLE(1, 95, 1)", "dec must be within", 16),
        ("region OVERLAPS CIRCLE(1, 5, 0)", "radius must be within", 16),
        ("tile NOT = 3", "expected IN after NOT", 9),
        ("tile", "expected a comparison", 4),
    ],
)
def test_malformed_expressions_name_the_position(text: str, message: str, position: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse(text)
    assert message in caught.value.message
    assert caught.value.position == position


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(ExpressionError, match="nested deeper"):
        parse("(" * 500 + "tile = 1" + ")" * 500)


def test_compiles_to_placeholders_and_params(universe: DimensionUniverse) -> None:
    fragment = compile_expression("band IN ('VIS','Y') AND tile = 102345", universe)
    assert fragment.sql == '(d."dim_band" = ANY(%s) AND d."dim_tile" = %s)'
    assert fragment.params == [["VIS", "Y"], 102345]


def test_ranges_become_between_and_negations_are_plain_not(universe: DimensionUniverse) -> None:
    fragment = compile_expression("detector NOT IN (1..3, 7)", universe, table_alias="x")
    assert fragment.sql == '(NOT (x."dim_detector" = ANY(%s) OR x."dim_detector" BETWEEN %s AND %s))'
    assert fragment.params == [[7], 1, 3]
    # The same NOT for both spellings: a missing dimension (NULL) stays unknown, so neither form matches it.
    assert compile_expression("NOT detector IN (1..3, 7)", universe, table_alias="x").sql == fragment.sql


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 'red'", "unknown dimension 'colour'"),
        ("tile = 'ten'", "tile must be an integer"),
        ("band = 3", "band must be a string"),
        ("tile > -1", "tile must be between 0"),
        ("skypix = 99999999999", "skypix must be between 0 and 12582911"),
        ("tile OVERLAPS CIRCLE(1, 2, 3)", "not a sky pixelization dimension"),
    ],
)
def test_type_and_universe_errors(universe: DimensionUniverse, text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        compile_expression(text, universe)


def test_dimensions_outside_the_queried_type_are_refused(universe: DimensionUniverse) -> None:
    with pytest.raises(ExpressionError, match="'tile' is not a dimension of the dataset type"):
        compile_expression("tile = 3", universe, allowed=["instrument", "exposure", "detector", "band"])
    with pytest.raises(ExpressionError, match="region queries need a HEALPix dimension"):
        compile_expression("region OVERLAPS CIRCLE(1, 2, 3)", universe, allowed=["tile"])


def test_region_cover_contains_the_centre_pixel(universe: DimensionUniverse) -> None:
    from astropy import units as u
    from astropy_healpix import HEALPix

    circle = Circle(150.1, 2.2, 0.5)
    ranges = healpix_ranges(circle, 10)
    centre = int(HEALPix(nside=2**10, order="nested").lonlat_to_healpix(150.1 * u.deg, 2.2 * u.deg))
    assert any(low <= centre <= high for low, high in ranges)
    assert 0 < len(ranges) <= MAX_REGION_RANGES
    far = int(HEALPix(nside=2**10, order="nested").lonlat_to_healpix(330.0 * u.deg, -40.0 * u.deg))
    assert not any(low <= far <= high for low, high in ranges)
    fragment = compile_expression("region OVERLAPS CIRCLE(150.1, 2.2, 0.5)", universe)
    assert fragment.sql.count("BETWEEN") == len(ranges)


def test_whole_sky_circle_covers_every_pixel() -> None:
    ranges = healpix_ranges(Circle(0.0, 0.0, 180.0), 10)
    assert ranges == [(0, 12 * 4**10 - 1)]


UNIVERSE = load_universe()


@given(st.text(min_size=1, max_size=32).filter(lambda s: "\x00" not in s))
def test_string_values_never_reach_the_sql_text(value: str) -> None:
    universe = UNIVERSE
    literal = "'" + value.replace("'", "''") + "'"
    fragment = compile_expression(f"band = {literal}", universe)
    assert fragment.sql == 'd."dim_band" = %s'
    assert fragment.params == [value]


@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_fails_cleanly(text: str) -> None:
    universe = UNIVERSE
    try:
        fragment = compile_expression(text, universe)
    except ExpressionError as error:
        assert 0 <= error.position <= len(text)
    else:
        assert fragment.sql.count("%s") == len(fragment.params)


@settings(max_examples=40, deadline=None)
@given(
    ra=st.floats(0, 360, exclude_max=True),
    dec=st.floats(-89, 89),
    radius=st.floats(0.001, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_region_cover_holds_every_point_of_the_circle(ra: float, dec: float, radius: float, seed: int) -> None:
    """Points drawn inside the circle all fall in pixels the cover's ranges hold (the cover may be coarser,
    never smaller), whichever search order the cost limits settled on."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astropy_healpix import HEALPix

    ranges = healpix_ranges(Circle(ra, dec, radius), 10)
    assert 0 < len(ranges) <= MAX_REGION_RANGES
    rng = np.random.default_rng(seed)
    centre = SkyCoord(ra * u.deg, dec * u.deg)
    separations = radius * np.sqrt(rng.uniform(0, 0.98, 200)) * u.deg  # clear of the edge's float noise
    points = centre.directional_offset_by(rng.uniform(0, 360, 200) * u.deg, separations)
    pixels = HEALPix(nside=2**10, order="nested").lonlat_to_healpix(points.ra, points.dec)
    lows = np.array([low for low, _ in ranges])
    highs = np.array([high for _, high in ranges])
    covered = ((pixels[:, None] >= lows) & (pixels[:, None] <= highs)).any(axis=1)
    assert covered.all(), f"{int((~covered).sum())} of 200 points outside the cover"


# ---------------------------------------------------------------------------------------------- data-ID matcher


@pytest.mark.parametrize(
    ("text", "data_id", "expected"),
    [
        ("band IN ('VIS','Y') AND tile = 102345", {"band": "Y", "tile": 102345}, True),
        ("band IN ('VIS','Y') AND tile = 102345", {"band": "H", "tile": 102345}, False),
        ("detector IN (1..8, 12)", {"instrument": "VIS", "detector": 12}, True),
        ("detector IN (1..8, 12)", {"instrument": "VIS", "detector": 9}, False),
        ("detector NOT IN (1..8)", {"instrument": "VIS", "detector": 9}, True),
        ("exposure > 1000 OR tile = 1", {"tile": 1}, True),
        ("exposure > 1000 AND tile = 1", {"tile": 1}, False),
        ("observation <= 3", {"instrument": "NISP", "observation": 3}, True),
        ("instrument != 'VIS'", {"instrument": "NISP"}, True),
        ("", {}, True),
    ],
)
def test_matcher_on_data_ids(
    universe: DimensionUniverse, text: str, data_id: dict[str, int | str], expected: bool
) -> None:
    assert compile_matcher(text, universe)(data_id) is expected


@pytest.mark.parametrize("text", ["band = 'H'", "NOT band = 'H'", "band NOT IN ('H')", "NOT band IN ('H')"])
def test_a_missing_dimension_matches_neither_a_predicate_nor_its_negation(
    universe: DimensionUniverse, text: str
) -> None:
    assert compile_matcher(text, universe)({"tile": 1}) is False


def test_matcher_region_uses_the_same_pixel_cover(universe: DimensionUniverse) -> None:
    circle = Circle(150.1, 2.2, 0.5)
    low, high = healpix_ranges(circle, 10)[0]
    matcher = compile_matcher("region OVERLAPS CIRCLE(150.1, 2.2, 0.5)", universe)
    assert matcher({"skypix": low}) and matcher({"skypix": high})
    assert not matcher({"skypix": 0})


def test_matcher_refuses_what_the_sql_compiler_refuses(universe: DimensionUniverse) -> None:
    for text in ("colour = 'red'", "tile = 'x'", "tile >"):
        with pytest.raises(ExpressionError) as sql_error:
            compile_expression(text, universe)
        with pytest.raises(ExpressionError) as matcher_error:
            compile_matcher(text, universe)
        assert str(sql_error.value) == str(matcher_error.value)


def test_unknown_stays_unknown_through_negation_and_or(universe: DimensionUniverse) -> None:
    # With no tile, both halves are unknown: SQL selects nothing, and neither may the matcher.
    assert compile_matcher("tile NOT IN (3) OR NOT (tile NOT IN (3))", universe)({"band": "H"}) is False
    assert compile_matcher("band = 'H' OR NOT tile = 3", universe)({"band": "H"}) is True
