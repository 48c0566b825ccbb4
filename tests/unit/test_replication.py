"""Replication's pure core: destination choice, source choice, retry decisions, rule selectors."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sgs_archive.universe import load_universe

from sgs.expression import ExpressionError
from sgs.replication.placement import Candidate, SourceOption, choose_destinations, choose_source, rendezvous_rank
from sgs.replication.retry import RetryPolicy, after_failure, backoff_s
from sgs.replication.rules import Selector, glob_prefix

SITES = [Candidate("site-a", 1.0), Candidate("site-b", 1.0), Candidate("site-c", 2.0)]


def test_destinations_are_deterministic_and_keep_existing_copies() -> None:
    first = choose_destinations("dataset-1", 2, SITES, holding={"site-b"})
    again = choose_destinations("dataset-1", 2, list(reversed(SITES)), holding={"site-b"})
    assert first == again
    assert "site-b" in first.sites and len(first.new) == 1 and first.shortfall == 0


def test_enough_existing_copies_need_nothing_new() -> None:
    chosen = choose_destinations("d", 1, SITES, holding={"site-a", "site-c"})
    assert chosen.new == () and len(chosen.sites) == 1


def test_spread_follows_weight() -> None:
    firsts = Counter(rendezvous_rank(str(uuid.UUID(int=i)), SITES)[0].name for i in range(6000))
    # site-c weighs half of the total: it should rank first for about half of the datasets.
    assert 0.45 < firsts["site-c"] / 6000 < 0.55
    assert 0.2 < firsts["site-a"] / 6000 < 0.3


def test_free_storage_lowers_the_share_and_a_full_site_gets_nothing() -> None:
    sites = [Candidate("a", 1.0, capacity_bytes=100, used_bytes=90), Candidate("b", 1.0, capacity_bytes=100)]
    firsts = Counter(rendezvous_rank(f"d{i}", sites)[0].name for i in range(3000))
    assert firsts["b"] > 4 * firsts["a"]
    chosen = choose_destinations("d", 2, sites, holding=set(), size=20)
    assert chosen.sites == ("b",) and chosen.shortfall == 1
    assert chosen.reason == "2 copies asked, 2 Sites match (a, b); not usable now: a full (10 bytes free, 20 needed)"


def test_removing_a_site_moves_only_the_datasets_that_ranked_it() -> None:
    keys = [f"d{i}" for i in range(2000)]
    before = {k: choose_destinations(k, 1, SITES, set()).sites for k in keys}
    after = {k: choose_destinations(k, 1, SITES[:2], set()).sites for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == ("site-c",) for k in moved)


def test_shortfall_names_the_reason() -> None:
    chosen = choose_destinations("d", 3, SITES[:2], holding=set())
    assert chosen.shortfall == 1
    assert chosen.reason == "3 copies asked, 2 Sites match (site-a, site-b)"
    nothing = choose_destinations("d", 1, [], holding=set())
    assert nothing.reason == "1 copy asked, but the Site expression matches no Site"
    maintenance = [Candidate("a", in_maintenance=True), Candidate("b")]
    assert choose_destinations("d", 2, maintenance, set()).reason == (
        "2 copies asked, 2 Sites match (a, b); not usable now: a in maintenance"
    )


def test_source_choice_prefers_then_balances() -> None:
    options = [SourceOption("a", active_transfers=3), SourceOption("b", active_transfers=1), SourceOption("c", False)]
    assert choose_source(options) == "b"
    assert choose_source(options, preferred={"a"}) == "a"
    assert choose_source([SourceOption("c", healthy=False)]) is None


@given(st.integers(1, 50), st.floats(0, 1))
def test_backoff_grows_is_jittered_and_capped(attempt: int, jitter: float) -> None:
    policy = RetryPolicy(base_s=2, max_s=60)
    delay = backoff_s(attempt, policy, jitter)
    step = min(60, 2 * 2 ** (attempt - 1))
    assert step / 2 <= delay <= step


def test_stuck_after_attempts_or_time_and_then_slow_retries() -> None:
    policy = RetryPolicy(base_s=1, max_s=30, fast_attempts=3, stuck_after_s=100)
    assert not after_failure(2, 10, policy, 0.5).stuck
    assert after_failure(3, 10, policy, 0.5) == after_failure(1, 100, policy, 0.5)
    assert after_failure(3, 10, policy, 0.5).delay_s == 30 and after_failure(3, 10, policy, 0.5).stuck


def test_selector_matches_type_collection_patterns_and_where() -> None:
    universe = load_universe()
    selector = Selector("nir_raw", ("NISP-SIM/raw/*", "exact"), "observation IN (1, 4)").compile(universe)
    data_id: dict[str, int | str] = {"instrument": "NISP-SIM", "observation": 4, "band": "H"}
    assert selector.matches("nir_raw", "NISP-SIM/raw/all", data_id)
    assert selector.matches("nir_raw", "exact", data_id)
    assert not selector.matches("nir_raw", "exact-not", data_id)
    assert not selector.matches("nir_stack", "exact", data_id)
    assert not selector.matches("nir_raw", "exact", {**data_id, "observation": 2})
    assert Selector().compile(universe).matches("anything", "any/run", {})
    assert glob_prefix("NISP-SIM/raw/*") == "NISP-SIM/raw/"


def test_selector_refuses_a_bad_expression() -> None:
    with pytest.raises(ExpressionError, match="unknown dimension 'colour'"):
        Selector(where="colour = 'red'").compile(load_universe())
