"""ARPA export: read the file back and get the model's probabilities again."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from pipeline_core.contract import FitData, NotFittedError
from pipeline_core.errors import ConfigError, DataError
from plugins.ngram import NGramModel
from plugins.ngram_arpa import EOS, MARKERS, escape_token, read_arpa, unescape_token

TEXT = "the cat sat on the mat.\nthe dog\tsaw the cat; a dog sat on a log, the end"
TRAIN = list(TEXT[:55])
VOCAB = ["<unk>", *sorted(set(TRAIN))]  # contains " ", "\n" and "\t"
INDEX = {t: i for i, t in enumerate(VOCAB)}


def ids(tokens: Iterable[str]) -> np.ndarray:
    return np.array([INDEX.get(t, 0) for t in tokens], dtype=np.int64)


def fitted(**params: object) -> NGramModel:
    model = NGramModel(len(VOCAB), params)
    model.fit(FitData(ids(TRAIN), None, len(VOCAB), 4))
    return model


def contexts(order: int) -> list[tuple[str, ...]]:
    """Seen contexts, unseen ones, and short ones."""
    full = list(TEXT)
    out = [tuple(full[max(0, i - order + 1) : i]) for i in range(0, len(full), 3)]
    return [*out, ("z", "q", "x")[: order - 1], ("q",)]


def assert_reproduces(model: NGramModel, path: Path, ctxs: list[tuple[str, ...]]) -> None:
    arpa = read_arpa(path)
    assert arpa.vocab == VOCAB  # escaping undone, file order = ids
    for c in ctxs:
        want = model.log_proba(ids(c).reshape(1, len(c)))[0]
        np.testing.assert_allclose(arpa.log_proba(c), want, rtol=0, atol=1e-8, err_msg=str(c))


@pytest.mark.parametrize(
    "params",
    [
        {"smoothing": "kneser_ney"},
        {"smoothing": "modified_kneser_ney"},
        {"smoothing": "absolute", "discount": 0.5},
        {"smoothing": "witten_bell"},
        {"smoothing": "kneser_ney", "nltk_compat": True},
        {"smoothing": "witten_bell", "nltk_compat": True},
    ],
)
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_interpolated_models_round_trip_exactly(tmp_path, params, order):
    model = fitted(order=order, **params)
    path = model.to_arpa(tmp_path / "lm.arpa", VOCAB)
    if params.get("nltk_compat"):  # unseen tokens: -inf in the model, -99 in ARPA
        arpa = read_arpa(path)
        assert arpa.log10_probs[("<unk>",)] == -99.0
        for c in contexts(order):
            want = model.log_proba(ids(c).reshape(1, len(c)))[0]
            got = arpa.log_proba(c)
            finite = np.isfinite(want)
            np.testing.assert_allclose(got[finite], want[finite], rtol=0, atol=1e-8)
    else:
        assert_reproduces(model, path, contexts(order))


@pytest.mark.parametrize("smoothing", ["laplace", "lidstone"])
def test_add_k_is_exact_after_seen_contexts(tmp_path, smoothing):
    model = fitted(order=3, smoothing=smoothing, k=1.0 if smoothing == "laplace" else 0.2)
    path = model.to_arpa(tmp_path / "lm.arpa", VOCAB)
    seen = [c for c in contexts(3) if "".join(c) in "".join(TRAIN[:-1]) and len(c) == 2]
    assert len(seen) > 5
    assert_reproduces(model, path, [(), ("t",), *seen])
    # documented limit: an unseen context is uniform in the model, backs off in ARPA
    arpa = read_arpa(path)
    np.testing.assert_allclose(model.log_proba(ids("zq")[None, :])[0], -np.log(len(VOCAB)))
    assert not np.allclose(arpa.log_proba(("z", "q")), -np.log(len(VOCAB)))


def test_file_layout_and_escaping(tmp_path):
    model = fitted(order=3)
    path = model.to_arpa(tmp_path / "lm.arpa", VOCAB)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("\\data\\\nngram 1=") and text.rstrip().endswith("\\end\\")
    declared = {int(k): int(n) for k, n in re.findall(r"^ngram (\d+)=(\d+)$", text, re.M)}
    assert declared[1] == len(VOCAB) + 2  # and the sentence markers <s>, </s>
    assert declared[2] == len(set(itertools.pairwise(TRAIN)))
    assert declared[3] == len(set(zip(TRAIN, TRAIN[1:], TRAIN[2:], strict=False)))
    unigrams = text.split("\\1-grams:\n")[1].split("\n\n")[0].splitlines()
    words = [line.split("\t")[1] for line in unigrams]
    assert "<sp>" in words and "<U+000A>" in words and "<U+0009>" in words
    assert all(len(line.split()) == 3 for line in unigrams)  # whitespace-free fields
    trigram = text.split("\\3-grams:\n")[1].splitlines()[0]
    assert len(trigram.split()) == 4  # log10 p and three tokens, no backoff at the top
    # 10 decimals
    assert re.match(r"^-\d+\.\d{10}\t", unigrams[0])


def test_escape_round_trip_and_refusals(tmp_path):
    for tok in [" ", "\n", "\t", "a b", "<unk>", "x", "\u00a0", "<U+0041"]:
        assert unescape_token(escape_token(tok)) == tok
        assert not re.search(r"\s", escape_token(tok))
    model = fitted(order=2)
    bad = list(VOCAB)
    bad[1] = "<sp>"  # reads like an escape
    with pytest.raises(DataError, match="unambiguously"):
        model.to_arpa(tmp_path / "x.arpa", bad)
    bad[1] = ""
    with pytest.raises(DataError, match="unambiguously"):
        model.to_arpa(tmp_path / "x.arpa", bad)
    with pytest.raises(DataError, match="duplicate"):
        model.to_arpa(tmp_path / "x.arpa", [*VOCAB[:-1], VOCAB[1]])
    with pytest.raises(DataError, match="vocab has"):
        model.to_arpa(tmp_path / "x.arpa", VOCAB[:-1])


@pytest.mark.parametrize("smoothing", ["mle", "stupid_backoff"])
def test_unrepresentable_smoothings_are_refused(tmp_path, smoothing):
    with pytest.raises(ConfigError, match=f"smoothing: {smoothing}"):
        fitted(order=2, smoothing=smoothing).to_arpa(tmp_path / "x.arpa", VOCAB)
    with pytest.raises(NotFittedError):
        NGramModel(len(VOCAB)).to_arpa(tmp_path / "x.arpa", VOCAB)


def test_malformed_files_are_one_line_data_errors(tmp_path):
    path = fitted(order=2).to_arpa(tmp_path / "lm.arpa", VOCAB)
    text = path.read_text(encoding="utf-8")
    truncated = tmp_path / "truncated.arpa"
    truncated.write_text(text[: text.index("\n", len(text) // 2) + 1], encoding="utf-8")
    with pytest.raises(DataError, match=r"no \\end\\"):
        read_arpa(truncated)
    miscounted = tmp_path / "miscounted.arpa"
    miscounted.write_text(text.replace("ngram 2=", "ngram 2=1", 1), encoding="utf-8")
    with pytest.raises(DataError, match="header declares"):
        read_arpa(miscounted)
    with pytest.raises(DataError, match="not found"):
        read_arpa(tmp_path / "missing.arpa")


# ---- KenLM reads the export ------------------------------------------------------------
KENLM_SMOOTHINGS = [
    {"smoothing": "kneser_ney"},
    {"smoothing": "modified_kneser_ney"},
    {"smoothing": "witten_bell"},
    {"smoothing": "absolute", "discount": 0.5},
]


def kenlm_model(path: Path):
    import kenlm  # the dev extra builds it: a missing module fails, never skips

    return kenlm.Model(str(path))


def seqlab_log10(model: NGramModel, order: int, tokens: list[str], i: int) -> float:
    """The model's log10 p(tokens[i] | up to order-1 tokens before it)."""
    context = tokens[max(0, i - order + 1) : i]
    row = model.log_proba(ids(context).reshape(1, len(context)))[0]
    return float(row[INDEX.get(tokens[i], 0)] / np.log(10))


