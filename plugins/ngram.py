"""N-gram language models (orders 1..N), vectorised with numpy and exact to ``nltk.lm``.

Why this module exists: the n-gram family is the baseline every neural plugin has to
beat, so it must be fast (fit and score whole corpora in numpy: no Python object per
n-gram, no Python loop over tokens) and trustworthy (the numbers of the reference
implementation, NLTK, to 1e-9 where NLTK is defined; see ``tests/test_ngram_nltk.py``).

**Vocabulary and <unk>** (the policy shared by every plugin): the vectorizer reserves id 0
for ``<unk>``; ids given to :meth:`NGramModel.fit` and :meth:`NGramModel.log_proba` lie in
``[0, vocab_size)``, and the model predicts over all ``vocab_size`` ids, ``<unk>``
included. Smoothed models give ``<unk>`` mass like any token unseen in training; that is
NLTK's convention too (its ``Vocabulary`` counts ``<UNK>`` in ``len(vocab)``).

**Counting**: n-grams of every order 1..N over the contiguous training stream, without
sentence padding: NLTK's ``everygrams(tokens, max_len=N)`` fed as one sentence.

**Contexts**: the last N-1 tokens of a context are used; a shorter one (even empty) is
scored by the model of its own length, as NLTK does (a context of j tokens starts the
recursion at level j+1, whose statistics are those of that level whatever the query).

**Storage**: order k's distinct n-grams are a sorted int64 array of keys
``prefix_index * V + last_token``, where ``prefix_index`` is the position of the
(k-1)-token prefix in order k-1's array (unigrams are indexed by token id). Keys never
overflow whatever the order, the n-grams sharing a context are contiguous (a CSR
layout), and every lookup is one ``np.searchsorted``.

**Smoothing.** Level k has contexts of k-1 tokens; ``c'`` is ``c`` without its first token.
Interpolated methods compute ``p_k(w|c) = alpha_k(c, w) + gamma_k(c) * p_{k-1}(w|c')``, and
a context with no data at a level has ``alpha = 0, gamma = 1`` (NLTK's rule).

* ``mle``: ``c(cw)/c(c.)``, no backoff. Unseen events get probability 0, so
  :meth:`~NGramModel.log_proba` returns ``-inf`` there (a whole row for an unseen
  context, as NLTK's ``freq`` gives 0); :meth:`~NGramModel.score` and the evaluator raise
  a one-line :class:`DataError` when a *scored* token has probability 0.
* ``lidstone`` / ``laplace`` (k = 1): ``(c(cw) + k) / (c(c.) + V k)`` at the context's own
  level only; an unseen context gives the uniform 1/V (NLTK's formula, also textbook).
* ``absolute``: ``alpha = max(c - D, 0)/c(c.)``, ``gamma = D N1+(c.)/c(c.)``.
* ``witten_bell``: ``gamma = N1+(c.)/(N1+(c.) + c(c.))``, ``alpha = (1 - gamma) c/c(c.)``.
* ``kneser_ney``: like ``absolute`` on raw counts at the highest level N and on continuation
  counts ``N1+(.cw)`` at lower levels.
* ``modified_kneser_ney``: Chen & Goodman's three discounts per level from that level's
  count-of-counts: ``Y = n1/(n1 + 2 n2)``, ``D1 = 1 - 2Y n2/n1``, ``D2 = 2 - 3Y n3/n2``,
  ``D3+ = 3 - 4Y n4/n3``; where one is undefined (a zero count-of-count, small corpora)
  or not positive, the level uses ``discount`` for all three (see ``discounts_``).
* ``stupid_backoff``: Brants et al.'s unnormalised scores (``c(cw)/c(c.)`` if seen, else
  ``backoff_alpha`` times the shorter context's score, an unseen context included, as
  NLTK does). They are for generation; :meth:`~NGramModel.scores` returns them raw and
  :meth:`~NGramModel.log_proba` renormalises them over the vocabulary so the contract
  holds.

**nltk_compat** (default ``False``). NLTK stops the recursion at an undiscounted unigram
(continuation counts for Kneser-Ney), so a token unseen in training (``<unk>``, or a
character seen only in the test split) gets probability 0 under Witten-Bell, absolute
discounting, Kneser-Ney and stupid backoff, and NLTK's Kneser-Ney counts a lower-level
context's distinct followers on raw counts while its denominator uses continuation
counts (they differ only for a context whose first occurrence starts the stream, where
NLTK's rows sum to slightly more than 1, or raise ZeroDivisionError when it occurs
nowhere else). With ``nltk_compat=True`` seqlab reproduces all of that exactly (no
renormalisation, 0 where NLTK has 0). By default seqlab is textbook instead: the unigram
level is smoothed like the others and interpolates with the uniform 1/V (stupid backoff
scores an unseen unigram ``backoff_alpha / V``), and Kneser-Ney counts followers on
continuation counts, so every row sums to 1 and every token, ``<unk>`` included, has
mass. ``mle``, ``lidstone`` and ``laplace`` are identical in both modes; NLTK has no
modified Kneser-Ney, so ``nltk_compat`` is refused with it. NLTK's Kneser-Ney is
undefined at order 1 (no continuation counts); seqlab uses raw counts there.

**Fill in the blank** (:meth:`NGramModel.fill_blank_log_proba`): exact Bayes over the
model itself, p(w | left, right) ∝ p(w | left) · Π p(right[j] | its N-1 predecessors),
for the N-1 right tokens whose context contains w; vectorised over candidates and batch
(about a second for 10k blanks, V≈45, order 5).

**ARPA export** (:meth:`NGramModel.to_arpa`, :mod:`plugins.ngram_arpa`) writes the
interpolated models in backoff form as SRILM does, and add-k densely.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator

from plugins.ngram_arpa import ArpaTable, check_writable, read_arpa, write_arpa
from seqlab.api import (
    ConfigError,
    DataError,
    EpochCallback,
    EpochRecord,
    FitData,
    NotFittedError,
    PluginConfig,
    SequenceModel,
    TaskKind,
    as_context_array,
)

Smoothing = Literal[
    "mle",
    "lidstone",
    "laplace",
    "absolute",
    "witten_bell",
    "kneser_ney",
    "modified_kneser_ney",
    "stupid_backoff",
]
_INTERPOLATED = frozenset({"absolute", "witten_bell", "kneser_ney", "modified_kneser_ney"})
_KN_FAMILY = frozenset({"kneser_ney", "modified_kneser_ney"})
_EMPTY = np.zeros(0, dtype=np.int64)


class NGramConfig(PluginConfig):
    """Hyper-parameters of :class:`NGramModel` (see the module docstring for formulas)."""

    order: int = Field(default=5, ge=1, description="N: the longest n-gram counted")
    smoothing: Smoothing = "kneser_ney"
    k: float = Field(default=1.0, gt=0, description="add-k constant of lidstone")
    discount: float = Field(
        default=0.75, gt=0, lt=1, description="D of absolute / Kneser-Ney (MKN fallback)"
    )
    backoff_alpha: float = Field(default=0.4, gt=0, le=1, description="stupid backoff")
    nltk_compat: bool = Field(
        default=False, description="reproduce nltk.lm exactly, zero probabilities included"
    )

    @field_validator("k")
    @classmethod
    def _laplace_is_add_one(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("smoothing") == "laplace" and value != 1.0:
            raise ValueError("laplace is add-one (k=1); use smoothing=lidstone for another k")
        return value

    @field_validator("nltk_compat")
    @classmethod
    def _nltk_has_no_mkn(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("smoothing") == "modified_kneser_ney":
            raise ValueError("nltk.lm has no modified Kneser-Ney to be compatible with")
        return value


@dataclass(frozen=True)
class _Level:
    """Derived arrays of level k >= 2 (contexts of k-1 tokens), rebuilt by ``_prepare``.

    ``alpha`` is per n-gram type of order k: the interpolated alpha, or for the
    non-interpolated methods the value used when the n-gram is seen (relative frequency,
    or the raw count for lidstone). ``gamma`` and ``total`` are per context (per type of
    order k-1): the interpolation weight and the count mass the level divides by.
    """

    alpha: np.ndarray
    gamma: np.ndarray
    total: np.ndarray


def _count_ngrams(
    stream: np.ndarray, order: int, vocab_size: int
) -> tuple[np.ndarray, dict[int, np.ndarray], dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Count every order of ``stream``.

    Returns dense unigram counts and, per order k >= 2, the sorted trie keys, their
    counts, and ``at[k]``: the index of the k-gram starting at each position (``at[1]``
    is the stream itself), which scores the training stream without any lookup.
    """
    counts1 = np.bincount(stream, minlength=vocab_size).astype(np.int64)
    keys: dict[int, np.ndarray] = {}
    counts: dict[int, np.ndarray] = {}
    at = {1: stream}
    for k in range(2, order + 1):
        n = len(stream) - k + 1
        if n <= 0:
            keys[k], counts[k], at[k] = _EMPTY, _EMPTY, _EMPTY
            continue
        key = at[k - 1][:n] * vocab_size + stream[k - 1 : k - 1 + n]
        uniq, inverse, cnt = np.unique(key, return_inverse=True, return_counts=True)
        keys[k], counts[k] = uniq.astype(np.int64), cnt.astype(np.int64)
        at[k] = inverse.astype(np.int64).ravel()
    return counts1, keys, counts, at


