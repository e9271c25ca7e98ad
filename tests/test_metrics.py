"""The one metric, checked against sums computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline_core.config import DataConfig
from pipeline_core.errors import DataError
from pipeline_core.experiment import fit_data
from pipeline_core.metrics import evaluate, score_targets
from pipeline_core.vectorize import vectorize
from tests.helpers import BigramTable, Uniform

TEXT = "abracadabra, said the cat to the rat. " * 40


def test_uniform_model_scores_log2_v_bits_per_char() -> None:
    corpus = vectorize(TEXT, DataConfig(context_len=4))
    v = len(corpus.vocab)
    scores = evaluate(Uniform(v), corpus, "test")
    assert scores.nll == pytest.approx(math.log(v))
    assert scores.bpc == pytest.approx(math.log2(v))
    assert scores.ppl == pytest.approx(v)
    assert scores.n_tokens == len(corpus.test)


def test_bigram_scores_match_a_hand_loop() -> None:
    corpus = vectorize(TEXT, DataConfig(context_len=4))
    model = BigramTable(len(corpus.vocab))
    model.fit(fit_data(corpus))
    scores = evaluate(model, corpus, "test")
    start, stop = corpus.span("test")
    total, hits = 0.0, 0
    for t in range(start, stop):
        row = model.table[corpus.ids[t - 1]]  # type: ignore[index]
        total -= row[corpus.ids[t]]
        hits += int(np.argmax(row) == corpus.ids[t])
    assert scores.nll == pytest.approx(total / (stop - start), rel=1e-12)
    assert scores.bpc == pytest.approx(total / math.log(2) / (stop - start), rel=1e-12)
    assert scores.acc1 == pytest.approx(hits / (stop - start))
    assert scores.acc1 <= scores.acc5 <= 1.0


def test_word_level_bpc_divides_by_characters_not_tokens() -> None:
    corpus = vectorize(TEXT, DataConfig(level="word", context_len=2))
    v = len(corpus.vocab)
    scores = evaluate(Uniform(v), corpus, "test")
    expected = len(corpus.test) * math.log2(v) / corpus.split_chars["test"]
    assert scores.bpc == pytest.approx(expected)
    assert scores.n_chars == corpus.split_chars["test"]


def test_ties_rank_like_argmax() -> None:
    model = Uniform(4)
    result = score_targets(model, np.zeros((4, 1), dtype=int), np.array([0, 1, 2, 3]))
    assert result.top1.tolist() == [True, False, False, False]
    assert result.top5.all()


def test_zero_probability_is_a_clear_error() -> None:
    class Certain(Uniform):
        def log_proba(self, contexts: np.ndarray) -> np.ndarray:
            out = np.full((len(contexts), self.vocab_size), -np.inf)
            out[:, 0] = 0.0
            return out

    with pytest.raises(DataError, match="zero probability"):
        score_targets(Certain(3), np.zeros((2, 1), dtype=int), np.array([0, 2]))
