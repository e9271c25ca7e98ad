"""Open-vocabulary evaluation: vocabularies from the training split only, and every
``<unk>`` target charged its spelling, so bpc means the same at every level."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline_core.cleaning import clean_documents
from pipeline_core.config import DataConfig, TrainConfig
from pipeline_core.contract import SequenceModel
from pipeline_core.data_report import inspect_source
from pipeline_core.experiment import fit_data
from pipeline_core.metrics import evaluate
from pipeline_core.registry import discover, load_plugin
from pipeline_core.sources import load_documents
from pipeline_core.spelling import SpellingModel
from pipeline_core.tasks import get_task
from pipeline_core.tasks.fill_blank import FillBlankTask
from pipeline_core.training import fit_model
from pipeline_core.vectorize import (
    corpus_key,
    corpus_text,
    load_corpus,
    save_corpus,
    tokenize,
    vectorize,
    vectorize_cached,
)
from tests.conftest import WONDERLAND, run_cli
from tests.helpers import BigramTable, Uniform

TRAIN_WORDS = "the cat sat on the mat and the dog sat on the log . " * 30
# every test word is new: none of these occur in the training text
TEST_WORDS = "zebras quickly jumped over lazy foxes while owls hooted " * 2


class AllOnUnk(Uniform):
    """The open-vocabulary cheat: nearly all mass on ``<unk>`` (id 0)."""

    def log_proba(self, contexts: np.ndarray) -> np.ndarray:
        rest = 1e-9 / (self.vocab_size - 1)
        row = np.full(self.vocab_size, math.log(rest))
        row[0] = math.log1p(-1e-9)
        return np.tile(row, (len(contexts), 1))


def _word_corpus() -> tuple[str, DataConfig]:
    """Train and val from TRAIN_WORDS, the test split exactly the words of TEST_WORDS."""
    train_tokens = tokenize(TRAIN_WORDS, "word")[0]
    test_tokens = tokenize(TEST_WORDS, "word")[0]
    n_train = len(train_tokens)
    total = n_train + len(test_tokens)
    # train = first 80% of the TRAIN_WORDS tokens' share, val = the rest of them
    test_frac = len(test_tokens) / total
    train_frac = round(0.8 * n_train) / total
    config = DataConfig(
        level="word", context_len=3, splits=(train_frac, 1 - train_frac - test_frac, test_frac)
    )
    return TRAIN_WORDS + TEST_WORDS, config


def _hand_spelling_bits(train_tokens: list[str], word: str) -> float:
    """The fallback's definition, recomputed: add-one character unigram over the
    training tokens' characters + end-of-word + escape; unseen chars 8 bits per byte."""
    chars = Counter("".join(train_tokens))
    denom = sum(chars.values()) + len(train_tokens) + len(chars) + 2
    bits = -math.log2((len(train_tokens) + 1) / denom)
    for ch in word:
        if ch in chars:
            bits -= math.log2((chars[ch] + 1) / denom)
        else:
            bits += math.log2(denom) + 8 * len(ch.encode("utf-8"))
    return bits


def test_vocabularies_exclude_symbols_only_the_test_split_holds() -> None:
    text, config = _word_corpus()
    corpus = vectorize(text, config)
    words = set(corpus.vocab.symbols)
    assert not words & set(tokenize(TEST_WORDS, "word")[0])
    assert words == set(tokenize(text, "word")[0][: corpus.bounds[0]])
    assert corpus.oov_rates()["test"] == 1.0 and corpus.oov_rates()["train"] == 0.0
    start, stop = corpus.span("test")
    test_tokens = tokenize(TEST_WORDS, "word")[0]
    assert [corpus.unk_spellings[p] for p in range(start, stop)] == test_tokens

    chars = vectorize("abcab" * 40 + "xyé" * 5, DataConfig(context_len=2, splits=(0.8, 0.1, 0.1)))
    assert chars.vocab.symbols == ("a", "b", "c")
    assert chars.unk_spellings[len(chars.ids) - 1] == "é"


