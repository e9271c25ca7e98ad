"""Generation through log_proba: greedy, temperature, top-k; scoring a sequence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline_core import generation
from pipeline_core.contract import FitData
from pipeline_core.errors import ConfigError, DataError, PluginError
from pipeline_core.generation import (
    generate,
    generate_text,
    is_stateful,
    sample_next,
    score_text,
    sequence_log_prob,
    token_log_probs,
    unknown_tokens,
)
from pipeline_core.vectorize import Vocabulary
from plugins.lstm import LSTMModel
from tests.helpers import BigramTable, Uniform

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


# ---- carried state: a stateful plugin reads the prompt once, then one step per token ----
def _lstm(vocab_size: int = 6, seed: int = 0) -> LSTMModel:
    model = LSTMModel.create(vocab_size, {"embedding_dim": 8, "hidden_size": 16}, seed=seed)
    model.mark_fitted()
    return model


def _tokens_fed(model: LSTMModel) -> list[int]:
    """Sequence lengths of every forward pass (a hook on the module)."""
    fed: list[int] = []
    model.register_forward_hook(lambda _m, args, _out: fed.append(int(args[0].shape[1])))
    return fed


@pytest.mark.parametrize(("temperature", "top_k"), [(0.0, None), (1.0, None), (1.3, 3)])
def test_carried_state_generates_what_the_covering_window_does(
    temperature: float, top_k: int | None
) -> None:
    model, prompt, n = _lstm(), np.array([1, 2, 3, 1, 4]), 40
    covering = len(prompt) + n  # the window never drops a token
    windows = generate(model, prompt, n, covering, temperature, top_k, seed=5, carry_state=False)
    carried = generate(model, prompt, n, covering, temperature, top_k, seed=5, carry_state=True)
    assert carried.tolist() == windows.tolist()
    # the default for a stateful plugin is the carried state, whatever context_len says
    assert generate(model, prompt, n, 2, temperature, top_k, seed=5).tolist() == carried.tolist()
    assert len(set(carried.tolist())) >= (1 if temperature == 0 else 3)


def test_carried_state_costs_one_step_per_token() -> None:
    model, prompt, n = _lstm(), np.array([1, 2, 3, 1, 4, 2, 2]), 30
    fed = _tokens_fed(model)
    generate(model, prompt, n, context_len=50, temperature=0)
    assert fed == [len(prompt)] + [1] * (n - 1)  # the prompt once, then O(1) per token
    fed.clear()
    generate(model, prompt, n, context_len=50, temperature=0, carry_state=False)
    assert sum(fed) == sum(len(prompt) + i for i in range(n))  # O(n^2) for the window


def test_carried_scoring_equals_the_covering_window_and_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _lstm()
    seq = np.random.default_rng(0).integers(0, 6, 60)
    windows = token_log_probs(model, seq, context_len=len(seq), carry_state=False)
    carried = token_log_probs(model, seq, context_len=3)  # stateful: carried by default
    assert carried == pytest.approx(windows, abs=1e-6)  # float32 inside the LSTM
    assert sequence_log_prob(model, seq, 3, carry_state=None) == pytest.approx(
        float(windows.sum()), rel=1e-6
    )
    monkeypatch.setattr(generation, "SCORE_BATCH", 7)  # state carried across chunks
    assert token_log_probs(model, seq, 3) == pytest.approx(carried, abs=1e-6)


def test_windows_scoring_in_batches_is_the_sum_of_conditionals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _bigram()
    seq = np.random.default_rng(1).integers(0, 4, 50)
    expected = [model.table[seq[t - 1], seq[t]] for t in range(1, len(seq))]  # type: ignore[index]
    monkeypatch.setattr(generation, "SCORE_BATCH", 4)
    assert token_log_probs(model, seq, 3).tolist() == pytest.approx(expected)
    assert token_log_probs(model, seq[:1], 3).size == 0


def test_carrying_state_needs_a_stateful_plugin() -> None:
    with pytest.raises(PluginError, match="carries no state"):
        generate(_bigram(), np.array([1]), 3, 3, carry_state=True)
    with pytest.raises(PluginError, match="carries no state"):
        token_log_probs(_bigram(), np.array([1, 2, 3]), 3, carry_state=True)
    assert not is_stateful(_bigram()) and is_stateful(_lstm())


# ---- text in, text out -----------------------------------------------------------------
CHAR_VOCAB = Vocabulary(("<unk>", " ", "a", "b", "c"))
WORD_VOCAB = Vocabulary(("<unk>", ".", "the", "cat", "sat"))


def test_score_text_counts_tokens_characters_and_unknowns() -> None:
    model = Uniform(len(CHAR_VOCAB))
    model.fit(FitData(np.array([1, 2, 3]), None, 5, 2))
    scored = score_text(model, "abxc a", CHAR_VOCAB, "char", context_len=3)
    assert (scored.tokens, scored.characters, scored.unknown) == (5, 5, 1)
    assert scored.log_prob == pytest.approx(-5 * math.log(5))
    assert scored.bpc == pytest.approx(math.log2(5)) and scored.ppl == pytest.approx(5)
    assert scored.scoring == "windows" and scored.as_dict()["log_prob_bits"] == pytest.approx(
        -5 * math.log2(5)
    )
    words = score_text(model, "the  cat sat.", WORD_VOCAB, "word", context_len=3)
    # three tokens scored after "the", covering "cat sat." (from the second token's start)
    assert (words.tokens, words.characters) == (3, len("cat sat."))
    with pytest.raises(DataError, match="at least two"):
        score_text(model, "a", CHAR_VOCAB, "char", 3)


def test_generate_text_joins_words_and_reports_unknowns() -> None:
    model = BigramTable(len(WORD_VOCAB))
    model.fit(FitData(np.array([2, 3, 4, 1] * 20), None, 5, 2))
    out = generate_text(model, "the dog", WORD_VOCAB, "word", 3, n_tokens=3, temperature=0)
    assert out.unknown == 1 and out.generation == "windows"
    assert out.text == out.prompt + out.continuation and out.continuation.startswith(" ")
    assert len(out.continuation.split()) == 3 == out.tokens
    assert unknown_tokens("the dog and dog", WORD_VOCAB, "word") == ["dog", "and"]
    with pytest.raises(DataError, match="no tokens"):
        generate_text(model, "   ", WORD_VOCAB, "word", 3, n_tokens=3)
    char = generate_text(_lstm(5), "ab", CHAR_VOCAB, "char", 3, n_tokens=4, temperature=0)
    assert char.generation == "carried state" and char.tokens == 4
