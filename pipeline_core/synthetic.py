"""Sources of known entropy: the yardstick that tells a model's bpc from the best possible.

On real text nobody knows the entropy rate, so "2.0 bpc" cannot say how far a model is
from optimal. An order-k Markov source has an entropy rate we can compute exactly, so
there a model's test bpc minus the rate is its excess loss. ``synthetic:<name>?k=v``
sources (see :mod:`pipeline_core.sources`) are built by :func:`make_synthetic`; besides
``markov``, ``reber`` (:mod:`pipeline_core.synthetic_reber`) and ``copy``
(:mod:`pipeline_core.synthetic_copy`) test long-range memory. Every source with a known
conditional law also has an oracle (:mod:`pipeline_core.oracle`).

The default ``synthetic:markov`` is a demo that runs in seconds: 6 symbols, order 2
(36 contexts, so a 3-gram model can learn it exactly and an LSTM can too), 60,000
symbols, Dirichlet(0.5) transition rows (entropy rate 1.81 bits/symbol, clearly
below the 2.56 bits a unigram model gets).
"""

from __future__ import annotations

import bisect
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline_core import synthetic_adding, synthetic_copy, synthetic_parity, synthetic_reber
from pipeline_core.errors import ConfigError

SYMBOLS = string.ascii_lowercase
MAX_STATES = 1_000_000  # alphabet ** order: the transition table must fit in memory
MAX_LENGTH = 10_000_000
#: memory a Markov source may need (its table, sampling and exact entropy rate); a
#: bigger one is refused up front with the numbers instead of exhausting the machine
MAX_MEMORY_MB = 512
#: up to this many states the stationary distribution is solved densely (exact, O(n^2)
#: memory); above it, iterated on the table itself (O(n * alphabet) memory)
DENSE_MAX_STATES = 2048
_BYTES_PER_ENTRY = 64  # per (state, symbol): rows drawn, normalised, cumulated, as lists
_SPARSE_WORK = 2_000_000_000  # (state, symbol) updates the iteration may spend
_SPARSE_TOL = 1e-13


