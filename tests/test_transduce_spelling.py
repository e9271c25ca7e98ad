"""Open-vocabulary transduce scoring: an ``<unk>`` target pays the spelling of its real
string under the corpus's shared fallback, text figures compare against the real
target, and nothing changes where no target is ``<unk>``."""

from __future__ import annotations

import math
import pickle
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from pipeline_core.config import DataConfig, TrainConfig
from pipeline_core.contract import FitData
from pipeline_core.metrics import Scores
from pipeline_core.pairs import PairSet
from pipeline_core.tasks.transduce import (
    Codec,
    TransduceTask,
    edit_distance,
    score_pairs,
)
from pipeline_core.training import fit_model
from pipeline_core.vectorize import EncodedCorpus, tokenize, vectorize
from tests.test_transduce import WONDERLAND, Oracle, corpus_of

TRAIN = "the cat sat on the mat and the dog ran to the log . "
VAL_CHARS = "thé cat sat on the mét and the dog rén to the log . "  # 'é': 2 UTF-8 bytes
TEST_CHARS = "the c€t sat on the mat and the d€g ran to the log . "  # '€': 3 bytes
TEST_WORDS = "zebras quickly jumped over lazy foxes while owls hooted "


def three_splits(level: str, train: str, val: str, test: str) -> EncodedCorpus:
    """A corpus whose splits are exactly these three texts."""
    sizes = [len(tokenize(part, level)[0]) for part in (train, val, test)]  # type: ignore[arg-type]
    total = sum(sizes)
    fractions = (sizes[0] / total, sizes[1] / total, sizes[2] / total)
    config = DataConfig(level=level, context_len=4, splits=fractions)  # type: ignore[arg-type]
    corpus = vectorize(train + val + test, config)
    assert corpus.bounds == (sizes[0], sizes[0] + sizes[1])
    return corpus


def hand_bits(train_words: Sequence[str], word: str) -> float:
    """The word-level fallback recomputed: add-one character unigram over the training
    words' characters, end-of-word and escape; an unseen character 8 bits per byte."""
    chars = Counter("".join(train_words))
    denom = sum(chars.values()) + len(train_words) + len(chars) + 2
    bits = math.log2(denom / (len(train_words) + 1))
    for ch in word:
        seen = chars.get(ch)
        bits += math.log2(denom / (seen + 1)) if seen else math.log2(denom) + 8 * len(ch.encode())
    return bits


def total_bits(scores: Scores) -> float:
    return scores.bpc * scores.n_chars


def as_ids(pairs: PairSet, corpus: EncodedCorpus) -> tuple[PairSet, Codec]:
    """The same pairs read as ids only: no strings, no fallback (the old scoring)."""
    return PairSet(pairs.sources, pairs.targets), Codec(corpus.vocab, corpus.level)


