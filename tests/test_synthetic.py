"""Markov sources: exact entropy rates, stationary sampling, and the query-string API."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline_core.errors import ConfigError
from pipeline_core.synthetic import (
    SYNTHETIC,
    MarkovSource,
    canonical_source,
    conditional_entropy_bits,
    make_synthetic,
)


def _h2(p: float) -> float:
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def test_order0_uniform_over_4_is_2_bits() -> None:
    source = MarkovSource(order=0, transition=np.full((1, 4), 0.25))
    assert source.entropy_rate_bits() == pytest.approx(2.0, abs=1e-12)
    assert source.alphabet == "abcd"


def test_deterministic_chain_is_0_bits() -> None:
    # a -> b -> c -> a: every next symbol is certain
    cycle = MarkovSource(order=1, transition=np.roll(np.eye(3), 1, axis=1))
    assert cycle.entropy_rate_bits() == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(cycle.stationary(), [1 / 3] * 3)
    assert cycle.generate(9, seed=0) in {"abcabcabc", "bcabcabca", "cabcabcab"}


@pytest.mark.parametrize(("p", "q"), [(0.1, 0.3), (0.5, 0.5), (0.9, 0.02)])
def test_two_state_order1_matches_closed_form(p: float, q: float) -> None:
    # P(a->b) = p, P(b->a) = q; π = (q, p)/(p+q); H = π_a h(p) + π_b h(q)
    source = MarkovSource(order=1, transition=np.array([[1 - p, p], [q, 1 - q]]))
    pi_a, pi_b = q / (p + q), p / (p + q)
    np.testing.assert_allclose(source.stationary(), [pi_a, pi_b], atol=1e-12)
    assert source.entropy_rate_bits() == pytest.approx(pi_a * _h2(p) + pi_b * _h2(q), abs=1e-12)


def test_stationary_is_a_fixed_point_of_the_state_chain() -> None:
    source = MarkovSource.random(order=3, alphabet_size=3, concentration=0.3, seed=5)
    pi = source.stationary()
    assert pi.shape == (27,) and pi.min() >= 0
    assert pi.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(pi @ source.state_matrix(), pi, atol=1e-12)


@pytest.mark.parametrize(("order", "alphabet"), [(0, 5), (1, 4), (2, 6)])
def test_empirical_conditional_entropy_matches_the_exact_rate(order: int, alphabet: int) -> None:
    source = MarkovSource.random(order, alphabet, concentration=0.5, seed=11)
    text = source.generate(200_000, seed=1)
    exact = source.entropy_rate_bits()
    assert conditional_entropy_bits(text, order) == pytest.approx(exact, abs=0.02)
    if order > 0:  # the context matters: ignoring it costs clearly more bits
        assert conditional_entropy_bits(text, 0) > exact + 0.1


def test_generation_starts_in_the_stationary_distribution() -> None:
    # P(a->b) = 0.5, P(b->a) = 0.1: π = (1/6, 5/6). Starting from a fixed "a", or from
    # row a's distribution, would give P(first = b) = 0 or 0.5 instead of 5/6.
    source = MarkovSource(order=1, transition=np.array([[0.5, 0.5], [0.1, 0.9]]))
    firsts = [source.generate(1, seed=s) for s in range(600)]
    assert 0.77 < firsts.count("b") / 600 < 0.9


def test_same_seed_same_text_and_length_exact() -> None:
    source = MarkovSource.random(order=2, alphabet_size=6, concentration=0.5, seed=0)
    a = source.generate(5_000, seed=42)
    assert a == source.generate(5_000, seed=42)
    assert a != source.generate(5_000, seed=43)
    assert len(a) == 5_000 and set(a) <= set("abcdef")
    assert source.generate(1, seed=0) and source.generate(0, seed=0) == ""


def test_invalid_transition_matrices_are_rejected() -> None:
    with pytest.raises(ConfigError, match="summing to 1"):
        MarkovSource(order=0, transition=np.array([[0.5, 0.4]]))
    with pytest.raises(ConfigError, match="shape"):
        MarkovSource(order=1, transition=np.full((3, 2), 0.5))
    with pytest.raises(ConfigError, match="order must be >= 0"):
        MarkovSource(order=-1, transition=np.full((1, 2), 0.5))


# --------------------------------------------------------------------------- registry


def test_default_markov_is_the_documented_demo() -> None:
    text, meta = make_synthetic("markov", {})
    assert meta["params"] == {
        "order": 2,
        "alphabet": 6,
        "length": 60_000,
        "seed": 0,
        "concentration": 0.5,
    }
    assert meta["source"] == (
        "synthetic:markov?alphabet=6&concentration=0.5&length=60000&order=2&seed=0"
    )
    assert len(text) == 60_000 and set(text) == set("abcdef")
    # learnable but not trivial: well below a unigram model, well above zero
    assert 1.0 < meta["entropy_rate_bits"] < conditional_entropy_bits(text, 0) - 0.5
    assert meta["entropy_rate_bits"] == pytest.approx(1.8078, abs=1e-4)


def test_query_params_are_parsed_and_canonical() -> None:
    text, meta = make_synthetic("markov", {"order": "1", "alphabet": "3", "length": "100"})
    assert len(text) == 100 and set(text) <= set("abc")
    assert meta["params"]["order"] == 1
    same, again = make_synthetic("markov", {"length": "100", "alphabet": "3", "order": "1"})
    assert same == text and again["source"] == meta["source"]
    assert canonical_source("markov", SYNTHETIC["markov"].params_model()) == (
        "synthetic:markov?alphabet=6&concentration=0.5&length=60000&order=2&seed=0"
    )


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"order": "-1"}, "order='-1'"),
        ({"order": "two"}, "order='two'"),
        ({"alphabet": "27"}, "alphabet='27'"),
        ({"alphabet": "0"}, "alphabet='0'"),
        ({"length": "0"}, "length='0'"),
        ({"concentration": "0"}, "concentration='0'"),
        ({"concentration": "nan"}, "concentration='nan'"),
        ({"seed": "x"}, "seed='x'"),
    ],
)
def test_invalid_parameter_is_named(params: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        make_synthetic("markov", params)
    message = str(excinfo.value)
    assert message.startswith(f"synthetic:markov: invalid parameter {named}: ")
    assert "\n" not in message


def test_unknown_parameter_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as excinfo:
        make_synthetic("markov", {"colour": "red"})
    assert str(excinfo.value) == (
        "synthetic:markov: unknown parameter 'colour';"
        " known: alphabet, concentration, length, order, seed"
    )


def test_too_many_states_is_refused_before_allocating() -> None:
    with pytest.raises(ConfigError, match="exceeds 1,000,000 states"):
        make_synthetic("markov", {"order": "6", "alphabet": "26"})


def test_unknown_generator_lists_known() -> None:
    with pytest.raises(
        ConfigError, match=r"^unknown synthetic source 'zipf'; known: ([a-z]+, )*markov(, [a-z]+)*$"
    ):
        make_synthetic("zipf", {})