def _row_entropy_bits(rows: np.ndarray) -> np.ndarray:
    """Entropy in bits of each probability row (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(rows > 0, rows * np.log2(rows), 0.0)
    return np.asarray(-terms.sum(axis=1))


@dataclass(frozen=True)
class MarkovSource:
    """An order-k Markov chain over ``alphabet``; ``transition[s, x] = P(x | state s)``.

    State ``s`` encodes the previous ``order`` symbols in base ``len(alphabet)``, the most
    recent symbol as the last digit, so the next state is ``(s * A + x) % A**order``.
    """

    order: int
    transition: np.ndarray
    alphabet: str = field(default="")

    def __post_init__(self) -> None:
        p = np.asarray(self.transition, dtype=np.float64)
        a = p.shape[1] if p.ndim == 2 else 0
        alphabet = self.alphabet or SYMBOLS[:a]
        object.__setattr__(self, "transition", p)
        object.__setattr__(self, "alphabet", alphabet)
        if self.order < 0:
            raise ConfigError(f"markov: order must be >= 0 (got {self.order})")
        if p.ndim != 2 or a < 1 or p.shape[0] != a**self.order:
            raise ConfigError(
                f"markov: transition must have shape (A**order, A) = ({a}**{self.order}, {a}),"
                f" got {p.shape}"
            )
        if len(alphabet) != a or len(set(alphabet)) != a:
            raise ConfigError(f"markov: alphabet must be {a} distinct symbols (got {alphabet!r})")
        if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-9):
            raise ConfigError("markov: every transition row must be probabilities summing to 1")

    @classmethod
    def random(
        cls, order: int, alphabet_size: int, concentration: float, seed: int
    ) -> MarkovSource:
        """Rows drawn from a symmetric Dirichlet: small concentration = peaked, low entropy."""
        rng = np.random.default_rng([seed, 0])
        rows = rng.dirichlet(np.full(alphabet_size, concentration), size=alphabet_size**order)
        rows = np.maximum(rows, 0.0)
        return cls(order=order, transition=rows / rows.sum(axis=1, keepdims=True))

    @property
    def n_symbols(self) -> int:
        return int(self.transition.shape[1])

    @property
    def n_states(self) -> int:
        return int(self.transition.shape[0])

    def state_matrix(self) -> np.ndarray:
        """The chain over states: ``Q[s, s'] = P(s' | s)`` (A**order x A**order)."""
        a, n = self.n_symbols, self.n_states
        q = np.zeros((n, n))
        nxt = (np.arange(n)[:, None] * a + np.arange(a)[None, :]) % n
        np.add.at(q, (np.repeat(np.arange(n), a), nxt.ravel()), self.transition.ravel())
        return q

    def step_distribution(self, pi: np.ndarray) -> np.ndarray:
        """``π Q`` without building Q: state ``s = q * A**(order-1) + r`` moves to
        ``r * A + x`` with probability ``P(x | s)``, so the sum runs over ``q``."""
        a, n = self.n_symbols, self.n_states
        if self.order == 0:
            return np.asarray(pi, dtype=np.float64).copy()
        flow = (np.asarray(pi)[:, None] * self.transition).reshape(a, n // a, a)
        return np.asarray(flow.sum(axis=0).ravel())

    def stationary(self) -> np.ndarray:
        """π with π Q = π and Σπ = 1: by least squares up to DENSE_MAX_STATES states
        (exact for irreducible chains), else by iterating :meth:`step_distribution`
        until it settles (a ConfigError with the numbers if it does not)."""
        if self.n_states > DENSE_MAX_STATES:
            return self._stationary_iterated()
        q = self.state_matrix()
        n = q.shape[0]
        lhs = np.vstack([q.T - np.eye(n), np.ones((1, n))])
        rhs = np.zeros(n + 1)
        rhs[-1] = 1.0
        pi = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
        pi = np.clip(pi, 0.0, None)
        return np.asarray(pi / pi.sum())

    def _stationary_iterated(self) -> np.ndarray:
        n, a = self.n_states, self.n_symbols
        pi = np.full(n, 1.0 / n)
        max_steps = max(200, _SPARSE_WORK // (n * a))
        for _ in range(max_steps):
            nxt = self.step_distribution(pi)
            nxt /= nxt.sum()
            change = float(np.abs(nxt - pi).sum())
            pi = nxt
            if change < _SPARSE_TOL:
                return pi
        raise ConfigError(
            f"markov: the stationary distribution of this chain ({n:,} states) did not "
            f"settle within {max_steps:,} steps, so its exact entropy rate is unknown; "
            "raise concentration or lower order"
        )

    def entropy_rate_bits(self) -> float:
        """H = -Σ_s π(s) Σ_x P(x|s) log2 P(x|s), bits per symbol."""
        return float(self.stationary() @ _row_entropy_bits(self.transition))

    def _initial_context(self, rng: np.random.Generator) -> list[int]:
        """The first ``order`` symbols: a state drawn from π, spelled out oldest first."""
        state = int(rng.choice(self.n_states, p=self.stationary()))
        a = self.n_symbols
        return [(state // a**i) % a for i in reversed(range(self.order))]

    def generate(self, length: int, seed: int) -> str:
        """A stationary sample of ``length`` symbols (same seed, same text)."""
        if length < 0:
            raise ConfigError(f"markov: length must be >= 0 (got {length})")
        rng = np.random.default_rng([seed, 1])
        symbols = self._initial_context(rng)[:length]
        a, n = self.n_symbols, self.n_states
        state = 0
        for x in symbols:
            state = (state * a + x) % n
        cum = np.cumsum(self.transition, axis=1)
        cum[:, -1] = 1.0  # rounding must not let a uniform draw fall past the last symbol
        rows: list[list[float]] = cum.tolist()
        # Plain-Python bisect on small lists beats a numpy call per step by ~10x.
        for u in rng.random(length - len(symbols)).tolist():
            x = bisect.bisect_right(rows[state], u)
            symbols.append(x)
            state = (state * a + x) % n
        return "".join(self.alphabet[x] for x in symbols)


def conditional_entropy_bits(text: str, order: int) -> float:
    """Plug-in estimate of H(X_t | previous ``order`` symbols) from one sequence, in bits."""
    if len(text) <= order:
        raise ConfigError(f"need more than {order} symbols to estimate entropy")
    counts: dict[str, dict[str, int]] = {}
    for t in range(order, len(text)):
        row = counts.setdefault(text[t - order : t], {})
        row[text[t]] = row.get(text[t], 0) + 1
    total = len(text) - order
    h = 0.0
    for row in counts.values():
        c = np.array(list(row.values()), dtype=np.float64)
        h -= float((c * np.log2(c / c.sum())).sum())
    return h / total


class MarkovParams(BaseModel):
    """Parameters of ``synthetic:markov`` (all optional; the defaults are the demo)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order: int = Field(default=2, ge=0)
    alphabet: int = Field(default=6, ge=1, le=len(SYMBOLS))
    length: int = Field(default=60_000, ge=1, le=MAX_LENGTH)
    seed: int = Field(default=0, ge=0)
    concentration: float = Field(default=0.5, gt=0, allow_inf_nan=False)


def markov_memory_bytes(order: int, alphabet: int) -> int:
    """About how much memory an order-``order`` source over ``alphabet`` symbols needs:
    its table and sampling, and the dense solve of its stationary distribution when
    it has at most DENSE_MAX_STATES states."""
    n = alphabet**order
    dense = 3 * 8 * n * n if n <= DENSE_MAX_STATES else 0
    return n * alphabet * _BYTES_PER_ENTRY + dense


