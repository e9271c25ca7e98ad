"""The spelling charge of open-vocabulary evaluation (Mielke et al., 2019).

A model that predicts ``<unk>`` has not predicted *which* unknown token came, so an
``<unk>`` target is charged its spelling: log p_model(``<unk>``) + log p_fallback(the
actual string). The fallback is shared by every model, fitted on the training split
only, and added in the scoring layer, so no plugin can make an open vocabulary cheap:

* characters: :data:`BYTE_BITS` bits per UTF-8 byte of the unseen character;
* words: a character unigram over the training tokens' characters with an end-of-word
  symbol and an escape symbol, add-one smoothed; a character never seen in training
  costs the escape plus :data:`BYTE_BITS` bits per UTF-8 byte.

Both are (sub-)distributions over strings, so the charge never undercounts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pipeline_core.config import Level
from pipeline_core.vectorize import EncodedCorpus

#: bits for one UTF-8 byte of a symbol the fallback has never seen
BYTE_BITS = 8.0
LN2 = math.log(2.0)


def byte_bits(text: str) -> float:
    """8 bits per UTF-8 byte (a lone surrogate, as the fuzz tests feed, counts 3 bytes)."""
    return BYTE_BITS * len(text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class SpellingModel:
    """The shared fallback: bits to spell an out-of-vocabulary token."""

    level: Level
    #: training characters (word level), every occurrence of every training token
    char_counts: Mapping[str, int]
    #: training tokens, i.e. end-of-word events (word level)
    words: int

    @classmethod
    def fit(cls, corpus: EncodedCorpus) -> SpellingModel:
        """From the training split only: each vocabulary word times its training count,
        plus the spelling of each training ``<unk>`` (rare words under ``min_freq``)."""
        if corpus.level == "char":
            return cls("char", {}, 0)
        train = corpus.train
        counts = np.bincount(train.astype(np.int64), minlength=len(corpus.vocab))
        chars: Counter[str] = Counter()
        for token, n in zip(corpus.vocab.tokens, counts.tolist(), strict=True):
            if n and token not in corpus.vocab.specials:
                for ch in token:
                    chars[ch] += n
        for pos, spelling in corpus.unk_spellings.items():
            if pos < len(train):
                chars.update(spelling)
        return cls("word", dict(chars), len(train))

    def bits(self, spelling: str) -> float:
        """-log2 p_fallback(spelling)."""
        if self.level == "char":
            return byte_bits(spelling)
        # add-one over the seen characters, end-of-word and the escape
        denom = sum(self.char_counts.values()) + self.words + len(self.char_counts) + 2
        escape = math.log2(denom)
        total = math.log2(denom / (self.words + 1))  # end of word
        for ch in spelling:
            seen = self.char_counts.get(ch)
            total += math.log2(denom / (seen + 1)) if seen else escape + byte_bits(ch)
        return total


def spelling_nats(corpus: EncodedCorpus, positions: np.ndarray) -> np.ndarray:
    """Nats to add to the cost of each scored position: the spelling of ``<unk>``
    targets, 0 elsewhere (the fallback is fitted only when some target needs it)."""
    charge = np.zeros(len(positions), dtype=np.float64)
    unk_rows = np.flatnonzero(corpus.ids[positions] == 0)
    if not unk_rows.size or not corpus.unk_spellings:
        return charge
    model = SpellingModel.fit(corpus)
    for row in unk_rows.tolist():
        spelling = corpus.unk_spellings.get(int(positions[row]))
        if spelling is not None:
            charge[row] = model.bits(spelling) * LN2
    return charge


def oov_note(corpus: EncodedCorpus) -> str:
    """The line under the leaderboard: each split's out-of-vocabulary rate."""
    rates = ", ".join(f"{k} {v:.2%}" for k, v in corpus.oov_rates().items())
    return (
        f"out-of-vocabulary {corpus.level} tokens (not in the training vocabulary; each "
        f"scored as p(<unk>) x its spelling): {rates}"
    )
