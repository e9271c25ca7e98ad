"""The oracle: a synthetic source's true conditional law, scored like any model.

A source's entropy rate is an average over an infinite stream; a finite test split can
land above or below it, so a model may "beat" the rate there without beating anything.
The oracle regenerates the source from its canonical parameters and scores the true
``log p(x_t | x_<t)`` of the actual val and test targets, at the positions the
next-token task scores, with the same :class:`~pipeline_core.metrics.Scores`: no model
can do better on those positions except by chance, so ``test_bpc - oracle test bpc``
(the leaderboard's ``gap_bpc``) is a model's excess loss.

There is an oracle only for a ``synthetic:`` source with a known law (:data:`LAWS`),
read at char level, whose text reached the corpus unchanged (cleaning left it as it
was); source symbols the vocabulary lacks share the ``<unk>`` token's probability.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline_core import synthetic_copy, synthetic_reber
from pipeline_core.errors import DataError, SeqlabError
from pipeline_core.metrics import (
    TargetScores,
    scored_chars,
    summarize,
    target_scores,
)
from pipeline_core.synthetic import SYNTHETIC, MarkovParams, MarkovSource, make_synthetic
from pipeline_core.tasks import Baseline, Task
from pipeline_core.vectorize import EncodedCorpus

log = logging.getLogger("seqlab")

#: the oracle's leaderboard label (its metrics on the parent run: ``oracle_test_bpc`` ...)
ORACLE = "oracle"
SCORING = "exact law"
_CHUNK = 65_536

#: P(x_t = each symbol | x_<t) at given positions of a text: (alphabet, probs (n, A))
Law = Callable[[Any, str, np.ndarray], tuple[str, np.ndarray]]


def markov_law(params: MarkovParams, text: str, positions: np.ndarray) -> tuple[str, np.ndarray]:
    """The transition row of the previous ``order`` symbols; before ``order`` symbols
    exist, the conditional of the stationary start (the first ``order`` symbols are a
    state drawn from π)."""
    source = MarkovSource.random(params.order, params.alphabet, params.concentration, params.seed)
    a, k = source.n_symbols, params.order
    index = {c: i for i, c in enumerate(source.alphabet)}
    codes = np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
    pos = np.asarray(positions, dtype=np.int64)
    state = np.zeros(len(pos), dtype=np.int64)
    for i in range(k):
        state = state * a + codes[np.clip(pos - k + i, 0, None)]
    probs = source.transition[state].copy()
    early = np.flatnonzero(pos < k)
    if early.size:
        joint = source.stationary().reshape((a,) * k)  # axis 0: the oldest symbol
        for j in early.tolist():
            t = int(pos[j])
            first = joint.sum(axis=tuple(range(t + 1, k)))  # law of x_0 .. x_t
            row = first[tuple(codes[:t].tolist())]
            probs[j] = row / row.sum()
    return source.alphabet, probs


def reber_law(
    params: synthetic_reber.ReberParams, text: str, positions: np.ndarray
) -> tuple[str, np.ndarray]:
    return synthetic_reber.ALPHABET, synthetic_reber.conditional(params, text, positions)


def copy_law(
    params: synthetic_copy.CopyParams, text: str, positions: np.ndarray
) -> tuple[str, np.ndarray]:
    return synthetic_copy.ALPHABET, synthetic_copy.conditional(params, text, positions)


LAWS: dict[str, Law] = {"markov": markov_law, "reber": reber_law, "copy": copy_law}


@dataclass(frozen=True)
class KnownOptimum:
    """The oracle's row and what the source says of itself."""

    baseline: Baseline
    entropy_rate_bits: float
    #: copy only: bits per character of a model that cannot remember
    memoryless_bits: float | None = None
    #: how far back (characters) the law reaches: a Markov source's order, the copy
    #: task's T + 10 (None: it varies, as in the Reber grammar)
    span: int | None = None
    #: that reach in words, for the explanation under the leaderboard
    span_note: str = ""

    def metrics(self) -> dict[str, float]:
        """Parent-run figures besides the oracle row's own (``oracle_test_bpc`` ...)."""
        if self.memoryless_bits is None:
            return {}
        return {"source_memoryless_bits": self.memoryless_bits}

    def notes(self) -> list[str]:
        if self.memoryless_bits is None:
            return []
        return [
            f"memoryless figure: {self.memoryless_bits:.4f} bits/char (a model that "
            "cannot recall the symbols)"
        ]