@pytest.mark.parametrize("params", KENLM_SMOOTHINGS, ids=lambda p: p["smoothing"])
@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_kenlm_scores_every_token_as_seqlab_does(tmp_path, params, order):
    """Every position of the text (the unseen tail and its <unk>s included), scored by
    KenLM from the export, equals the model's log10 probability to 1e-6 (KenLM keeps
    float32); the markers change no real token's probability."""
    model = fitted(order=order, **params)
    path = model.to_arpa(tmp_path / "lm.arpa", VOCAB)
    lm = kenlm_model(path)
    assert lm.order == order
    tokens = list(TEXT)
    sentence = " ".join(escape_token(t) for t in tokens)  # char level: one token per char
    scores = list(lm.full_scores(sentence, bos=False, eos=False))
    assert len(scores) == len(tokens)
    theirs = np.array([s[0] for s in scores])
    ours = np.array([seqlab_log10(model, order, tokens, i) for i in range(len(tokens))])
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-6)
    assert [oov for _, _, oov in scores] == [t not in INDEX for t in tokens]


def test_kenlm_markers_and_normalisation(tmp_path):
    """<s> and </s> are listed as KenLM needs; after <s> the first token gets the
    empty-context probability; </s> is (all but) impossible; and every context's
    distribution over the tokens and </s> still sums to 1 in KenLM."""
    import kenlm  # the dev extra builds it: a missing module fails, never skips

    order = 3
    model = fitted(order=order, smoothing="modified_kneser_ney")
    path = model.to_arpa(tmp_path / "lm.arpa", VOCAB)
    text = path.read_text(encoding="utf-8")
    unigrams = text.split("\\1-grams:\n")[1].split("\n\n")[0].splitlines()
    assert unigrams[-2:] == [
        "-99.0000000000\t<s>\t0.0000000000",
        "-99.0000000000\t</s>\t0.0000000000",
    ]
    assert read_arpa(path).vocab == VOCAB  # the markers are not model tokens
    lm, alias = kenlm.Model(str(path)), kenlm.LanguageModel(str(path))
    words = [escape_token(t) for t in TRAIN[:12]]
    sentence = " ".join(words)
    assert alias.score(sentence, bos=False, eos=False) == lm.score(sentence, bos=False, eos=False)
    first = next(iter(lm.full_scores(sentence, bos=True, eos=False)))[0]
    assert first == pytest.approx(seqlab_log10(model, order, TRAIN[:1], 0), abs=1e-6)
    *_, (end, _, _) = lm.full_scores(sentence, bos=False, eos=True)
    assert end < -90
    state, out = kenlm.State(), kenlm.State()
    for i in range(0, len(TEXT), 5):
        lm.NullContextWrite(state)
        for t in TEXT[max(0, i - order + 1) : i]:
            lm.BaseScore(state, escape_token(t), out)
            state, out = out, state
        total = sum(10 ** lm.BaseScore(state, w, out) for w in [*map(escape_token, VOCAB), EOS])
        assert total == pytest.approx(1.0, abs=1e-5), TEXT[max(0, i - order + 1) : i]


