"""Generation from a seed text: greedy, temperature and top-k sampling, through
``log_proba`` only, so every plugin generates the same way."""

from __future__ import annotations

import math

import numpy as np

from pipeline_core.config import Level
from pipeline_core.contract import SequenceModel
from pipeline_core.errors import ConfigError, DataError
from pipeline_core.vectorize import Vocabulary, tokenize


def encode_prompt(text: str, vocab: Vocabulary, level: Level) -> tuple[np.ndarray, int]:
    """A prompt's token ids under the ``<unk>`` policy, and how many tokens were unknown.

    Any text is accepted: a token outside ``vocab`` (a character never seen in training,
    a lone surrogate, a rare word) becomes ``<unk>`` (id 0) and is counted, so callers
    can report it. The vocabulary never holds a token that spells ``<unk>`` (tokenizing
    splits it), so the count is the number of id-0 tokens.
    """
    tokens, _ = tokenize(text, level)
    ids = np.fromiter((vocab.id_of(t) for t in tokens), dtype=np.int64, count=len(tokens))
    return ids, int(np.count_nonzero(ids == vocab.unk_id))


def check_context_len(context_len: int) -> None:
    if context_len < 1:
        raise ConfigError(f"context_len: must be >= 1 (got {context_len})")


def check_sampling(temperature: float, top_k: int | None) -> None:
    if not 0 <= temperature < math.inf:  # NaN and inf too: they would make p NaN
        raise ConfigError(f"temperature: must be a finite number >= 0 (got {temperature})")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k: must be >= 1 (got {top_k})")


def sample_next(
    logp: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator
) -> int:
    """One token from one row of log-probabilities; temperature 0 is greedy (argmax)."""
    check_sampling(temperature, top_k)
    best = float(np.max(logp))
    if not best > -math.inf:
        raise DataError(
            "the model gives every next token probability 0 after this context "
            "(an unsmoothed model on an unseen context); use a smoothed model"
        )
    if temperature == 0:
        return int(np.argmax(logp))
    with np.errstate(over="ignore"):  # shifted first, so overflow only reaches -inf
        scaled = (logp - best) / temperature
    if top_k is not None:
        cutoff = np.partition(scaled, -top_k)[-top_k] if top_k < len(scaled) else -np.inf
        scaled = np.where(scaled >= cutoff, scaled, -np.inf)
    scaled = scaled - scaled.max()
    probs = np.exp(scaled)
    probs /= probs.sum()
    return int(rng.choice(len(probs), p=probs))


def generate(
    model: SequenceModel,
    prompt: np.ndarray,
    n_tokens: int,
    context_len: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Extend ``prompt`` (1-D ids, at least one) by ``n_tokens``, sliding a window of
    ``context_len`` as the tutorial does (``test_chars = test_chars[1:] + ypred``)."""
    if n_tokens < 0:
        raise ConfigError(f"n_tokens: must be >= 0 (got {n_tokens})")
    check_context_len(context_len)
    check_sampling(temperature, top_k)  # before any work, even for n_tokens=0
    ids = [int(i) for i in np.asarray(prompt).ravel()]
    if not ids:
        raise DataError("generation needs a prompt of at least one token")
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for _ in range(n_tokens):
        context = np.asarray([ids[-context_len:]], dtype=np.int64)
        nxt = sample_next(model.log_proba(context)[0], temperature, top_k, rng)
        ids.append(nxt)
        out.append(nxt)
    return np.asarray(out, dtype=np.int64)


def sequence_log_prob(model: SequenceModel, ids: np.ndarray, context_len: int) -> float:
    """Total natural-log probability of ``ids[1:]`` given what precedes each token."""
    check_context_len(context_len)
    seq = np.asarray(ids, dtype=np.int64).ravel()
    total = 0.0
    for t in range(1, min(context_len, len(seq))):  # short contexts at the start, one by one
        total += float(model.log_proba(seq[None, :t])[0, seq[t]])
    if len(seq) > context_len:  # the rest share one length: one batch
        windows = np.lib.stride_tricks.sliding_window_view(seq, context_len + 1)
        logp = model.log_proba(windows[:, :-1].copy())  # a copy: the view is read-only
        total += float(logp[np.arange(len(windows)), windows[:, -1]].sum())
    return total