def check_markov(params: MarkovParams) -> None:
    """Refuse, before anything is allocated, a chain too large to build (with numbers)."""
    a, k = params.alphabet, params.order
    if a**k > MAX_STATES:
        raise ConfigError(
            f"synthetic:markov: alphabet**order = {a}**{k} = {a**k:,} states exceeds"
            f" {MAX_STATES:,} states; lower order or alphabet"
        )
    need_mb = markov_memory_bytes(k, a) / 2**20
    if need_mb > MAX_MEMORY_MB:
        raise ConfigError(
            f"synthetic:markov: alphabet={a}, order={k} gives {a**k:,} states x {a} symbols;"
            f" sampling it and computing its exact entropy rate needs about {need_mb:,.0f} MB,"
            f" over the {MAX_MEMORY_MB} MB limit; lower order or alphabet"
        )


def _build_markov(params: MarkovParams) -> tuple[str, dict[str, Any]]:
    check_markov(params)
    source = MarkovSource.random(params.order, params.alphabet, params.concentration, params.seed)
    text = source.generate(params.length, params.seed)
    return text, {"entropy_rate_bits": source.entropy_rate_bits()}


@dataclass(frozen=True)
class SyntheticGenerator:
    """A named generator: its typed parameters and the function that builds the text."""

    description: str
    params_model: type[BaseModel]
    build: Callable[[Any], tuple[str, dict[str, Any]]]
    #: cheap checks of parsed parameters (resource limits) run before anything is built
    check: Callable[[Any], None] | None = None


SYNTHETIC: dict[str, SyntheticGenerator] = {
    "markov": SyntheticGenerator(
        description="order-k Markov chain over a small alphabet, exact entropy rate",
        params_model=MarkovParams,
        build=_build_markov,
        check=check_markov,
    ),
    "reber": SyntheticGenerator(
        description="embedded Reber grammar strings, one stream, exact entropy rate",
        params_model=synthetic_reber.ReberParams,
        build=synthetic_reber.build,
    ),
    "copy": SyntheticGenerator(
        description="copy-memory episodes recalled after lag T, exact optimum",
        params_model=synthetic_copy.CopyParams,
        build=synthetic_copy.build,
        check=synthetic_copy.check,
    ),
}

# the classify task's labelled example (its own module): bits<TAB>parity lines
SYNTHETIC["parity"] = SyntheticGenerator(
    description="random bit strings labelled with their parity, exact optimum",
    params_model=synthetic_parity.ParityParams,
    build=synthetic_parity.build_parity,
    check=synthetic_parity.check_parity,
)
# the regress task's example (its own module): v,m;v,m;...<TAB>sum lines
SYNTHETIC["adding"] = SyntheticGenerator(
    description="the adding problem: sum the two marked values, constant-1 MSE 1/6",
    params_model=synthetic_adding.AddingParams,
    build=synthetic_adding.build_adding,
    check=synthetic_adding.check_adding,
)


def canonical_source(name: str, params: BaseModel) -> str:
    """``synthetic:<name>?k=v&...`` with every parameter, sorted: equal data, equal string."""
    query = "&".join(f"{k}={v}" for k, v in sorted(params.model_dump().items()))
    return f"synthetic:{name}?{query}"


def _parse_params(name: str, model: type[BaseModel], raw: Mapping[str, str]) -> BaseModel:
    """Validate query-string values, naming the parameter at fault in one line."""
    known = ", ".join(sorted(model.model_fields))
    try:
        return model.model_validate(dict(raw))
    except ValidationError as err:
        item = err.errors()[0]
        param = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            raise ConfigError(
                f"synthetic:{name}: unknown parameter {param!r}; known: {known}"
            ) from None
        raise ConfigError(
            f"synthetic:{name}: invalid parameter {param}={item.get('input')!r}: {item['msg']}"
        ) from None


def _generator(name: str) -> SyntheticGenerator:
    generator = SYNTHETIC.get(name)
    if generator is None:
        known = ", ".join(sorted(SYNTHETIC))
        raise ConfigError(f"unknown synthetic source {name!r}; known: {known}")
    return generator


def check_synthetic(name: str, params: Mapping[str, str]) -> None:
    """Everything :func:`make_synthetic` would refuse about ``name`` and ``params``
    (unknown names and parameters, bad values, resource limits), without building."""
    generator = _generator(name)
    parsed = _parse_params(name, generator.params_model, params)
    if generator.check is not None:
        generator.check(parsed)


def make_synthetic(name: str, params: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """Text and metadata (canonical ``source``, resolved ``params``, e.g. entropy rate)."""
    generator = _generator(name)
    parsed = _parse_params(name, generator.params_model, params)
    text, extra = generator.build(parsed)
    metadata = {
        "name": name,
        "params": parsed.model_dump(),
        "source": canonical_source(name, parsed),
        **extra,
    }
    return text, metadata