def _synthetic_parts(source: str) -> tuple[str, dict[str, str]] | None:
    if source[: len("synthetic:")].lower() != "synthetic:":
        return None
    name, _, query = source.partition(":")[2].partition("?")
    return name.strip(), dict(urllib.parse.parse_qsl(query, keep_blank_values=True))


def oracle_targets(
    corpus: EncodedCorpus, law: Law, params: Any, text: str, split: str
) -> TargetScores:
    """The law's log-probability (nats) of each scored target of ``split`` and its rank,
    over the corpus's vocabulary (a source symbol it lacks counts as ``<unk>``)."""
    positions = corpus.scoring_positions(split)
    alphabet, probs = law(params, text, positions)
    vocab = corpus.vocab
    columns = [vocab.id_of(c) for c in alphabet]
    targets = corpus.ids[positions].astype(np.int64)
    parts = []
    for start in range(0, len(positions), _CHUNK):
        part = probs[start : start + _CHUNK]
        rows = np.zeros((len(part), len(vocab)))
        for j, col in enumerate(columns):
            rows[:, col] += part[:, j]
        with np.errstate(divide="ignore"):
            parts.append(target_scores(np.log(rows), targets[start : start + _CHUNK]))
    joined = TargetScores(
        np.concatenate([p.logp for p in parts] or [np.empty(0)]),
        np.concatenate([p.top1 for p in parts] or [np.empty(0, dtype=bool)]),
        np.concatenate([p.top5 for p in parts] or [np.empty(0, dtype=bool)]),
    )
    if not np.isfinite(joined.logp).all():
        raise DataError(f"the {split} text is impossible under the source's law")
    return joined


def source_law(corpus: EncodedCorpus) -> tuple[Law, Any, str, dict[str, Any]] | None:
    """(law, parsed parameters, text, metadata) of the corpus's synthetic source, if it
    has a known law and its text reached the corpus unchanged at char level."""
    data = corpus.config
    parts = _synthetic_parts(data.source)
    if data.level != "char" or parts is None:
        return None
    name, raw = parts
    law = LAWS.get(name)
    if law is None or name not in SYNTHETIC:
        return None
    text, meta = make_synthetic(name, raw)
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != corpus.text_sha256:
        log.info("no oracle: cleaning changed the text of %s", data.source)
        return None
    params = SYNTHETIC[name].params_model.model_validate(meta["params"])
    return law, params, text, meta


def known_optimum(task: Task, corpus: EncodedCorpus) -> KnownOptimum | None:
    """The oracle's val and test scores for a next-token comparison on a synthetic
    source with a known law; None where there is none (another task or source, word
    level, text changed by cleaning)."""
    if task.name != "next-token":
        return None
    try:
        found = source_law(corpus)
        if found is None:
            return None
        law, params, text, meta = found
        val, test = (
            summarize(oracle_targets(corpus, law, params, text, split), scored_chars(corpus, split))
            for split in ("val", "test")
        )
    except SeqlabError as err:
        log.warning("no oracle for %s: %s", corpus.config.source, err)
        return None
    memoryless = meta.get("memoryless_bits")
    span, note = law_span(params)
    return KnownOptimum(
        baseline=Baseline(label=ORACLE, val=val, test=test, scoring=SCORING),
        entropy_rate_bits=float(meta["entropy_rate_bits"]),
        memoryless_bits=None if memoryless is None else float(memoryless),
        span=span,
        span_note=note,
    )


def law_span(params: Any) -> tuple[int | None, str]:
    """How many characters back a source's law looks, and that in words."""
    if isinstance(params, MarkovParams):
        k = params.order
        return k, f"each character depends only on the previous {k}"
    if isinstance(params, synthetic_copy.CopyParams):
        span = synthetic_copy.recall_distance(params)
        return span, f"each recalled symbol was seen {span} characters earlier"
    if isinstance(params, synthetic_reber.ReberParams):
        return None, "the last T/P of each string repeats its second symbol, a string apart"
    return None, ""
