"""Fuzzing (issue 7, item 3) with hypothesis.

* ingest -> clean -> vectorize on arbitrary bytes and Unicode (control characters, lone
  surrogates, invalid UTF-8, mixed line endings, BOMs at the start and in the middle,
  very long lines, NUL bytes), under ``errors: strict`` and ``ignore``, every cleaning
  preset and both token levels: nothing but a :class:`SeqlabError` is ever raised, and
  whatever succeeds is consistent (ids within the vocabulary, ``<unk>`` is id 0, the
  splits contiguous and covering every token, each long enough for a window);
* generation and scoring on arbitrary prompts, characters outside the vocabulary
  included: they map to ``<unk>`` (id 0) and are counted by ``encode_prompt``;
* ``score_checkpoint`` (what ``seqlab score`` runs) on arbitrary data files.

Example counts come from the ``seqlab`` hypothesis profile (tests/conftest.py); set
``HYPOTHESIS_PROFILE=seqlab-thorough`` for a long run. Bugs this found, now fixed in
``pipeline_core/generation.py``: NaN probabilities (a ValueError) from a temperature so
small that ``logp / T`` overflowed, from a NaN or infinite temperature, and from an
unsmoothed model's all-zero row; sampling settings not checked when ``n_tokens`` is 0;
``context_len < 1`` and ``n_tokens < 0`` accepted; a read-only view handed to torch.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from pipeline_core.cleaning import PRESETS, clean_documents
from pipeline_core.config import DataConfig, Level, TrainConfig
from pipeline_core.contract import FitData, SequenceModel
from pipeline_core.errors import ConfigError, DataError, SeqlabError
from pipeline_core.experiment import score_checkpoint
from pipeline_core.generation import encode_prompt, generate, sequence_log_prob
from pipeline_core.sources import load_documents
from pipeline_core.training import fit_model
from pipeline_core.vectorize import (
    SPLIT_NAMES,
    UNK,
    EncodedCorpus,
    Vocabulary,
    corpus_text,
    tokenize,
    vectorize,
)
from plugins.lstm import LSTMModel
from plugins.ngram import NGramModel

pytestmark = pytest.mark.slow  # ~30 s in all on a busy 2-core machine; CI runs it

# --------------------------------------------------------------------------- strategies

#: Text fragments that have broken text pipelines before.
NASTY_TEXT = [
    "\r\n",
    "\r",
    "\n",
    "\n\n\n\n",
    "\u2028",
    "\u2029",
    "\x85",
    "\ufeff",
    "\x00",
    "\t",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1b",
    "\x7f",
    " ",
    "\xa0",
    "\u3000",
    "\u200b",
    "\ufb03",  # the ffi ligature: NFKC makes three letters of it
    "\ufdfa",  # one code point that NFKC turns into 18
    "e\u0301",
    "\u0130",  # dotted capital I: lower() makes two code points of it
    "\U0001f600",
    "<unk>",
    "*** START OF THE PROJECT GUTENBERG EBOOK ALICE ***\n",
    "\n*** END OF THE PROJECT GUTENBERG EBOOK ALICE ***\n",
    "the quick brown fox jumps over the lazy dog. ",
    "Alice was beginning to get very tired of sitting by her sister on the bank,\n",
]
#: Byte sequences that are not valid UTF-8 (or a BOM), to write as they are.
NASTY_BYTES = [
    b"\xef\xbb\xbf",  # a UTF-8 BOM
    b"\xff\xfe",  # a UTF-16 BOM
    b"\xff",
    b"\x80",
    b"\xc3",  # a truncated two-byte sequence
    b"\xc0\xaf",  # an overlong encoding of "/"
    b"\xed\xa0\x80",  # a lone surrogate, as 'surrogatepass' writes it
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\x00",
]
PROSE_WORDS = ["the", "cat", "sat", "on", "a", "mat", ",", ".", "\n", "Alice", "ran"]

lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
any_text = st.text(st.characters(exclude_categories=()), max_size=40)  # surrogates too
ascii_text = st.text(st.characters(max_codepoint=0x7F), max_size=40)  # controls too
long_lines = st.builds(
    lambda c, n: c * n, st.sampled_from(["a", "ab ", "\xe9", "\x01"]), st.integers(500, 10_000)
)
prose = st.lists(st.sampled_from(PROSE_WORDS), min_size=20, max_size=200).map(" ".join)
text_pieces = st.one_of(
    any_text, ascii_text, st.sampled_from(NASTY_TEXT), lone_surrogates, long_lines, prose
)
byte_pieces = st.one_of(
    text_pieces.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from(NASTY_BYTES),
    st.binary(max_size=24),
)
documents = st.builds(
    lambda bom, parts: (b"\xef\xbb\xbf" if bom else b"") + b"".join(parts),
    st.booleans(),
    st.lists(byte_pieces, max_size=24),
)
#: Prompts: any Unicode (lone surrogates included), the fragments above, long ones.
prompts = st.one_of(
    any_text,
    st.lists(st.one_of(text_pieces, st.sampled_from(NASTY_TEXT)), max_size=6).map("".join),
)


def _one_line(err: SeqlabError) -> None:
    message = str(err)
    assert message and "\n" not in message, repr(message)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="seqlab-fuzz-") as tmp:
        yield Path(tmp)


# --------------------------------------------------------------------------- ingest


def _check_documents(docs: pd.DataFrame, data: bytes, errors: str) -> None:
    decoded = data.decode("utf-8", errors="ignore" if errors == "ignore" else "strict")
    assert docs["text"].tolist() == [decoded]
    assert (docs["n_chars"] == docs["text"].str.len()).all()


def _check_cleaned(docs: pd.DataFrame, preset: str) -> None:
    for text in docs["text"]:
        assert text.strip(), repr(text[:80])
        if preset == "seed":
            assert text.isascii()
            assert "\n" not in text
        if preset == "text":
            assert "\ufeff" not in text and "\r" not in text
            assert "\n\n\n" not in text
            assert all(line == line.strip() for line in text.split("\n"))


def _check_corpus(corpus: EncodedCorpus, text: str, config: DataConfig) -> None:
    vocab = corpus.vocab
    assert vocab.tokens[0] == UNK and vocab.unk_id == 0
    assert len(set(vocab.tokens)) == len(vocab)
    ids = corpus.ids
    assert ids.ndim == 1 and np.issubdtype(ids.dtype, np.unsignedinteger)
    assert len(ids) and int(ids.max()) < len(vocab)
    tokens, starts = tokenize(text, config.level)
    assert len(ids) == len(tokens)
    assert corpus.vocab.decode(ids) == [t if t in vocab.tokens else UNK for t in tokens]
    if config.level == "char":
        # every symbol of the training split is in a character vocabulary (built from it)
        assert 0 not in corpus.train
    # each <unk> keeps its original spelling, for the open-vocabulary charge
    assert dict(corpus.unk_spellings) == {int(i): tokens[i] for i in np.flatnonzero(ids == 0)}
    # contiguous splits covering every token, each long enough for one window
    spans = [corpus.span(name) for name in SPLIT_NAMES]
    assert spans[0][0] == 0 and spans[-1][1] == len(ids)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert all(stop - start >= config.context_len + 1 for start, stop in spans)
    assert np.array_equal(np.concatenate([corpus.split(n) for n in SPLIT_NAMES]), ids)
    chars = corpus.split_chars
    assert all(chars[n] >= 0 for n in SPLIT_NAMES)
    assert sum(chars.values()) == len(text) - int(starts[0])


@given(data=documents, context_len=st.integers(1, 4))
@example(data="\ufeffab\r\ncd\ref\u2028gh\ufeffij\x00kl\n".encode() * 20, context_len=2)
@example(data=b"a" * 9000 + b"\x00" + b"b c d\n" * 40, context_len=3)  # NUL past the sniff
@example(data=b"\xed\xa0\x80" + b"abc def\n" * 30, context_len=1)
@example(data=b"\xe2\x80\xa8" * 40, context_len=1)  # only U+2028: no text
@example(data=b"\x1c\x1d\x1e\x1f\x85" * 30, context_len=1)
def test_ingest_clean_vectorize_never_crash(workdir: Path, data: bytes, context_len: int) -> None:
    path = workdir / "fuzz.txt"
    path.write_bytes(data)
    for errors in ("strict", "ignore"):
        try:
            docs = load_documents(path, errors=errors)
        except SeqlabError as err:
            _one_line(err)
            event(f"ingest {errors}: {type(err).__name__}")
            continue
        _check_documents(docs, data, errors)
        for preset in PRESETS:
            try:
                cleaned = clean_documents(docs, preset)
            except SeqlabError as err:
                _one_line(err)
                continue
            _check_cleaned(cleaned, preset)
            text = corpus_text(cleaned["text"].tolist())
            for level in ("char", "word"):
                config = DataConfig(
                    source=str(path),
                    clean=preset,  # type: ignore[arg-type]
                    errors=errors,
                    level=level,
                    context_len=context_len,
                )
                try:
                    corpus = vectorize(text, config)
                except SeqlabError as err:
                    _one_line(err)
                    continue
                _check_corpus(corpus, text, config)
                event(f"vectorized {preset} {level}")


def test_the_fuzz_inputs_can_succeed(workdir: Path) -> None:
    """The properties above are not vacuous: hostile but valid text gets through."""
    path = workdir / "hostile.txt"
    path.write_bytes(
        b"\xef\xbb\xbfone\r\ntwo\rthree\n\xe2\x80\xa8four\xef\xbb\xbf five " * 30
        + b"x" * 20_000
        + b"\x00"
    )
    docs = load_documents(path)
    for preset in PRESETS:
        text = corpus_text(clean_documents(docs, preset)["text"].tolist())
        for level in ("char", "word"):
            config = DataConfig(source=str(path), clean=preset, level=level, context_len=3)  # type: ignore[arg-type]
            _check_corpus(vectorize(text, config), text, config)


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Fitted:
    model: SequenceModel
    vocab: Vocabulary
    level: Level
    checkpoint: Path
    smoothed: bool = True

    def __repr__(self) -> str:  # hypothesis prints the fixture with a failing example
        return f"Fitted({type(self.model).__name__}, {self.level}, {len(self.vocab)} tokens)"


TRAIN_TEXT = " ".join(
    np.random.default_rng(0).choice(["the", "cat", "sat", "on", "a", "mat", "and", "ran"], 700)
)


def _corpus(level: Level, context_len: int = 3) -> EncodedCorpus:
    return vectorize(TRAIN_TEXT, DataConfig(level=level, context_len=context_len, clean="none"))


def _fit_data(corpus: EncodedCorpus) -> FitData:
    return FitData(
        corpus.train.astype(np.int64),
        corpus.val.astype(np.int64),
        len(corpus.vocab),
        corpus.config.context_len,
    )


def _save(model: SequenceModel, corpus: EncodedCorpus, plugin: str, path: Path) -> Path:
    scoring = "carried state" if plugin == "lstm" else "windows"
    extra = {"data": corpus.config.model_dump(mode="json"), "scoring": scoring}
    return model.save(path, corpus.vocab.tokens, plugin, extra)


@pytest.fixture(scope="module")
def fitted(workdir: Path) -> dict[str, Fitted]:
    """Small fitted models, built once: n-grams (Kneser-Ney and unsmoothed MLE, whose
    rows can be all zero) at both levels, and an LSTM after one tiny epoch."""
    (workdir / "train.txt").write_text(TRAIN_TEXT, encoding="utf-8")
    out: dict[str, Fitted] = {}
    for level in ("char", "word"):
        corpus = _corpus(level)
        for smoothing in ("kneser_ney", "mle"):
            model = NGramModel(len(corpus.vocab), {"order": 3, "smoothing": smoothing})
            model.fit(_fit_data(corpus))
            name = f"ngram-{smoothing}-{level}"
            path = _save(model, corpus, "ngram", workdir / f"{name}.pt")
            out[name] = Fitted(model, corpus.vocab, corpus.level, path, smoothing != "mle")
    corpus = _corpus("char")
    lstm = LSTMModel.create(len(corpus.vocab), {"embedding_dim": 8, "hidden_size": 16})
    settings = TrainConfig(
        epochs=1, batch_size=16, max_batches_per_epoch=4, progress=False, num_threads=1
    )
    fit_model(lstm, _fit_data(corpus), settings)
    out["lstm-char"] = Fitted(
        lstm, corpus.vocab, "char", _save(lstm, corpus, "lstm", workdir / "lstm.pt")
    )
    return out


MODELS = ["ngram-kneser_ney-char", "ngram-mle-char", "ngram-kneser_ney-word", "lstm-char"]


# --------------------------------------------------------------------------- prompts


@given(prompt=prompts, which=st.sampled_from([*MODELS, "ngram-mle-word"]))
@example(prompt="\ud800caT\U0001f600", which="ngram-kneser_ney-char")
@example(prompt="", which="lstm-char")
@example(prompt="the <unk> dog", which="ngram-kneser_ney-word")
def test_encode_prompt_applies_the_unk_policy(
    fitted: dict[str, Fitted], prompt: str, which: str
) -> None:
    f = fitted[which]
    ids, n_unknown = encode_prompt(prompt, f.vocab, f.level)
    tokens, _ = tokenize(prompt, f.level)
    assert ids.dtype == np.int64 and len(ids) == len(tokens)
    assert ((ids >= 0) & (ids < len(f.vocab))).all()
    unknown = [t not in f.vocab.tokens for t in tokens]
    assert n_unknown == sum(unknown)
    assert [i == 0 for i in ids.tolist()] == unknown  # out of vocabulary <=> <unk> (id 0)


temperatures = st.one_of(
    st.just(0.0),
    st.floats(0.0, 5.0),
    st.sampled_from([5e-324, 1e-320, 1e-300, 1e-9, 1e9]),
    st.floats(allow_nan=True, allow_infinity=True),
)


@given(
    prompt=prompts,
    which=st.sampled_from(MODELS),
    n_tokens=st.integers(-2, 12),
    context_len=st.integers(-1, 8),
    temperature=temperatures,
    top_k=st.one_of(st.none(), st.integers(-1, 40)),
    seed=st.integers(0, 2**32 - 1),
)
@example(
    prompt="zzz",
    which="ngram-mle-char",
    n_tokens=3,
    context_len=3,
    temperature=1.0,
    top_k=None,
    seed=0,
).via("an unseen context: an unsmoothed model has no distribution")
@example(
    prompt="the", which="lstm-char", n_tokens=5, context_len=3, temperature=1e-320, top_k=2, seed=0
)
def test_generate_takes_any_prompt(
    fitted: dict[str, Fitted],
    prompt: str,
    which: str,
    n_tokens: int,
    context_len: int,
    temperature: float,
    top_k: int | None,
    seed: int,
) -> None:
    f = fitted[which]
    ids, _ = encode_prompt(prompt, f.vocab, f.level)
    bad_settings = (
        n_tokens < 0
        or context_len < 1
        or not 0 <= temperature < math.inf
        or (top_k is not None and top_k < 1)
    )
    try:
        out = generate(f.model, ids, n_tokens, context_len, temperature, top_k, seed)
    except ConfigError as err:
        _one_line(err)
        assert bad_settings, err
        return
    except DataError as err:
        _one_line(err)
        # no prompt at all, or an unsmoothed model with nothing to say after it
        assert len(ids) == 0 or not f.smoothed, err
        return
    assert not bad_settings and len(ids) > 0
    assert out.dtype == np.int64 and len(out) == n_tokens
    assert ((out >= 0) & (out < len(f.vocab))).all()


@given(prompt=prompts, which=st.sampled_from(MODELS), context_len=st.integers(-1, 8))
@example(prompt="the cat", which="ngram-mle-char", context_len=0)
def test_sequence_log_prob_takes_any_prompt(
    fitted: dict[str, Fitted], prompt: str, which: str, context_len: int
) -> None:
    f = fitted[which]
    ids, _ = encode_prompt(prompt, f.vocab, f.level)
    ids = ids[:80]
    try:
        total = sequence_log_prob(f.model, ids, context_len)
    except ConfigError as err:
        _one_line(err)
        assert context_len < 1
        return
    assert context_len >= 1
    assert not math.isnan(total) and total <= 1e-9
    if f.smoothed:
        assert math.isfinite(total)
    naive = sum(
        float(f.model.log_proba(ids[None, max(0, t - context_len) : t])[0, ids[t]])
        for t in range(1, len(ids))
    )
    rel = 1e-5 if isinstance(f.model, LSTMModel) else 1e-9  # float32 batched vs one by one
    assert total == pytest.approx(naive, rel=rel, abs=1e-6)


# --------------------------------------------------------------------------- seqlab score

ALPHABET = "".join(sorted(set(TRAIN_TEXT)))
#: The training text itself (the word vocabulary matches only with the same frequencies)
#: or new text over its characters, with arbitrary bytes spliced in somewhere.
score_bodies = st.one_of(
    st.just(TRAIN_TEXT),
    st.lists(st.sampled_from(TRAIN_TEXT.split()), min_size=10, max_size=200).map(
        lambda words: " ".join([ALPHABET, *words])
    ),
)
score_data = st.builds(
    lambda body, junk, at: body.encode()[:at] + b"".join(junk) + body.encode()[at:],
    score_bodies,
    st.lists(byte_pieces, max_size=2),
    st.integers(0, 3000),
)


@given(
    data=score_data,
    which=st.sampled_from(["ngram-kneser_ney-char", "ngram-kneser_ney-word", "lstm-char"]),
    clean=st.sampled_from([None, *PRESETS]),
    split=st.sampled_from(SPLIT_NAMES),
)
def test_score_checkpoint_takes_any_data(
    fitted: dict[str, Fitted],
    workdir: Path,
    data: bytes,
    which: str,
    clean: str | None,
    split: str,
) -> None:
    path = workdir / "score.txt"
    path.write_bytes(data)
    overrides = {"source": str(path), **({"clean": clean} if clean else {})}
    try:
        scores, config = score_checkpoint(fitted[which].checkpoint, overrides, split)
    except SeqlabError as err:
        _one_line(err)
        event(f"score refused: {type(err).__name__}")
        return
    event("scored")
    assert config.source == str(path)
    assert math.isfinite(scores.nll) and scores.nll >= 0 and scores.bpc >= 0
    assert 0 <= scores.acc1 <= scores.acc5 <= 1
    assert scores.n_tokens >= 1 and scores.n_chars >= 0