def _bincount(index: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Per-context sums as float64 (exact for integer counts below 2**53)."""
    return np.bincount(index, weights=np.asarray(weights, dtype=np.float64), minlength=size)


class NGramModel(SequenceModel):
    """Count-based n-gram model: one fit over the training stream, no epochs."""

    config_class: ClassVar[type[PluginConfig]] = NGramConfig
    task_kinds: ClassVar[frozenset[TaskKind]] = frozenset({"next-token", "fill-blank"})
    test_params: ClassVar[dict[str, Any]] = {"order": 3}

    config: NGramConfig

    def __init__(self, vocab_size: int, config: PluginConfig | Mapping[str, Any] | None = None):
        super().__init__(vocab_size, config)
        self._fitted = False
        self._counts: dict[int, np.ndarray] = {}
        self._keys: dict[int, np.ndarray] = {}
        self._levels: dict[int, _Level] = {}
        self._p1 = np.zeros(0)
        #: Modified Kneser-Ney discounts (D1, D2, D3+) per level, after fit.
        self.discounts_: dict[int, tuple[float, float, float]] = {}

    def context_reach(self) -> int:
        """N - 1: the longest context an n-gram of order N conditions on."""
        return self.config.order - 1

    # ---- fitting -------------------------------------------------------------------
    def fit(self, data: FitData, on_epoch: EpochCallback | None = None) -> list[EpochRecord]:
        """Count every n-gram of ``data.train``; report train and val nll as one epoch.

        ``val_nll`` is ``inf`` when the
        model gives a val token probability 0 (``mle``, ``nltk_compat``).
        """
        if int(data.vocab_size) != self.vocab_size:
            raise DataError(
                f"data has vocab_size {data.vocab_size} but the model was built for "
                f"{self.vocab_size}"
            )
        train = self._as_ids(data.train, "train")
        if len(train) == 0:
            raise DataError("the train split is empty: nothing to count")
        start = time.perf_counter()
        counts1, keys, counts, at = _count_ngrams(train, self.config.order, self.vocab_size)
        self._install(counts1, keys, counts)
        train_nll = self._stream_nll(train, at)
        val = None if data.val is None else self._as_ids(data.val, "val")
        val_nll = self._stream_nll(val) if val is not None and len(val) else float("nan")
        seconds = time.perf_counter() - start
        record = EpochRecord(
            epoch=1,
            train_nll=train_nll,
            val_nll=val_nll,
            tokens_per_s=len(train) / max(seconds, 1e-9),
            seconds=seconds,
        )
        if on_epoch is not None:
            on_epoch(record)
        return [record]

    @property
    def is_fitted(self) -> bool:
        return self._fitted

    def _as_ids(self, ids: Any, what: str) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise DataError(f"{what}: token ids must be a 1-D array, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"{what}: token ids must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise DataError(f"{what}: token ids must lie in [0, {self.vocab_size})")
        return arr

    def _install(
        self, counts1: np.ndarray, keys: dict[int, np.ndarray], counts: dict[int, np.ndarray]
    ) -> None:
        self._counts = {1: counts1, **counts}
        self._keys = keys
        self._prepare()
        self._fitted = True

    # ---- derived statistics --------------------------------------------------------
    def _prepare(self) -> None:
        """Derive every level's alpha/gamma from the counts (after fit or set_state)."""
        cfg, V, N = self.config, self.vocab_size, self.config.order
        n_types = {1: V, **{k: len(self._keys[k]) for k in range(2, N + 1)}}
        self._ctx = {k: self._keys[k] // V for k in range(2, N + 1)}
        self._word = {k: self._keys[k] % V for k in range(2, N + 1)}
        self._start = {
            k: np.searchsorted(self._ctx[k], np.arange(n_types[k - 1] + 1)) for k in range(2, N + 1)
        }
        self._n_types = n_types
        # suffix[k][g]: index in order k-1 of n-gram g without its first token
        suffix: dict[int, np.ndarray] = {}
        for k in range(2, N + 1):
            if k == 2:
                suffix[k] = self._word[2]
                continue
            found = self._lookup(k - 1, suffix[k - 1][self._ctx[k]], self._word[k])
            if (found < 0).any():  # every suffix of a seen n-gram is seen
                raise DataError("n-gram counts are inconsistent (a suffix is missing)")
            suffix[k] = found
        self._suffix = suffix
        # continuation counts N1+(. g): distinct left extensions of each n-gram type
        cont = {k: np.bincount(suffix[k + 1], minlength=n_types[k]) for k in range(1, N)}
        kn = cfg.smoothing in _KN_FAMILY

        def level_counts(k: int) -> np.ndarray:
            return cont[k] if kn and k < N else self._counts[k]

        self.discounts_ = {}
        self._levels = {}
        for k in range(2, N + 1):
            lc = level_counts(k).astype(np.float64)
            self._levels[k] = self._make_level(k, lc, self._ctx[k], n_types[k - 1])
        self._p1 = self._unigram(level_counts(1).astype(np.float64))

    def _mkn_discounts(self, k: int, lc: np.ndarray) -> tuple[float, float, float]:
        n1, n2, n3, n4 = (float(np.count_nonzero(lc == i)) for i in (1, 2, 3, 4))
        d = self.config.discount
        if min(n1, n2, n3, n4) == 0:
            found = (d, d, d)
        else:
            y = n1 / (n1 + 2 * n2)
            found = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
            if min(found) <= 0:
                found = (d, d, d)
        self.discounts_[k] = found
        return found

    def _interp(
        self, k: int, lc: np.ndarray, ctx: np.ndarray, n_ctx: int, compat_raw_types: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """alpha (per n-gram), gamma and total (per context) of an interpolated level."""
        cfg = self.config
        total = _bincount(ctx, lc, n_ctx)
        seen = total > 0
        safe = np.where(seen, total, 1.0)
        if compat_raw_types:  # NLTK counts a context's followers on raw counts
            n_plus = np.bincount(ctx, minlength=n_ctx).astype(np.float64)
        else:
            n_plus = _bincount(ctx, lc > 0, n_ctx)
        if cfg.smoothing == "witten_bell":
            gamma = n_plus / np.where(seen, n_plus + total, 1.0)
            alpha = (1.0 - gamma[ctx]) * (lc / safe[ctx])
        elif cfg.smoothing == "modified_kneser_ney":
            d1, d2, d3 = self._mkn_discounts(k, lc)
            disc = np.select([lc == 1, lc == 2, lc >= 3], [d1, d2, d3], 0.0)
            alpha = np.maximum(lc - disc, 0.0) / safe[ctx]
            gamma = _bincount(ctx, disc, n_ctx) / safe
        else:  # absolute, kneser_ney
            d = cfg.discount
            alpha = np.maximum(lc - d, 0.0) / safe[ctx]
            gamma = d * n_plus / safe
        return alpha, np.where(seen, gamma, 1.0), total

    def _make_level(self, k: int, lc: np.ndarray, ctx: np.ndarray, n_ctx: int) -> _Level:
        cfg = self.config
        if cfg.smoothing in _INTERPOLATED:
            compat_raw = cfg.nltk_compat and cfg.smoothing == "kneser_ney" and k < cfg.order
            alpha, gamma, total = self._interp(k, lc, ctx, n_ctx, compat_raw)
            return _Level(alpha, gamma, total)
        total = _bincount(ctx, lc, n_ctx)
        if cfg.smoothing in ("lidstone", "laplace"):
            return _Level(lc, np.ones(n_ctx), total)
        safe = np.where(total > 0, total, 1.0)
        return _Level(lc / safe[ctx], np.ones(n_ctx), total)  # mle, stupid_backoff

    def _unigram(self, lc: np.ndarray) -> np.ndarray:
        """Level 1 over all V ids (unnormalised for stupid backoff)."""
        cfg, V = self.config, self.vocab_size
        total = float(lc.sum())
        freq = lc / total if total > 0 else np.zeros(V)
        if cfg.smoothing in ("lidstone", "laplace"):
            kk = 1.0 if cfg.smoothing == "laplace" else cfg.k
            return (lc + kk) / (total + V * kk)
        if cfg.smoothing == "mle":
            return freq
        if cfg.smoothing == "stupid_backoff":
            return freq if cfg.nltk_compat else np.where(lc > 0, freq, cfg.backoff_alpha / V)
        if cfg.nltk_compat:  # NLTK: the undiscounted (continuation) unigram, no uniform
            return freq
        alpha, gamma, _ = self._interp(1, lc, np.zeros(V, dtype=np.int64), 1, False)
        return alpha + gamma[0] * (1.0 / V)

    # ---- lookups -------------------------------------------------------------------
    def _lookup(self, k: int, prefix: np.ndarray, word: np.ndarray) -> np.ndarray:
        """Index of n-gram (prefix, word) in order k (prefix indexes order k-1), or -1."""
        keys = self._keys[k]
        if len(keys) == 0:
            return np.full(len(prefix), -1, dtype=np.int64)
        key = prefix * self.vocab_size + word
        pos = np.searchsorted(keys, key)
        hit = (prefix >= 0) & (keys[np.minimum(pos, len(keys) - 1)] == key)
        return np.where(hit, pos, -1)

    def _context_index(self, ctx: np.ndarray) -> list[np.ndarray]:
        """For j = 1..T: index of the last j tokens of each row in order j's types, or -1."""
        m = ctx.shape[1]
        out = []
        for j in range(1, m + 1):
            s = m - j
            idx = ctx[:, s].copy()  # unigrams are indexed by token id
            for q in range(2, j + 1):
                idx = self._lookup(q, idx, ctx[:, s + q - 1])
            out.append(idx)
        return out

    def _expand(self, k: int, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, n-gram index) of every order-k n-gram whose context is row's ``c``."""
        rows0 = np.flatnonzero(c >= 0)
        start = self._start[k][c[rows0]]
        lens = self._start[k][c[rows0] + 1] - start
        rows = np.repeat(rows0, lens)
        first = np.repeat(np.cumsum(lens) - lens, lens)
        grams = np.repeat(start, lens) + (np.arange(len(rows)) - first)
        return rows, grams

    def _prepare_contexts(self, contexts: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        if not self._fitted:
            raise NotFittedError(
                f"{type(self).__name__}: call fit() or load a checkpoint before scoring"
            )
        ctx = as_context_array(contexts)
        if ctx.size and (ctx.min() < 0 or ctx.max() >= self.vocab_size):
            raise DataError(f"token ids must lie in [0, {self.vocab_size})")
        m = min(ctx.shape[1], self.config.order - 1)
        ctx = ctx[:, ctx.shape[1] - m :]
        return ctx, self._context_index(ctx)

    # ---- scoring -------------------------------------------------------------------
    def scores(self, contexts: np.ndarray) -> np.ndarray:
        """NLTK's ``score(w, context)`` for every w: (B, V) float64.

        Probabilities for every smoothing except ``stupid_backoff``, whose raw
        (unnormalised) scores these are.
        """
        ctx, cidx = self._prepare_contexts(contexts)
        cfg, B, m = self.config, ctx.shape[0], ctx.shape[1]
        if cfg.smoothing in _INTERPOLATED or cfg.smoothing == "stupid_backoff":
            P = np.tile(self._p1, (B, 1))
            for j in range(1, m + 1):
                k, c = j + 1, cidx[j - 1]
                rows, grams = self._expand(k, c)
                if cfg.smoothing == "stupid_backoff":
                    P *= cfg.backoff_alpha
                    P[rows, self._word[k][grams]] = self._levels[k].alpha[grams]
                else:  # alpha + gamma * lower, NLTK's operation order
                    P *= np.where(c >= 0, self._levels[k].gamma[np.maximum(c, 0)], 1.0)[:, None]
                    P[rows, self._word[k][grams]] += self._levels[k].alpha[grams]
            return P
        if m == 0:
            return np.tile(self._p1, (B, 1))
        k, c = m + 1, cidx[m - 1]
        lev = self._levels[k]
        total = np.where(c >= 0, lev.total[np.maximum(c, 0)], 0.0)
        rows, grams = self._expand(k, c)
        if cfg.smoothing == "mle":
            P = np.zeros((B, self.vocab_size))
            P[rows, self._word[k][grams]] = lev.alpha[grams]
            return P
        kk = 1.0 if cfg.smoothing == "laplace" else cfg.k
        P = np.full((B, self.vocab_size), kk)
        P[rows, self._word[k][grams]] += lev.alpha[grams]
        return P / (total + self.vocab_size * kk)[:, None]

    def log_proba(self, contexts: np.ndarray) -> np.ndarray:
        """Natural-log next-token probabilities (B, V); contexts may have any length T >= 0.

        Rows sum to 1, except under ``mle`` (``-inf`` for unseen events) and
        ``nltk_compat`` (NLTK's zeros and boundary quirk, see the module docstring).
        """
        P = self.scores(contexts)
        if self.config.smoothing == "stupid_backoff":
            P = P / P.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore"):
            return np.log(P)

    def fill_blank_log_proba(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """log p(w | left, right) for every w, (B, V) float64, exactly by Bayes over this
        model: log p(w | left) + sum_{j < N-1} log p(right[j] | the N-1 tokens before it
        in left + [w] + right), normalised over w (the later right tokens' contexts do not
        contain w, so they cancel). ``right[:, 0]`` is the token just after the blank;
        either side may be empty. Vectorised over the batch and the V candidates: (N-1)
        lookups of B*V contexts. A row whose every candidate has probability 0 (``mle``,
        ``nltk_compat``) is all ``-inf``, as log_proba's row for an unseen context.
        """
        lp = self.log_proba(left)  # fitted, left's shape and ids checked here
        lft, rgt = as_context_array(left), as_context_array(right)
        if rgt.shape[0] != lft.shape[0]:
            raise DataError(
                f"left and right contexts must have as many rows ({lft.shape[0]} != {rgt.shape[0]})"
            )
        if rgt.size and (rgt.min() < 0 or rgt.max() >= self.vocab_size):
            raise DataError(f"token ids must lie in [0, {self.vocab_size})")
        B, V, m = lft.shape[0], self.vocab_size, self.config.order - 1
        n_right = min(m, rgt.shape[1])
        total = lp.copy()
        hist = lft[:, lft.shape[1] - min(m, lft.shape[1]) :]  # what right[j]'s context reaches
        chunk = max(1, 262_144 // V)  # rows per lookup batch: chunk * V contexts
        cand = np.arange(V, dtype=np.int64)
        for s in range(0, B, chunk):
            h, r, b = hist[s : s + chunk], rgt[s : s + chunk], len(hist[s : s + chunk])
            seq = np.concatenate(  # (b, V, |h| + 1 + n_right): left + [w] + right
                [
                    np.broadcast_to(h[:, None, :], (b, V, h.shape[1])),
                    np.broadcast_to(cand[None, :, None], (b, V, 1)),
                    np.broadcast_to(r[:, None, :n_right], (b, V, n_right)),
                ],
                axis=2,
            )
            for j in range(n_right):
                end = h.shape[1] + 1 + j  # right[j] sits at seq[..., end]
                ctx = seq[:, :, max(0, end - m) : end].reshape(b * V, -1)
                p = self._target_proba(ctx, np.repeat(r[:, j], V))
                with np.errstate(divide="ignore"):
                    total[s : s + b] += np.log(p).reshape(b, V)
        peak = total.max(axis=1, keepdims=True)
        ok = np.isfinite(peak)
        safe = np.where(ok, peak, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            lse = safe + np.log(np.exp(total - safe).sum(axis=1, keepdims=True))
            out: np.ndarray = np.where(ok, total - lse, -np.inf)
        return out

    def _target_proba(self, contexts: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """p(target | context) per row without materialising (B, V), except for SB."""
        tgt = np.asarray(targets).astype(np.int64).ravel()
        ctx, cidx = self._prepare_contexts(contexts)
        if len(tgt) != ctx.shape[0]:
            raise DataError(f"{ctx.shape[0]} contexts but {len(tgt)} targets")
        if tgt.size and (tgt.min() < 0 or tgt.max() >= self.vocab_size):
            raise DataError(f"token ids must lie in [0, {self.vocab_size})")
        if self.config.smoothing == "stupid_backoff":  # normalising needs whole rows
            out = np.empty(len(tgt))
            step = max(1, 4_000_000 // self.vocab_size)
            for s in range(0, len(tgt), step):
                P = self.scores(ctx[s : s + step])
                out[s : s + step] = P[np.arange(len(P)), tgt[s : s + step]] / P.sum(axis=1)
            return out
        gidx = [self._lookup(j + 1, c, tgt) for j, c in enumerate(cidx, start=1)]
        return self._combine(cidx, gidx, tgt)

    def _combine(
        self, cidx: list[np.ndarray], gidx: list[np.ndarray], tgt: np.ndarray
    ) -> np.ndarray:
        """p(target) from, per level k = 2..m+1, the context and n-gram indices (or -1)."""
        cfg = self.config
        p = self._p1[tgt]
        if cfg.smoothing in _INTERPOLATED:
            for j, (c, g) in enumerate(zip(cidx, gidx, strict=True), start=1):
                lev = self._levels[j + 1]
                alpha = np.where(g >= 0, lev.alpha[np.maximum(g, 0)], 0.0)
                p = alpha + np.where(c >= 0, lev.gamma[np.maximum(c, 0)], 1.0) * p
            return p
        m = len(cidx)
        if m == 0:
            return p
        c, g, lev = cidx[m - 1], gidx[m - 1], self._levels[m + 1]
        seen_value = np.where(g >= 0, lev.alpha[np.maximum(g, 0)], 0.0)
        if cfg.smoothing == "mle":
            return seen_value
        kk = 1.0 if cfg.smoothing == "laplace" else cfg.k
        total = np.where(c >= 0, lev.total[np.maximum(c, 0)], 0.0)
        return (seen_value + kk) / (total + self.vocab_size * kk)

    def score(self, contexts: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Natural-log p(target | context) per row, (B,); refuses a zero probability.

        Raises a one-line :class:`DataError` naming the first scored token with
        probability 0 (``mle``, or ``nltk_compat`` with an unseen token) instead of
        returning ``-inf``.
        """
        p = self._target_proba(contexts, targets)
        bad = np.flatnonzero(p <= 0)
        if bad.size:
            i = int(bad[0])
            tok = int(np.asarray(targets).ravel()[i])
            mode = " (nltk_compat)" if self.config.nltk_compat else ""
            raise DataError(
                f"{self.config.smoothing}{mode} n-gram gives zero probability to token id "
                f"{tok} at position {i} ({bad.size} such position(s)); use a smoothed model"
            )
        return np.log(p)

    def _stream_nll(self, stream: np.ndarray, at: dict[int, np.ndarray] | None = None) -> float:
        """Mean nll of every token of ``stream`` after what precedes it (short at start).

        With ``at`` (the training stream's n-gram index per position, from counting) the
        context and n-gram indices are gathered instead of searched.
        """
        w = self.config.order - 1
        p = np.empty(len(stream))
        for i in range(min(w, len(stream))):  # the first w tokens: one context length each
            p[i] = self._target_proba(stream[None, :i], stream[i : i + 1])[0]
        if len(stream) > w:
            if at is not None and self.config.smoothing != "stupid_backoff":
                # position i (>= w): level j+1's context is the j-gram starting at i - j
                rows = np.arange(w, len(stream))
                cidx = [at[j][rows - j] for j in range(1, w + 1)]
                gidx = [at[j + 1][rows - j] for j in range(1, w + 1)]
                p[w:] = self._combine(cidx, gidx, stream[w:])
            else:
                win = np.lib.stride_tricks.sliding_window_view(stream, w + 1)
                p[w:] = self._target_proba(win[:, :w], win[:, w])
        with np.errstate(divide="ignore"):
            return float(-np.log(p).mean())

    # ---- dynamic evaluation ----------------------------------------------------------
    def adapt(self, history: np.ndarray, new: int) -> None:
        """Dynamic evaluation: add the counts of every n-gram that ends in the last ``new``
        tokens of ``history`` and starts inside it (so its prefix and suffix, which the
        trie needs, were counted before or now), then re-derive the smoothing."""
        if not self._fitted:
            raise NotFittedError(f"{type(self).__name__}: call fit() before adapt()")
        ids = self._as_ids(history, "history")
        new = min(int(new), len(ids))
        if new <= 0:
            return
        V, first = self.vocab_size, len(ids) - new
        grams = self._gram_tokens()
        counts1 = self._counts[1] + np.bincount(ids[first:], minlength=V)
        keys: dict[int, np.ndarray] = {}
        counts: dict[int, np.ndarray] = {}
        for k in range(2, self.config.order + 1):
            ends = np.arange(max(first, k - 1), len(ids), dtype=np.int64)
            fresh = np.stack([ids[ends - k + 1 + j] for j in range(k)], axis=1)
            rows, cnt = _merge_rows(
                np.concatenate([grams[k], fresh.reshape(-1, k)]),
                np.concatenate([self._counts[k], np.ones(len(ends), dtype=np.int64)]),
                V,
            )
            prefix = rows[:, 0]  # unigrams are indexed by token id
            for j in range(2, k):  # the prefix's index in order j's (lexicographic) types
                prefix = np.searchsorted(keys[j], prefix * V + rows[:, j - 1])
            keys[k], counts[k] = prefix * V + rows[:, -1], cnt
        self._install(counts1, keys, counts)

    # ---- persistence ---------------------------------------------------------------
    def get_state(self) -> dict[str, torch.Tensor]:
        """Raw counts only (everything else is derived): unigram counts, trie keys."""
        if not self._fitted:
            raise NotFittedError(f"{type(self).__name__}: nothing to save before fit()")
        state = {
            "shape": torch.tensor([self.config.order, self.vocab_size], dtype=torch.int64),
            "counts_1": torch.from_numpy(self._counts[1].copy()),
        }
        for k in range(2, self.config.order + 1):
            state[f"keys_{k}"] = torch.from_numpy(self._keys[k].copy())
            state[f"counts_{k}"] = torch.from_numpy(self._counts[k].copy())
        return state

    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Rebuild from :meth:`get_state`'s tensors; refuses another order or vocabulary."""
        N, V = self.config.order, self.vocab_size
        names = {"shape", "counts_1"} | {
            f"{p}_{k}" for k in range(2, N + 1) for p in ("keys", "counts")
        }
        missing = sorted(names - set(state))
        if missing:
            raise DataError(f"checkpoint does not fit NGramModel: missing {missing[0]}")
        shape = [int(x) for x in state["shape"].tolist()]
        if shape != [N, V]:
            raise DataError(
                f"checkpoint does not fit NGramModel: order/vocab_size {shape}, expected {[N, V]}"
            )

        def arr(name: str) -> np.ndarray:
            return state[name].detach().cpu().numpy().astype(np.int64)

        counts1 = arr("counts_1")
        if counts1.shape != (V,):
            raise DataError("checkpoint does not fit NGramModel: counts_1 has the wrong shape")
        keys = {k: arr(f"keys_{k}") for k in range(2, N + 1)}
        counts = {k: arr(f"counts_{k}") for k in range(2, N + 1)}
        self._install(counts1, keys, counts)

    # ---- ARPA ----------------------------------------------------------------------
    def _gram_tokens(self) -> dict[int, np.ndarray]:
        """Token ids (n_k, k) of every n-gram type per order."""
        tokens = {1: np.arange(self.vocab_size, dtype=np.int64)[:, None]}
        for k in range(2, self.config.order + 1):
            tokens[k] = np.column_stack([tokens[k - 1][self._ctx[k]], self._word[k]])
        return tokens

    def arpa_tables(self) -> list[ArpaTable]:
        """The model in backoff form: per order, n-grams, log10 p and log10 backoff.

        Interpolated models (SRILM's conversion): every seen n-gram carries its full
        interpolated probability and every context its gamma as backoff weight, so an
        unlisted n-gram continues exactly to the lower order. Add-k lists every word
        after every seen context (exact there; an unseen context, uniform in the model,
        backs off to the shorter context in ARPA). MLE and stupid backoff are refused.
        """
        cfg, N, V = self.config, self.config.order, self.vocab_size
        if not self._fitted:
            raise NotFittedError(f"{type(self).__name__}: call fit() before to_arpa()")
        if cfg.smoothing in ("mle", "stupid_backoff"):
            raise ConfigError(
                f"smoothing: {cfg.smoothing} cannot be written as an ARPA backoff model "
                "(zero or unnormalised probabilities); use a smoothed model"
            )
        tokens = self._gram_tokens()
        tables: list[ArpaTable] = []
        if cfg.smoothing in _INTERPOLATED:
            p = self._p1
            for k in range(1, N + 1):
                if k > 1:
                    lev = self._levels[k]
                    p = lev.alpha + lev.gamma[self._ctx[k]] * p[self._suffix[k]]
                bow = _log10(self._levels[k + 1].gamma) if k < N else None
                tables.append(ArpaTable(tokens[k], _log10(p), bow))
            return tables
        kk = 1.0 if cfg.smoothing == "laplace" else cfg.k
        lines = V * sum(int(np.count_nonzero(self._levels[k].total)) for k in range(2, N + 1))
        if lines > 50_000_000:
            raise DataError(f"add-k in ARPA needs {lines} lines (V per context); too large")
        tables.append(ArpaTable(tokens[1], _log10(self._p1), np.zeros(V) if N > 1 else None))
        for k in range(2, N + 1):
            lev = self._levels[k]
            seen = np.flatnonzero(lev.total > 0)
            where = np.full(self._n_types[k - 1], -1, dtype=np.int64)
            where[seen] = np.arange(len(seen))
            dense = np.full((len(seen), V), kk)
            dense[where[self._ctx[k]], self._word[k]] += lev.alpha
            dense /= (lev.total[seen] + V * kk)[:, None]
            grams = np.column_stack(
                [np.repeat(tokens[k - 1][seen], V, axis=0), np.tile(np.arange(V), len(seen))]
            )
            bow = np.zeros(len(grams)) if k < N else None
            tables.append(ArpaTable(grams, _log10(dense.ravel()), bow))
        return tables

    def to_arpa(self, path: str | Path, vocab: Sequence[str]) -> Path:
        """Write an ARPA file (SRILM / KenLM) naming tokens by ``vocab`` (escaped)."""
        if len(vocab) != self.vocab_size:
            raise DataError(f"vocab has {len(vocab)} tokens, the model {self.vocab_size}")
        check_writable(path)  # before the tables are built: a bad path fails at once
        return write_arpa(path, self.arpa_tables(), list(vocab))


def _merge_rows(
    rows: np.ndarray, weights: np.ndarray, vocab_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows (n-grams as token ids), sorted lexicographically, with summed
    weights; packed into one int64 per row when the vocabulary allows (much faster)."""
    k = rows.shape[1]
    if len(rows) == 0:
        return rows.astype(np.int64), np.zeros(0, dtype=np.int64)
    if k * np.log2(max(vocab_size, 2)) < 62:
        base = np.int64(vocab_size) ** np.arange(k - 1, -1, -1, dtype=np.int64)
        packed = rows @ base
        uniq, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
        out = rows[first]
    else:
        out, inverse = np.unique(rows, axis=0, return_inverse=True)
        uniq = out
    total = np.bincount(inverse.ravel(), weights=weights.astype(np.float64), minlength=len(uniq))
    return out.astype(np.int64), np.rint(total).astype(np.int64)


def _log10(p: np.ndarray) -> np.ndarray:
    """log10, with SRILM's -99 for a zero probability."""
    with np.errstate(divide="ignore"):
        out = np.log10(p)
    return np.where(p > 0, out, -99.0)


__all__ = ["NGramConfig", "NGramModel", "read_arpa"]
