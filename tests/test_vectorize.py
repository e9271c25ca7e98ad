"""Vectorization: tokens, a stable vocabulary, compact ids, contiguous splits, lazy windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline_core.config import DataConfig
from pipeline_core.errors import DataError
from pipeline_core.vectorize import (
    UNK,
    Vocabulary,
    count_windows,
    iter_batches,
    sliding_windows,
    smallest_uint_dtype,
    tokenize,
    vectorize,
    vectorize_cached,
)

TEXT = "the cat sat on the mat. the dog sat on the log! " * 20


def test_char_vocab_is_sorted_with_unk_first() -> None:
    vocab = Vocabulary.build(list("cabbage"), "char")
    assert vocab.tokens == (UNK, "a", "b", "c", "e", "g")
    assert vocab.unk_id == 0
    assert vocab.id_of("z") == 0


def test_word_vocab_by_frequency_then_alpha_and_min_freq() -> None:
    tokens = ["b", "a", "b", "c", "a", "b", "d"]
    vocab = Vocabulary.build(tokens, "word", min_freq=2)
    assert vocab.tokens == (UNK, "b", "a")
    assert list(vocab.encode(["c", "a"])) == [0, 2]


def test_vocab_json_round_trip(tmp_path: Path) -> None:
    vocab = Vocabulary.build(list("hello world"), "char")
    vocab.save(tmp_path / "v.json")
    assert Vocabulary.from_json((tmp_path / "v.json").read_text()) == vocab


def test_smallest_dtype() -> None:
    assert smallest_uint_dtype(256) == np.uint8
    assert smallest_uint_dtype(257) == np.uint16
    assert smallest_uint_dtype(70_000) == np.uint32


def test_word_tokens_keep_char_offsets() -> None:
    tokens, starts = tokenize("Hi, you  there", "word")
    assert tokens == ["Hi", ",", "you", "there"]
    assert list(starts) == [0, 2, 4, 9]


def test_splits_are_contiguous_and_cover_the_corpus() -> None:
    corpus = vectorize(TEXT, DataConfig(context_len=5))
    sizes = corpus.split_sizes()
    assert sum(sizes.values()) == len(TEXT)
    joined = np.concatenate([corpus.train, corpus.val, corpus.test])
    assert np.array_equal(joined, corpus.ids)
    assert corpus.ids.dtype == np.uint8
    decoded = "".join(corpus.vocab.decode(corpus.test))
    assert TEXT.endswith(decoded)
    assert corpus.split_chars == sizes


def test_word_level_counts_characters_for_bpc() -> None:
    corpus = vectorize(TEXT, DataConfig(level="word", context_len=3))
    assert sum(corpus.split_chars.values()) == len(TEXT)
    assert corpus.split_chars["test"] > len(corpus.test)


def test_windows_are_views_not_copies() -> None:
    ids = np.arange(100, dtype=np.uint16)
    windows = sliding_windows(ids, 11)
    assert windows.shape == (90, 11)
    assert np.shares_memory(windows, ids)
    assert count_windows(100, 11, 3) == len(range(0, 90, 3))
    batches = list(iter_batches(ids, 11, 3, 8, rng=None))
    assert sum(len(b) for b in batches) == count_windows(100, 11, 3)
    assert np.array_equal(batches[0][1], np.arange(3, 14))


def test_scoring_positions_cover_every_test_token_with_full_context() -> None:
    corpus = vectorize(TEXT, DataConfig(context_len=8))
    start, stop = corpus.span("test")
    positions = corpus.scoring_positions("test")
    assert list(positions) == list(range(start, stop))
    contexts = corpus.contexts_at(positions[:3])
    assert np.array_equal(contexts[0], corpus.ids[start - 8 : start])


def test_too_short_corpus_names_the_splits() -> None:
    with pytest.raises(DataError, match=r"corpus too short.*context_len \+ 1 = 11"):
        vectorize("abcdefghijklmnopqrstuvwxyz" * 2, DataConfig(context_len=10))


def test_cache_hit_returns_identical_corpus(tmp_path: Path) -> None:
    config = DataConfig(context_len=4)
    first, hit1 = vectorize_cached(TEXT, config, tmp_path)
    second, hit2 = vectorize_cached(TEXT, config, tmp_path)
    assert (hit1, hit2) == (False, True)
    assert np.array_equal(first.ids, second.ids)
    assert first.vocab == second.vocab
    assert first.bounds == second.bounds
    _, hit3 = vectorize_cached(TEXT, DataConfig(context_len=5), tmp_path)
    assert hit3 is False
