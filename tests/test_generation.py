"""Generation through log_proba: greedy, temperature, top-k; scoring a sequence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline_core.contract import FitData
from pipeline_core.errors import ConfigError
from pipeline_core.generation import generate, sample_next, sequence_log_prob
from tests.helpers import BigramTable


def _bigram() -> BigramTable:
    train = np.array([1, 2, 3] * 50 + [1, 3], dtype=np.int64)
    model = BigramTable(4)
    model.fit(FitData(train, None, 4, 3))
    return model


def test_greedy_follows_the_most_likely_chain() -> None:
    out = generate(_bigram(), np.array([1]), 6, context_len=3, temperature=0)
    assert out.tolist() == [2, 3, 1, 2, 3, 1]


def test_top_k_one_is_greedy_and_sampling_is_seeded() -> None:
    model = _bigram()
    greedy = generate(model, np.array([2]), 10, 3, temperature=0)
    assert generate(model, np.array([2]), 10, 3, temperature=1.5, top_k=1).tolist() == (
        greedy.tolist()
    )
    a = generate(model, np.array([2]), 50, 3, temperature=2.0, seed=7)
    b = generate(model, np.array([2]), 50, 3, temperature=2.0, seed=7)
    assert a.tolist() == b.tolist()
    assert len(set(a.tolist())) >= 3


def test_high_temperature_flattens() -> None:
    logp = np.log(np.array([0.7, 0.2, 0.1]))
    rng = np.random.default_rng(0)
    draws = [sample_next(logp, 100.0, None, rng) for _ in range(3000)]
    assert np.bincount(draws, minlength=3).min() > 800


def test_bad_sampling_parameters() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        sample_next(np.zeros(3), -1.0, None, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="top_k"):
        sample_next(np.zeros(3), 1.0, 0, np.random.default_rng(0))


def test_sequence_log_prob_is_the_sum_of_conditionals() -> None:
    model = _bigram()
    seq = np.array([1, 2, 3, 1, 3])
    expected = sum(model.table[seq[t - 1], seq[t]] for t in range(1, len(seq)))  # type: ignore[index]
    assert sequence_log_prob(model, seq, context_len=2) == pytest.approx(expected)
    assert sequence_log_prob(model, seq, context_len=10) == pytest.approx(expected)
    assert math.isfinite(expected)