def test_min_freq_applies_to_the_training_split() -> None:
    """'c' is seen once in training and four times after it: dropped under min_freq=2
    (a whole-corpus count would have kept it)."""
    text = "a a a a b b b b c a a a a b b b c c c c"
    corpus = vectorize(text, DataConfig(level="word", context_len=1, min_freq=2))
    assert corpus.bounds[0] == 16
    assert corpus.vocab.symbols == ("a", "b")
    assert corpus.unk_spellings == {8: "c", 16: "c", 17: "c", 18: "c", 19: "c"}
    assert corpus.oov_rates() == {"train": 1 / 16, "val": 1.0, "test": 1.0}


def test_fallback_bits_equal_a_hand_computation() -> None:
    text = "ab ab b ab b b cd ef cd gh"  # train: ab ab b ab b b (a: 3, b: 6, 6 words)
    corpus = vectorize(text, DataConfig(level="word", context_len=1, splits=(0.6, 0.2, 0.2)))
    model = SpellingModel.fit(corpus)
    denom = 9 + 6 + 2 + 2  # characters + end-of-word events + alphabet + (eow, escape)
    assert model.bits("ab") == pytest.approx(
        math.log2(denom / 4) + math.log2(denom / 7) + math.log2(denom / 7), rel=1e-12
    )
    unseen = 2 * (math.log2(denom) + 8) + math.log2(denom / 7)  # 'c', 'd': 1 byte each
    assert model.bits("cd") == pytest.approx(unseen, rel=1e-12)
    assert model.bits("é") == pytest.approx(math.log2(denom) + 16 + math.log2(denom / 7))
    assert model.bits("ab") == pytest.approx(_hand_spelling_bits(text.split()[:6], "ab"))


def test_an_unseen_character_costs_p_unk_plus_8_bits_per_utf8_byte() -> None:
    text = "abcab" * 40 + "aébé" * 4  # 'é' (2 UTF-8 bytes) only in the test split
    corpus = vectorize(text, DataConfig(context_len=2, splits=(0.8, 0.1, 0.1)))
    assert "é" not in corpus.vocab.symbols
    model = BigramTable(len(corpus.vocab))
    model.fit(fit_data(corpus))
    scores = evaluate(model, corpus, "test")
    start, stop = corpus.span("test")
    bits, unseen = 0.0, 0
    for t in range(start, stop):
        bits -= model.table[corpus.ids[t - 1], corpus.ids[t]] / math.log(2)  # type: ignore[index]
        if text[t] == "é":
            assert corpus.ids[t] == 0
            bits += 16.0
            unseen += 1
    assert unseen == 8
    assert scores.bpc == pytest.approx(bits / (stop - start), rel=1e-12)
    assert scores.n_chars == stop - start


def _next_token_plugins() -> list[str]:
    names = []
    for info in discover():
        if info.ok and "next-token" in load_plugin(info.name).task_kinds:
            names.append(info.name)
    return sorted(names)


def test_no_word_level_model_beats_the_spelling_cost_of_new_words() -> None:
    """Every test word is new: whatever a model does, it pays at least the spelling of
    each word (computed here from the fallback's definition); the cheat that puts all its
    mass on ``<unk>`` pays exactly that, and no more."""
    text, config = _word_corpus()
    corpus = vectorize(text, config)
    train_tokens = tokenize(text, "word")[0][: corpus.bounds[0]]
    positions = corpus.scoring_positions("test")
    chars = corpus.split_chars["test"]
    floor = sum(_hand_spelling_bits(train_tokens, corpus.unk_spellings[p]) for p in positions)
    floor_bpc = floor / chars
    assert floor_bpc > 1.0

    cheat = evaluate(AllOnUnk(len(corpus.vocab)), corpus, "test")
    assert cheat.bpc == pytest.approx(floor_bpc, rel=1e-6)
    # ranking <unk> first names no word: every test word is new, so no hit at all
    assert cheat.acc1 == 0.0 and cheat.acc5 == 0.0

    settings = TrainConfig(
        epochs=1, batch_size=8, seed=0, progress=False, num_threads=1, max_batches_per_epoch=5
    )
    models: dict[str, SequenceModel] = {"uniform": Uniform(len(corpus.vocab))}
    for smoothing in ("laplace", "kneser_ney", "witten_bell"):
        ngram = load_plugin("ngram").create(len(corpus.vocab), {"smoothing": smoothing})
        ngram.fit(fit_data(corpus))
        models[f"ngram {smoothing}"] = ngram
    for name in _next_token_plugins():
        cls = load_plugin(name)
        model = cls.create(len(corpus.vocab), cls.test_params, seed=0)
        fit_model(model, fit_data(corpus), settings, validate=lambda m: float("nan"))
        models[name] = model
    assert {"ngram", "lstm", "gru", "rnn"} <= set(models)
    for name, model in models.items():
        bpc = evaluate(model, corpus, "test").bpc
        assert bpc >= floor_bpc, (name, bpc, floor_bpc)