@pytest.mark.parametrize("marker", MARKERS)
def test_a_token_spelled_like_a_marker_is_refused(tmp_path, marker):
    bad = list(VOCAB)
    bad[1] = marker
    with pytest.raises(DataError, match="sentence marker"):
        fitted(order=2).to_arpa(tmp_path / "x.arpa", bad)


def test_kenlm_reads_a_word_level_export(tmp_path):
    """Word tokens need no escaping: KenLM scores the words as the model does."""
    words = re.findall(r"\S+", "the cat sat on the mat . the dog saw the cat ; a dog sat on a log")
    vocab = ["<unk>", *sorted(set(words))]
    index = {w: i for i, w in enumerate(vocab)}
    model = NGramModel(len(vocab), {"order": 3})
    model.fit(FitData(np.array([index[w] for w in words[:15]]), None, len(vocab), 2))
    lm = kenlm_model(model.to_arpa(tmp_path / "words.arpa", vocab))
    theirs = [s[0] for s in lm.full_scores(" ".join(words), bos=False, eos=False)]
    for i, got in enumerate(theirs):
        context = np.array([[index[w] for w in words[max(0, i - 2) : i]]])
        want = model.log_proba(context)[0][index[words[i]]] / np.log(10)
        assert got == pytest.approx(want, abs=1e-6), i
