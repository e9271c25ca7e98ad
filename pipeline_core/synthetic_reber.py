"""``synthetic:reber``: the embedded Reber grammar, a long-range source of exact entropy.

Each string is ``B``, then ``T`` or ``P``, then a Reber string (``B`` ... ``E``), then
the same ``T`` or ``P`` again, then ``E``; the strings follow one another directly, so
the stream is one walk of a deterministic automaton whose branches each have probability
1/2. A model must remember the second symbol across the whole inner string to predict
the one before the last ``E``: the classic test of LSTM memory (Hochreiter &
Schmidhuber, 1997).

The symbol emitted at each step fixes the next automaton state, so the state is a
function of the history read from the start of the stream, and the stream is a Markov
chain over states. Its entropy rate is ``Σ_s π(s) H(s)``: 1 bit at each two-way branch,
0 at a forced step. By the renewal argument, each embedded string carries ``1 + K`` bits
in ``6 + K`` symbols, ``K`` the branch steps inside its Reber string (mean 6), so the rate
is 7/12 bits/symbol (``tests/test_known_optimum.py`` checks both computations agree).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline_core.errors import ConfigError

ALPHABET = "BEPSTVX"
MAX_LENGTH = 10_000_000

#: The inner Reber grammar: state -> [(symbol, next state)], each branch with equal
#: probability; state 0 emits the opening ``B``, state 6 the closing ``E`` (-> None).
INNER: dict[int, list[tuple[str, int | None]]] = {
    0: [("B", 1)],
    1: [("T", 2), ("P", 3)],
    2: [("S", 2), ("X", 4)],
    3: [("T", 3), ("V", 5)],
    4: [("X", 3), ("S", 6)],
    5: [("P", 4), ("V", 6)],
    6: [("E", None)],
}


def _embedded_automaton() -> tuple[list[str], dict[str, list[tuple[str, str]]]]:
    """States (named) and their branches ``(symbol, next state)`` of the embedded
    grammar: ``start`` -B-> ``open`` -T/P-> inner walk remembering the branch ->
    ``close:T/P`` emits it again -> ``end`` -E-> ``start``."""
    edges: dict[str, list[tuple[str, str]]] = {
        "start": [("B", "open")],
        "open": [("T", "T:0"), ("P", "P:0")],
        "end": [("E", "start")],
    }
    for branch in "TP":
        for q, out in INNER.items():
            edges[f"{branch}:{q}"] = [
                (sym, f"close:{branch}" if nxt is None else f"{branch}:{nxt}") for sym, nxt in out
            ]
        edges[f"close:{branch}"] = [(branch, "end")]
    return list(edges), edges


STATES, EDGES = _embedded_automaton()
STATE_INDEX = {name: i for i, name in enumerate(STATES)}
START = STATE_INDEX["start"]


def transition_tables() -> tuple[np.ndarray, np.ndarray]:
    """``probs[s, a]`` = P(symbol a | state s) over :data:`ALPHABET`, and ``nxt[s, a]`` =
    the state reached (-1 where the symbol cannot follow)."""
    n, a = len(STATES), len(ALPHABET)
    probs = np.zeros((n, a))
    nxt = np.full((n, a), -1, dtype=np.int64)
    for name, out in EDGES.items():
        s = STATE_INDEX[name]
        for sym, to in out:
            probs[s, ALPHABET.index(sym)] = 1.0 / len(out)
            nxt[s, ALPHABET.index(sym)] = STATE_INDEX[to]
    return probs, nxt


def stationary() -> np.ndarray:
    """π of the state chain (irreducible, so π Q = π, Σπ = 1 has one solution)."""
    probs, nxt = transition_tables()
    n = len(STATES)
    q = np.zeros((n, n))
    for s in range(n):
        for a in np.flatnonzero(probs[s] > 0):
            q[s, nxt[s, a]] += probs[s, a]
    lhs = np.vstack([q.T - np.eye(n), np.ones((1, n))])
    rhs = np.zeros(n + 1)
    rhs[-1] = 1.0
    pi = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    return np.asarray(pi / pi.sum())


def entropy_rate_bits() -> float:
    """Σ_s π(s) H(s): bits per symbol of the stream (7/12)."""
    probs, _ = transition_tables()
    branching = np.array([math.log2(int((row > 0).sum())) for row in probs])
    return float(stationary() @ branching)


class ReberParams(BaseModel):
    """Parameters of ``synthetic:reber`` (all optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    length: int = Field(default=60_000, ge=1, le=MAX_LENGTH)
    seed: int = Field(default=0, ge=0)


def generate(length: int, seed: int) -> str:
    """The first ``length`` symbols of the stream from the start state (same seed,
    same text); the last string may be cut short."""
    probs, nxt = transition_tables()
    rows = [list(np.flatnonzero(row > 0)) for row in probs]
    rng = np.random.default_rng([seed, 2])
    coins = rng.integers(0, 2, size=length).tolist()
    out: list[str] = []
    state = START
    for coin in coins:
        choices = rows[state]
        a = int(choices[coin if len(choices) == 2 else 0])
        out.append(ALPHABET[a])
        state = int(nxt[state, a])
    return "".join(out)


def states_of(text: str) -> np.ndarray:
    """The automaton state before each symbol of ``text``, tracked from the start (a
    ConfigError naming the position if the text leaves the grammar)."""
    _, nxt = transition_tables()
    table = nxt.tolist()
    index = {c: i for i, c in enumerate(ALPHABET)}
    states = np.empty(len(text), dtype=np.int64)
    state = START
    for t, ch in enumerate(text):
        states[t] = state
        a = index.get(ch)
        state = -1 if a is None else table[state][a]
        if state < 0:
            raise ConfigError(f"reber: symbol {ch!r} at position {t} is not in the grammar")
    return states


def conditional(params: ReberParams, text: str, positions: np.ndarray) -> np.ndarray:
    """P(x_t = each symbol of :data:`ALPHABET` | x_<t) at ``positions`` of ``text``."""
    del params
    probs, _ = transition_tables()
    return np.asarray(probs[states_of(text)[positions]])


def build(params: ReberParams) -> tuple[str, dict[str, float]]:
    return generate(params.length, params.seed), {"entropy_rate_bits": entropy_rate_bits()}
