"""Generation from a seed text: greedy, temperature and top-k sampling, through
``log_proba`` only, so every plugin generates the same way."""

from __future__ import annotations

import numpy as np

from pipeline_core.contract import SequenceModel
from pipeline_core.errors import ConfigError, DataError


def sample_next(
    logp: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator
) -> int:
    """One token from one row of log-probabilities; temperature 0 is greedy (argmax)."""
    if temperature < 0:
        raise ConfigError(f"temperature: must be >= 0 (got {temperature})")
    if temperature == 0:
        return int(np.argmax(logp))
    scaled = logp / temperature
    if top_k is not None:
        if top_k < 1:
            raise ConfigError(f"top_k: must be >= 1 (got {top_k})")
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
    seq = np.asarray(ids, dtype=np.int64).ravel()
    total = 0.0
    for t in range(1, min(context_len, len(seq))):  # short contexts at the start, one by one
        total += float(model.log_proba(seq[None, :t])[0, seq[t]])
    if len(seq) > context_len:  # the rest share one length: one batch
        windows = np.lib.stride_tricks.sliding_window_view(seq, context_len + 1)
        logp = model.log_proba(np.ascontiguousarray(windows[:, :-1]))
        total += float(logp[np.arange(len(windows)), windows[:, -1]].sum())
    return total
