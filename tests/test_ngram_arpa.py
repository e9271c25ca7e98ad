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
from plugins.ngram_arpa import escape_token, read_arpa, unescape_token

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
    assert declared[1] == len(VOCAB)
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
