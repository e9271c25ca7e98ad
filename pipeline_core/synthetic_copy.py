"""``synthetic:copy?lag=T``: the copy-memory task as one character stream.

Each episode is 10 symbols drawn uniformly from ``abcdefgh``, then ``T - 1`` blanks
(``.``), a delimiter (``:``), then the same 10 symbols again, so the model must recall
each symbol ``T + 10`` characters after it saw it; episodes follow one another directly
(``T + 20`` characters each). Only the 10 fresh symbols are random: the blanks and the
delimiter are fixed by the position in the episode, the recalled symbols by the past.

- The optimum (the oracle, ``entropy_rate_bits``): 10 x log2(8) = 30 bits per episode,
  i.e. ``30 / (T + 20)`` bits per character.
- The memoryless figure (``memoryless_bits``): a model that knows the episode's layout
  but cannot remember pays log2(8) = 3 bits for each recalled symbol as well, i.e.
  ``60 / (T + 20)`` bits per character.

In the classic output-only formulation (Hochreiter & Schmidhuber 1997; Arjovsky et al.
2016) the fresh symbols are inputs, not predictions, and the memoryless baseline is
``10 ln 8 / (T + 20)`` nats per step: numerically the same 30 bits per episode that the
oracle pays here, since here the fresh symbols are predicted too.

``symbols=K`` (default 10) memorises K symbols instead: episodes of ``T + 2K``
characters, recall ``T + K`` characters back, optimum ``3K / (T + 2K)`` and memoryless
``6K / (T + 2K)`` bits per character. ``make demo`` uses K = 1, which a small LSTM or
GRU learns in about a thousand batches on a CPU; K = 10 needs far longer.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline_core.errors import ConfigError

LETTERS = "abcdefgh"
BLANK = "."
DELIMITER = ":"
ALPHABET = LETTERS + BLANK + DELIMITER
N_SYMBOLS = 10
MAX_SYMBOLS = 1_000
MAX_LAG = 10_000
MAX_LENGTH = 10_000_000
#: episodes the stream must hold at least (so that every split sees whole ones)
MIN_EPISODES = 10
BITS_PER_SYMBOL = float(np.log2(len(LETTERS)))


class CopyParams(BaseModel):
    """Parameters of ``synthetic:copy`` (all optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lag: int = Field(default=10, ge=1, le=MAX_LAG)
    #: symbols memorised per episode (10 in the classic task; fewer make a quicker demo)
    symbols: int = Field(default=N_SYMBOLS, ge=1, le=MAX_SYMBOLS)
    length: int = Field(default=60_000, ge=1, le=MAX_LENGTH)
    seed: int = Field(default=0, ge=0)


def episode_length(lag: int, symbols: int = N_SYMBOLS) -> int:
    return lag + 2 * symbols


def optimum_bits(lag: int, symbols: int = N_SYMBOLS) -> float:
    """Bits per character of the oracle: the fresh symbols only."""
    return symbols * BITS_PER_SYMBOL / episode_length(lag, symbols)


def memoryless_bits(lag: int, symbols: int = N_SYMBOLS) -> float:
    """Bits per character of a model that cannot remember: fresh and recalled symbols."""
    return 2 * symbols * BITS_PER_SYMBOL / episode_length(lag, symbols)


def recall_distance(params: CopyParams) -> int:
    """Characters between a fresh symbol and its recall: ``lag + symbols``."""
    return params.lag + params.symbols


def check(params: CopyParams) -> None:
    """Refuse a lag whose episodes the stream cannot hold :data:`MIN_EPISODES` of."""
    n = episode_length(params.lag, params.symbols)
    if params.length < MIN_EPISODES * n:
        raise ConfigError(
            f"synthetic:copy: lag={params.lag} makes episodes of {n} characters; "
            f"length={params.length} holds fewer than {MIN_EPISODES} of them; lower lag "
            f"or raise length to at least {MIN_EPISODES * n}"
        )


def generate(params: CopyParams) -> str:
    """The first ``length`` characters of the episodes (same seed, same text)."""
    check(params)
    n = episode_length(params.lag, params.symbols)
    episodes = -(-params.length // n)
    rng = np.random.default_rng([params.seed, 3])
    draws = rng.integers(0, len(LETTERS), size=(episodes, params.symbols))
    gap = BLANK * (params.lag - 1) + DELIMITER
    parts = []
    for row in draws.tolist():
        fresh = "".join(LETTERS[i] for i in row)
        parts.append(fresh + gap + fresh)
    return "".join(parts)[: params.length]


def conditional(params: CopyParams, text: str, positions: np.ndarray) -> np.ndarray:
    """P(x_t = each symbol of :data:`ALPHABET` | x_<t) at ``positions`` of ``text``:
    uniform over the letters at fresh positions, else all mass on the one symbol the
    layout or the past determines."""
    n, k = episode_length(params.lag, params.symbols), params.symbols
    pos = np.asarray(positions, dtype=np.int64)
    offset = pos % n
    probs = np.zeros((len(pos), len(ALPHABET)))
    fresh = offset < k
    probs[np.ix_(fresh, np.arange(len(LETTERS)))] = 1.0 / len(LETTERS)
    index = {c: i for i, c in enumerate(ALPHABET)}
    recall = offset >= k + params.lag
    determined = np.where(offset < k + params.lag - 1, index[BLANK], index[DELIMITER]).astype(
        np.int64
    )
    recalled = [index[text[t]] for t in (pos[recall] - recall_distance(params)).tolist()]
    determined[recall] = np.asarray(recalled, dtype=np.int64)
    rows = np.flatnonzero(~fresh)
    probs[rows, determined[rows]] = 1.0
    return probs


def build(params: CopyParams) -> tuple[str, dict[str, float]]:
    return generate(params), {
        "entropy_rate_bits": optimum_bits(params.lag, params.symbols),
        "memoryless_bits": memoryless_bits(params.lag, params.symbols),
    }
