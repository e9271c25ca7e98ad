"""Generation from a seed text: greedy, temperature and top-k sampling, and scoring a
sequence, through ``log_proba`` only, so every plugin generates the same way.

A stateful plugin (``SequenceModel.can_stream``: a stateful net, or a mixture holding
one trained statefully) carries its state instead: the prompt is read once and each
new token costs one step, O(n) for n tokens, where the window path re-reads
``context_len`` tokens per token. When the window covers the whole
sequence both paths compute the same distributions, so they give the same tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline_core.config import Level
from pipeline_core.contract import SequenceModel, State
from pipeline_core.errors import ConfigError, DataError, PluginError
from pipeline_core.vectorize import Vocabulary, detokenize, tokenize

CARRIED = "carried state"
WINDOWS = "windows"
#: windows (or carried-state steps) per call to the model when scoring a long sequence
SCORE_BATCH = 1024


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


def unknown_tokens(text: str, vocab: Vocabulary, level: Level) -> list[str]:
    """The distinct tokens of ``text`` that ``vocab`` lacks, in order of first appearance."""
    tokens, _ = tokenize(text, level)
    seen: dict[str, None] = {}
    for token in tokens:
        if token not in seen and vocab.id_of(token) == vocab.unk_id:
            seen[token] = None
    return list(seen)


def is_stateful(model: SequenceModel) -> bool:
    """True when ``model`` can carry its state from one token to the next."""
    return model.can_stream


def _carry(model: SequenceModel, carry_state: bool | None) -> bool:
    """``None`` (auto): carry the state whenever the plugin can; True on a model that
    cannot is a PluginError."""
    if carry_state is None:
        return is_stateful(model)
    if carry_state and not is_stateful(model):
        raise PluginError(f"{type(model).__name__} carries no state")
    return carry_state


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
    carry_state: bool | None = None,
) -> np.ndarray:
    """Extend ``prompt`` (1-D ids, at least one) by ``n_tokens``.

    The window path slides a window of ``context_len`` as the tutorial does
    (``test_chars = test_chars[1:] + ypred``). With ``carry_state`` (the default for a
    stateful plugin) the whole prompt is read once and every new token is one step
    from the carried state. The same ``seed`` gives the same tokens."""
    if n_tokens < 0:
        raise ConfigError(f"n_tokens: must be >= 0 (got {n_tokens})")
    check_context_len(context_len)
    check_sampling(temperature, top_k)  # before any work, even for n_tokens=0
    ids = [int(i) for i in np.asarray(prompt).ravel()]
    if not ids:
        raise DataError("generation needs a prompt of at least one token")
    rng = np.random.default_rng(seed)
    out: list[int] = []
    if _carry(model, carry_state):
        rows, state = model.stream_log_proba(np.asarray(ids, dtype=np.int64))
        for i in range(n_tokens):
            nxt = sample_next(rows[-1], temperature, top_k, rng)
            out.append(nxt)
            if i + 1 < n_tokens:  # the last token needs no step of its own
                rows, state = model.stream_log_proba(np.asarray([nxt], dtype=np.int64), state)
        return np.asarray(out, dtype=np.int64)
    for _ in range(n_tokens):
        context = np.asarray([ids[-context_len:]], dtype=np.int64)
        nxt = sample_next(model.log_proba(context)[0], temperature, top_k, rng)
        ids.append(nxt)
        out.append(nxt)
    return np.asarray(out, dtype=np.int64)


def token_log_probs(
    model: SequenceModel, ids: np.ndarray, context_len: int, carry_state: bool | None = None
) -> np.ndarray:
    """log p(ids[t] | what precedes it) for t = 1 .. len(ids) - 1, natural log.

    Windows: each token after at most ``context_len`` predecessors (fewer at the start),
    in batches. Carried state (the default for a stateful plugin): one O(N) pass."""
    check_context_len(context_len)
    seq = np.asarray(ids, dtype=np.int64).ravel()
    if len(seq) < 2:
        return np.zeros(0)
    if _carry(model, carry_state):
        parts = []
        state: State = None
        for start in range(0, len(seq) - 1, SCORE_BATCH):
            chunk = seq[start : start + SCORE_BATCH + 1]  # inputs and their next tokens
            rows, state = model.stream_log_proba(chunk[:-1], state)
            parts.append(rows[np.arange(len(chunk) - 1), chunk[1:]])
        return np.concatenate(parts)
    parts = []
    for t in range(1, min(context_len, len(seq))):  # short contexts at the start, one by one
        parts.append(model.log_proba(seq[None, :t])[0, seq[t]].reshape(1))
    if len(seq) > context_len:  # the rest share one length: batches of windows
        windows = np.lib.stride_tricks.sliding_window_view(seq, context_len + 1)
        for start in range(0, len(windows), SCORE_BATCH):
            batch = windows[start : start + SCORE_BATCH]
            logp = model.log_proba(batch[:, :-1].copy())  # a copy: the view is read-only
            parts.append(logp[np.arange(len(batch)), batch[:, -1]])
    return np.concatenate(parts).astype(np.float64)


def sequence_log_prob(
    model: SequenceModel, ids: np.ndarray, context_len: int, carry_state: bool | None = False
) -> float:
    """Total natural-log probability of ``ids[1:]``, each token given at most the
    ``context_len`` before it (windows, the default), or everything before it with the
    state carried (``carry_state``; None: whenever the plugin can); see
    :func:`token_log_probs`."""
    return float(token_log_probs(model, ids, context_len, carry_state).sum())


@dataclass(frozen=True)
class TextScore:
    """How probable a text is under a model: its tokens after the first, which is
    their context."""

    log_prob: float
    tokens: int
    characters: int
    unknown: int
    scoring: str

    @property
    def bits(self) -> float:
        return -self.log_prob / math.log(2)

    @property
    def nll(self) -> float:
        return -self.log_prob / self.tokens

    @property
    def bpc(self) -> float:
        return self.bits / max(self.characters, 1)

    @property
    def ppl(self) -> float:
        return math.exp(self.nll) if self.nll < 700 else math.inf

    def as_dict(self) -> dict[str, Any]:
        return {
            "log_prob_nats": self.log_prob,
            "log_prob_bits": -self.bits,
            "nll": self.nll,
            "bpc": self.bpc,
            "ppl": self.ppl,
            "tokens_scored": self.tokens,
            "characters_scored": self.characters,
            "unknown": self.unknown,
            "scoring": self.scoring,
        }


def score_text(
    model: SequenceModel,
    text: str,
    vocab: Vocabulary,
    level: Level,
    context_len: int,
    carry_state: bool | None = None,
) -> TextScore:
    """Total log-probability of ``text`` (every token after the first), its bits per
    character over the characters those tokens cover, and how many tokens were
    ``<unk>`` (unknown tokens are scored as ``<unk>``)."""
    ids, unknown = encode_prompt(text, vocab, level)
    if len(ids) < 2:
        unit = "characters" if level == "char" else "tokens (words or punctuation)"
        raise DataError(
            f"the text has {len(ids)} token(s): scoring needs at least two {unit}, "
            "the first being the context of the rest"
        )
    carry = _carry(model, carry_state)
    logp = token_log_probs(model, ids, context_len, carry)
    _, starts = tokenize(text, level)
    return TextScore(
        log_prob=float(logp.sum()),
        tokens=len(logp),
        characters=len(text) - int(starts[1]),
        unknown=unknown,
        scoring=CARRIED if carry else WINDOWS,
    )


@dataclass(frozen=True)
class GeneratedText:
    """A prompt's continuation: the new text, and the prompt with it."""

    prompt: str
    continuation: str
    tokens: int
    unknown: int
    generation: str

    @property
    def text(self) -> str:
        return self.prompt + self.continuation


def generate_text(
    model: SequenceModel,
    prompt: str,
    vocab: Vocabulary,
    level: Level,
    context_len: int,
    n_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    carry_state: bool | None = None,
) -> GeneratedText:
    """Continue ``prompt`` by ``n_tokens`` tokens (words are joined by one space)."""
    ids, unknown = encode_prompt(prompt, vocab, level)
    if len(ids) == 0:
        raise DataError(
            "the prompt has no tokens: give at least one "
            + ("character" if level == "char" else "word or punctuation mark")
        )
    carry = _carry(model, carry_state)
    out = generate(model, ids, n_tokens, context_len, temperature, top_k, seed, carry)
    text = detokenize(vocab.decode(out), level)
    if level == "word" and text:
        text = " " + text
    return GeneratedText(prompt, text, len(out), unknown, CARRIED if carry else WINDOWS)