class Fixed(Oracle):
    """Outputs the source reversed; each target token and end at p = (t % 5 + 1) / 6."""

    def transduce(
        self, sources: Sequence[np.ndarray], max_len: int, beam_size: int = 1
    ) -> list[np.ndarray]:
        return [s[::-1][:max_len] for s in sources]

    def target_log_proba(
        self, sources: Sequence[np.ndarray], targets: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        return [np.log(np.append(t % 5 + 1, 1) / 6.0) for t in targets]


class AllOnUnk(Oracle):
    """The open-vocabulary cheat: all mass on ``<unk>`` while a word is due, then on the
    end; it answers the encoded target (``<unk>`` for every unknown word)."""

    def target_log_proba(
        self, sources: Sequence[np.ndarray], targets: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        return [np.full(len(t) + 1, math.log1p(-1e-9)) for t in targets]


def test_char_level_unknown_targets_pay_8_bits_per_utf8_byte() -> None:
    """A trained seq2seq and the copy baseline, on val ('é') and test ('€') targets."""
    from plugins.seq2seq import Seq2SeqModel

    corpus = three_splits("char", TRAIN * 12, VAL_CHARS * 2, TEST_CHARS * 2)
    v = len(corpus.vocab)
    task = TransduceTask({"pairs": "reverse"})
    task.prepare(corpus)
    model = Seq2SeqModel.create(v, {"embedding_dim": 8, "hidden_size": 16}, seed=0)
    data = FitData(train=corpus.train, val=None, vocab_size=v, context_len=4)
    fit_model(model, data, TrainConfig(epochs=1, batch_size=16, progress=False), task=task)
    for split, char, text in (("val", "é", VAL_CHARS * 2), ("test", "€", TEST_CHARS * 2)):
        pairs = task.split_pairs(corpus, split)
        n_unk = sum(int(np.count_nonzero(t == 0)) for t in pairs.targets)
        assert n_unk > 0 and all(s == char for i in range(len(pairs)) for s in pairs.spelled(i))
        said = [task.codec.text(t) for t in pairs.targets]
        real = [t.replace("<unk>", char) for t in said]
        for target in real:  # the real words, reversed back, are a phrase of the split
            assert " ".join(target.split()[::-1]) in text
        new = task.score(model, corpus, split, carry_state=False)
        old = score_pairs(model, *as_ids(pairs, corpus), task.options.max_len)
        spelling = 8.0 * len(char.encode()) * n_unk
        assert total_bits(new) - total_bits(old) == pytest.approx(spelling, rel=1e-9)
        assert new.n_chars == old.n_chars - 4 * n_unk == sum(map(len, real))
        assert new.n_tokens == old.n_tokens
        assert new.nll == pytest.approx(old.nll + spelling * math.log(2) / new.n_tokens)
        assert new.acc1 <= old.acc1 and new.acc5 <= old.acc5
        copy = task.baselines(corpus)[0]
        copied = copy.val if split == "val" else copy.test
        sources = [task.codec.text(s) for s in pairs.sources]
        assert copied.cer == pytest.approx(sum(map(edit_distance, sources, real)) / new.n_chars)
        assert copied.n_chars == new.n_chars and math.isnan(copied.bpc)
    # the strings and the fallback travel with the task (Dask pickles it)
    clone = pickle.loads(pickle.dumps(task))
    assert clone.codec == task.codec and clone.split_pairs(corpus, "val").spellings
    assert clone.score(model, corpus, "val", False) == task.score(model, corpus, "val", False)


def test_tsv_targets_pay_the_word_fallback_and_compare_as_real_text(tmp_path: Path) -> None:
    """Val: 'zebras' is new; test: 'yak' and 'naïve' ('ï' never seen in training)."""
    corpus = three_splits("word", TRAIN * 20, TRAIN * 2, TRAIN * 2)
    lines = ["the cat sat\tsat cat the", "the dog ran\tran dog the"] * 4
    lines += ["the zebras sat\tsat zebras the", "the naïve yak\tyak naïve the"]
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = TransduceTask({"pairs": "tsv", "tsv": str(path)})
    train_words = tokenize(TRAIN * 20, "word")[0]
    for split, said, real, words in (
        ("val", "sat <unk> the", "sat zebras the", ["zebras"]),
        ("test", "<unk> <unk> the", "yak naïve the", ["yak", "naïve"]),
    ):
        pairs = task.split_pairs(corpus, split)
        assert pairs.spellings == (tuple(words),)
        Oracle.answers = {tuple(s.tolist()): t for s, t in pairs}
        new = task.score(Oracle(len(corpus.vocab)), corpus, split, carry_state=False)
        old = score_pairs(Oracle(len(corpus.vocab)), *as_ids(pairs, corpus), 32)
        assert (old.exact_match, old.cer) == (1.0, 0.0)  # '<unk>' matched '<unk>' before
        spelling = sum(hand_bits(train_words, w) for w in words)
        assert total_bits(new) - total_bits(old) == pytest.approx(spelling, rel=1e-9)
        assert new.n_chars == len(real) and old.n_chars == len(said)
        # saying <unk> is not the word: no exact match, the edits from '<unk>' paid
        assert new.exact_match == 0.0
        assert new.cer == pytest.approx(edit_distance(said, real) / len(real))
    assert new.cer == pytest.approx(edit_distance("<unk> <unk>", "yak naïve") / 13)
    val = task.baselines(corpus)[0].val
    assert val.cer == pytest.approx(edit_distance("the <unk> sat", "sat zebras the") / 14)
    assert edit_distance("sat <unk> the", "sat zebras the") == 6  # the val figure above


def test_the_all_on_unk_cheat_pays_the_spelling_of_every_new_word() -> None:
    """Every test word is new; reverse pairs at word level have only words as targets."""
    corpus = three_splits("word", TRAIN * 30, TRAIN * 3, TEST_WORDS * 2)
    task = TransduceTask({"pairs": "reverse"})
    pairs = task.split_pairs(corpus, "test")
    assert all((t == 0).all() for t in pairs.targets)
    # the pairs are consecutive phrases of the split: their words, in order, are its words
    test_words = tokenize(TEST_WORDS * 2, "word")[0]
    phrases = [
        task.codec.text(t, pairs.spelled(i)).split()[::-1] for i, t in enumerate(pairs.targets)
    ]
    flat = [w for phrase in phrases for w in phrase]
    assert flat == test_words[: len(flat)] and len(flat) >= len(test_words) - 1
    train_words = tokenize(TRAIN * 30, "word")[0]
    floor = sum(hand_bits(train_words, w) for w in flat)
    Oracle.answers = {tuple(s.tolist()): t for s, t in pairs}
    cheat = task.score(AllOnUnk(len(corpus.vocab)), corpus, "test", carry_state=False)
    assert total_bits(cheat) >= floor
    assert total_bits(cheat) == pytest.approx(floor, rel=1e-6)
    assert cheat.exact_match == 0.0 and cheat.cer > 0.5


def test_nothing_changes_without_unk_targets() -> None:
    """Char-level Wonderland has no unknown val/test character: the figures are the
    ones the task gave before the charge (pinned), and built pairs are the same ids with
    or without the corpus's strings (word level has unknown words)."""
    corpus = corpus_of(WONDERLAND.read_text(encoding="utf-8")[:30_000].lower())
    pinned = {  # (nll, bpc, n_tokens, n_chars, cer), the copy baseline's cer
        "reverse": (
            (0.922285843567433, 1.4324590820768321, 703, 653, 0.7442572741194488),
            0.6753445635528331,
        ),
        "noisy": (
            (0.8941806387694343, 1.3482969096710098, 1157, 1107, 0.8482384823848238),
            0.08943089430894309,
        ),
    }
    for kind, (figures, copy_cer) in pinned.items():
        task = TransduceTask({"pairs": kind, "max_pairs": 50})
        scores = task.score(Fixed(len(corpus.vocab)), corpus, "test", carry_state=False)
        got = (scores.nll, scores.bpc, scores.n_tokens, scores.n_chars, scores.cer)
        assert got == pytest.approx(figures, rel=1e-12)
        copy = task.baselines(corpus)[0].test
        assert copy.cer == pytest.approx(copy_cer, rel=1e-12) and copy.n_chars == figures[3]
    words = corpus_of(WONDERLAND.read_text(encoding="utf-8")[:30_000].lower(), "word")
    for kind in ("reverse", "noisy"):
        task = TransduceTask({"pairs": kind, "max_pairs": 100})
        for split in ("val", "test"):
            spelled = task.split_pairs(words, split)
            plain = task.pairs_of(words.split(split), split)
            assert plain.spellings is None and spelled.spellings is not None
            assert any(spelled.spellings)
            for a, b in zip(spelled, plain, strict=True):
                assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_pairs_handed_in_know_no_strings_and_are_scored_as_before() -> None:
    vocab = corpus_of(TRAIN * 10).vocab
    pairs = PairSet.of([([0, 5, 6], [6, 5, 0]), ([7, 8], [8, 7])] * 5)
    task = TransduceTask({"pairs": "reverse"}).use(vocab, "char", {"val": pairs})
    assert task.codec.fallback is None and pairs.spelled(0) == (None,)
    Oracle.answers = {tuple(s.tolist()): t for s, t in pairs}
    scores = score_pairs(Oracle(len(vocab)), pairs, task.codec, 8)
    assert scores.exact_match == 1.0 and scores.cer == 0.0
    assert scores.bpc == pytest.approx(scores.n_tokens / scores.n_chars)
    with pytest.raises(ValueError, match="one spelling per <unk>"):
        PairSet(pairs.sources, pairs.targets, ((),) * len(pairs))