def test_fill_blank_charges_the_spelling_of_an_unk_blank() -> None:
    text, config = _word_corpus()
    corpus = vectorize(text, config)
    task = get_task("fill-blank", {})
    assert isinstance(task, FillBlankTask)
    model = Uniform(len(corpus.vocab))
    scores = task.score(model, corpus, "test", False)
    train_tokens = tokenize(text, "word")[0][: corpus.bounds[0]]
    positions = task.positions(corpus, "test")
    assert len(positions) > 0 and all(corpus.ids[positions] == 0)
    bits = sum(
        math.log2(len(corpus.vocab)) + _hand_spelling_bits(train_tokens, corpus.unk_spellings[p])
        for p in positions
    )
    assert scores.bpc * scores.n_chars == pytest.approx(bits, rel=1e-9)


def test_the_cache_keeps_unk_spellings_and_is_keyed_apart_from_old_entries(
    tmp_path: Path,
) -> None:
    text, config = _word_corpus()
    corpus = vectorize(text, config)
    save_corpus(corpus, tmp_path / "entry")
    loaded = load_corpus(tmp_path / "entry")
    assert dict(loaded.unk_spellings) == dict(corpus.unk_spellings)
    assert loaded.vocab == corpus.vocab
    # an entry written before spellings were stored (no unk.json) is rebuilt, not reused
    folder = tmp_path / "cache" / corpus_key(text, config)
    save_corpus(corpus, folder)
    (folder / "unk.json").unlink()
    rebuilt, hit = vectorize_cached(text, config, cache_dir=tmp_path / "cache")
    assert not hit and dict(rebuilt.unk_spellings) == dict(corpus.unk_spellings)


def test_data_inspect_reports_training_vocabulary_and_oov_rates(tmp_path: Path) -> None:
    text, config = _word_corpus()
    path = tmp_path / "words.txt"
    path.write_text(text, encoding="utf-8")
    report = inspect_source(
        str(path), level="word", context_len=3, splits=list(config.splits), clean="none"
    )
    assert report["vocab_size"] == len(set(tokenize(text, "word")[0]))
    assert report["train_vocab_size"] == len(set(tokenize(TRAIN_WORDS, "word")[0]))
    assert report["oov_rate"] == {"train": 0.0, "val": 0.0, "test": 1.0}


@pytest.mark.slow
def test_data_inspect_cli_keeps_the_tutorial_count_and_adds_the_new_fields() -> None:
    result = run_cli("data", "inspect", str(WONDERLAND), "--clean", "seed", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["vocab_size"] == 44
    # recomputed from the cleaned text: the first 80% of its characters are the train split
    docs = clean_documents(load_documents(WONDERLAND), "seed")
    text = corpus_text(docs["text"].tolist())
    b0, b1 = round(len(text) * 0.8), round(len(text) * 0.9)
    seen = set(text[:b0])
    assert report["train_vocab_size"] == len(seen) < 44
    for name, part in (("train", text[:b0]), ("val", text[b0:b1]), ("test", text[b1:])):
        expected = sum(ch not in seen for ch in part) / len(part)
        assert report["oov_rate"][name] == pytest.approx(expected, abs=1e-6)
