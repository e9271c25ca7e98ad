"""Mixture of registered plugins: p(w | c) = sum_k w_k(c) p_k(w | c), weights fitted on val.

Why: models err in different places (an n-gram is sharp on frequent contexts and blind
beyond its order; a recurrent net generalises but blurs rare exact repeats), so a convex
combination of their predictive distributions is never worse on the data its weights are
fitted on than the best of them, and usually better. Context-mixing compressors (PPM
blending, PAQ's mixers) get most of their edge from exactly this.

**Fitting.** Each component is fitted on ``data.train`` as it would be alone (a
count-based one by its own ``fit``; a neural one by seqlab's Trainer under its own
``train`` settings, seeded ``seed + i`` unless they set one: the mixture is count-based
to seqlab, so a run's ``train`` section never reaches it). Then every token of the val
split is scored by every component exactly as the test will be (below: on windows of
the ``data.context_len`` tokens before it, or with carried state; the train split's
tail is the context of the first val tokens: the splits are contiguous, so these are
exactly the positions and contexts ``seqlab run`` scores val on), and the weights are
fitted to those probabilities by EM. The mixture's log-likelihood is
concave in the weights and EM increases it monotonically; a Dirichlet prior of
``prior`` pseudo-tokens per component (MAP-EM) keeps every weight above 0, so no
component is ever ruled out on a token the val split happened not to need it for. The
test split is never seen.

**Per-context weights** (``weights: per_context``). How much to trust a component
depends on how much evidence it had for this context, the quantity PPM's escape
estimates and PAQ's mixer-weight selection both key on. The context's evidence is
measured as the number of times its last ``context_order`` tokens occur in the train
split, bucketed on a log2 scale (bucket b holds counts in [2^b - 1, 2^(b+1) - 1), the
last bucket everything above). Each bucket has its own weights, fitted by EM on the val
tokens that fall in it, with a Dirichlet prior of ``shrinkage`` pseudo-tokens centred on
the global weights: a bucket with little val data stays near the global weights, one
with much data follows its own. Contexts shorter than ``context_order`` tokens use the
global weights.

**Carried state.** A component that is stateful and trained with its own ``train:
{bptt: stateful}`` is scored alone with its state carried through the split
(``SequenceModel.scores_streaming``), and so it is here. A mixture holding one streams
(:meth:`MixtureModel.stream_log_proba`, ``can_stream``; a run labels it "carried
state"): one O(N) pass in which each such component carries its state exactly as it
would alone (the same pieces, the same warm start ``context_len`` tokens before the
first scored token), while every other component reads its window of the last
``context_len`` tokens, as on windows (the mixture keeps that width from ``fit`` in
its checkpoint). The per-context bucket still comes from the window. A mixture without
such a component is scored on windows, as before.

**No val split** (``data.val`` is None or gives no scored token): the weights are equal
and a warning says so; the mixture then is a plain average, still a valid model.

**Persistence.** The components' states are nested under ``c<i>.`` keys, beside the
weights and the per-context count tables; the components' plugins and params live in the
mixture's config, so ``load`` rebuilds them from the checkpoint's ``init_args``.

**Dynamic evaluation.** :meth:`MixtureModel.adapt` adapts each component that can learn:
count-based ones through their own ``adapt``; neural ones by the SGD step seqlab gives
a neural plugin scored the same way, with the run's ``train.dynamic_*`` settings: on
windows (:class:`~pipeline_core.dynamic.TailLearner`), or, when the mixture streams, the
step on the segment just scored with the state carried, as that plugin alone would
take it (:class:`~pipeline_core.dynamic.StreamLearner`). Each segment is scored before
anything learns from it; the mixture weights stay those fitted on val.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from pipeline_core.config import validate_model
from pipeline_core.dynamic import StreamLearner, TailLearner, active_adapt_context
from pipeline_core.registry import load_plugin
from seqlab.api import (
    AdaptNotSupported,
    ConfigError,
    DataError,
    EpochCallback,
    EpochRecord,
    FitData,
    NotFittedError,
    PluginConfig,
    PluginError,
    SequenceModel,
    State,
    TaskKind,
    TorchSequenceModel,
    TrainConfig,
    as_context_array,
    train,
)

#: EM stops when no weight moves by more than this between two iterations
EM_TOL = 1e-10
#: rows of contexts scored at once (O(batch x V) memory per component); also the
#: pieces a carried-state pass reads, as ``metrics.score_stream`` reads them
BATCH = 2048
#: ids per neural pass inside a carried-state piece (``stream_log_proba``'s default)
CHUNK = 512


class ComponentSpec(PluginConfig):
    """One component: a registered plugin, its config, and (neural only) its training."""

    plugin: str = Field(description="a registered plugin name")
    params: dict[str, Any] = Field(default_factory=dict, description="the plugin's config")
    train: dict[str, Any] = Field(
        default_factory=dict, description="TrainConfig fields for a neural component"
    )

    @model_validator(mode="after")
    def _check(self) -> ComponentSpec:
        try:
            cls = load_plugin(self.plugin)
        except PluginError as err:
            raise ValueError(f"plugin: {err}") from None
        if issubclass(cls, MixtureModel):
            raise ValueError(f"plugin: '{self.plugin}' is a mixture; mixtures do not nest")
        if "next-token" not in cls.task_kinds:
            raise ValueError(f"plugin: '{self.plugin}' does not predict the next token")
        try:
            cls.make_config(self.params)
        except ConfigError as err:
            raise ValueError(f"params: {_bare(err)}") from None
        try:
            self.train_config(0)
        except ConfigError as err:
            raise ValueError(f"train: {_bare(err)}") from None
        return self

    def train_config(self, seed: int) -> TrainConfig:
        """The Trainer's settings: ``train`` over a quiet default seeded with ``seed``."""
        values = {"progress": False, "seed": seed, **self.train}
        return validate_model(TrainConfig, values, where="train")

    def streams(self) -> bool:
        """Scored with its state carried, as it would be alone: a stateful plugin whose
        own ``train`` has ``bptt: stateful``."""
        return load_plugin(self.plugin).scores_streaming(self.params, self.train_config(0))


def _bare(err: ConfigError) -> str:
    return str(err).removeprefix("invalid config: ")


#: the default components (built when a config is, as validating them loads plugins)
DEFAULT_COMPONENTS: tuple[dict[str, Any], ...] = (
    {"plugin": "ngram", "params": {"order": 3, "smoothing": "kneser_ney"}},
    {"plugin": "ngram", "params": {"order": 5, "smoothing": "kneser_ney"}},
    {"plugin": "ngram", "params": {"order": 7, "smoothing": "kneser_ney"}},
)


class MixtureConfig(PluginConfig):
    """Components and how their weights are fitted (see the module docstring)."""

    components: list[ComponentSpec] = Field(
        default_factory=lambda: [ComponentSpec(**c) for c in DEFAULT_COMPONENTS],
        min_length=1,
        max_length=32,
    )
    weights: Literal["global", "per_context"] = Field(
        default="per_context", description="one weight vector, or one per context bucket"
    )
    context_order: int = Field(
        default=4, ge=1, le=32, description="tokens whose train count picks the weight set"
    )
    buckets: int = Field(default=12, ge=1, le=64, description="log2 count buckets at most")
    em_iterations: int = Field(default=200, ge=1, le=100_000, description="EM steps at most")
    prior: float = Field(
        default=0.5, gt=0, le=1e6, description="Dirichlet pseudo-tokens per component"
    )
    shrinkage: float = Field(
        default=50.0, gt=0, le=1e9, description="pseudo-tokens pulling a bucket to global"
    )
    seed: int = Field(default=0, ge=0, description="seeds the neural components' training")


def em_weights(
    logp: np.ndarray, pseudo: np.ndarray, iterations: int, start: np.ndarray | None = None
) -> np.ndarray:
    """MAP-EM for the weights of a finite mixture of fixed distributions.

    ``logp`` (N, K): log p_k(target_t); ``pseudo`` (K,): Dirichlet pseudo-counts added to
    the expected counts (all > 0, so every weight stays > 0). Returns weights (K,)."""
    n, k = logp.shape
    weights = np.full(k, 1.0 / k) if start is None else np.asarray(start, dtype=np.float64)
    if n == 0:
        return (pseudo / pseudo.sum()) if start is None else weights
    p = np.exp(logp - logp.max(axis=1, keepdims=True))  # per-row scale: posteriors unchanged
    for _ in range(iterations):
        mix = p @ weights
        expected = weights * (p / mix[:, None]).sum(axis=0)
        new = (expected + pseudo) / (n + pseudo.sum())
        done = float(np.abs(new - weights).max()) < EM_TOL
        weights = new
        if done:
            break
    return weights


def mixture_log_likelihood(logp: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """log sum_k w_k p_k(target_t) per row; ``weights`` (K,) or one row per token (N, K)."""
    return _logsumexp(logp + np.log(weights), axis=1)


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True)) + top
    return np.squeeze(out, axis=axis)


class ContextCounts:
    """How often each context of ``order`` tokens occurs in a stream, looked up by
    walking a trie of sorted key arrays (``prefix_index * V + token``, never overflowing)."""

    def __init__(self, order: int, vocab_size: int, keys: list[np.ndarray], counts: np.ndarray):
        self.order, self.vocab_size, self.keys, self.counts = order, vocab_size, keys, counts

    @classmethod
    def from_stream(cls, stream: np.ndarray, order: int, vocab_size: int) -> ContextCounts:
        at = stream.astype(np.int64)
        keys: list[np.ndarray] = []
        counts = np.bincount(at, minlength=vocab_size).astype(np.int64)
        for j in range(2, order + 1):
            n = len(stream) - j + 1
            if n <= 0:
                keys.append(np.zeros(0, dtype=np.int64))
                counts = np.zeros(0, dtype=np.int64)
                continue
            key = at[:n] * vocab_size + stream[j - 1 : j - 1 + n].astype(np.int64)
            uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
            keys.append(uniq.astype(np.int64))
            at = inverse.astype(np.int64).ravel()
            counts = counts.astype(np.int64)
        return cls(order, vocab_size, keys, counts)

    def lookup(self, ctx: np.ndarray) -> np.ndarray:
        """Train count of the last ``order`` tokens of each row of ``ctx`` (B, T >= order)."""
        tail = ctx[:, -self.order :]
        index = tail[:, 0].copy()
        found = np.ones(len(ctx), dtype=bool)
        for j, keys in enumerate(self.keys, start=1):
            key = index * self.vocab_size + tail[:, j]
            pos = np.searchsorted(keys, key)
            hit = pos < len(keys)
            hit[hit] = keys[pos[hit]] == key[hit]
            found &= hit
            index = np.where(found, pos, 0)
        if len(self.counts) == 0:
            return np.zeros(len(ctx), dtype=np.int64)
        return np.where(found, self.counts[np.minimum(index, len(self.counts) - 1)], 0)

    def state(self) -> dict[str, torch.Tensor]:
        out = {f"keys_{j}": torch.from_numpy(k.copy()) for j, k in enumerate(self.keys, start=2)}
        out["counts"] = torch.from_numpy(self.counts.copy())
        return out


@dataclass(frozen=True)
class StreamState:
    """Where a mixture's carried-state pass stands: its streamed components' states,
    and the last tokens read (the start of the next windows)."""

    carried: tuple[State, ...]
    tail: np.ndarray


@dataclass(frozen=True)
class _Piece:
    """One stretch of a carried-state pass: every row's window, grouped as
    ``(first row, contexts)``, and each streamed component's rows (n, V)."""

    n: int
    windows: list[tuple[int, np.ndarray]]
    streamed: dict[int, np.ndarray]


def window_groups(text: np.ndarray, offset: int, width: int) -> list[tuple[int, np.ndarray]]:
    """The window of row t: the ``width`` tokens of ``text`` ending at ``offset + t``
    (fewer at the very start of a pass: one group per such row, as each is shorter).
    Returns ``(first row, contexts)`` groups covering rows 0 .. len(text) - offset - 1."""
    n = len(text) - offset
    short = max(0, min(n, width - 1 - offset))
    groups = [(t, text[None, : offset + t + 1].copy()) for t in range(short)]
    if short < n:
        views = np.lib.stride_tricks.sliding_window_view(text, width)
        first = offset + short - width + 1
        groups.append((short, np.ascontiguousarray(views[first : first + n - short])))
    return groups


class MixtureModel(SequenceModel):
    """A convex combination of registered plugins, weights fitted on the val split."""

    config_class: ClassVar[type[PluginConfig]] = MixtureConfig
    task_kinds: ClassVar[frozenset[TaskKind]] = frozenset({"next-token"})
    test_params: ClassVar[dict[str, Any]] = {
        "components": [
            {"plugin": "ngram", "params": {"order": 2}},
            {"plugin": "ngram", "params": {"order": 3}},
            {
                "plugin": "lstm",
                "params": {"embedding_dim": 8, "hidden_size": 16},
                "train": {"epochs": 2, "batch_size": 16, "lr": 0.01, "num_threads": 1},
            },
        ],
        "context_order": 2,
        "buckets": 4,
    }
    config: MixtureConfig

    def __init__(self, vocab_size: int, config: PluginConfig | Mapping[str, Any] | None = None):
        super().__init__(vocab_size, config)
        self.components: list[SequenceModel] = [
            load_plugin(spec.plugin)(self.vocab_size, spec.params)
            for spec in self.config.components
        ]
        #: (R, K): row 0 the global weights, row 1 + b those of count bucket b
        self.weights: np.ndarray | None = None
        self.counts: ContextCounts | None = None
        #: neural components' learners during dynamic evaluation (on its copy only)
        self.learners: dict[int, TailLearner] = {}
        #: the components scored with their state carried (stateful, trained statefully)
        self.streamed: tuple[int, ...] = tuple(
            i
            for i, (spec, model) in enumerate(
                zip(self.config.components, self.components, strict=True)
            )
            if model.can_stream and spec.streams()
        )
        #: the window (``data.context_len``) the other components read while streaming
        self.window: int | None = None
        #: streamed components' learners during a carried-state dynamic evaluation
        self.stream_learners: dict[int, StreamLearner] = {}

    @property
    def per_context(self) -> bool:
        return self.config.weights == "per_context"

    @property
    def can_stream(self) -> bool:
        """A component carries state when scored alone, and the window the others read
        is known (from ``fit`` or the checkpoint)."""
        return bool(self.streamed) and self.window is not None

    @classmethod
    def scores_streaming(cls, config: Mapping[str, Any], train: TrainConfig) -> bool:
        """A mixture holding a component that streams alone streams too (the run's
        ``train`` never reaches the mixture: each component has its own)."""
        parsed = cls.make_config(config)
        assert isinstance(parsed, MixtureConfig)
        return any(spec.streams() for spec in parsed.components)

    @classmethod
    def trained_parts(
        cls, config: Mapping[str, Any]
    ) -> list[tuple[str, type[TorchSequenceModel], TrainConfig]]:
        """The neural components, each with the settings ``fit`` trains it under."""
        parsed = cls.make_config(config)
        assert isinstance(parsed, MixtureConfig)
        parts = []
        for i, spec in enumerate(parsed.components):
            plugin = load_plugin(spec.plugin)
            if issubclass(plugin, TorchSequenceModel):
                name = f"component {i + 1} ({spec.plugin})"
                parts.append((name, plugin, spec.train_config(parsed.seed + i)))
        return parts

    def context_reach(self) -> int | None:
        """The farthest any component looks (and the bucketing context, per context)."""
        reaches = [c.context_reach() for c in self.components]
        if any(r is None for r in reaches):
            return None
        own = self.config.context_order if self.per_context else 0
        return max([own, *(int(r) for r in reaches if r is not None)])

    # ---- fitting -------------------------------------------------------------------
    def fit(self, data: FitData, on_epoch: EpochCallback | None = None) -> list[EpochRecord]:
        """Fit every component on train, then the weights on val (module docstring)."""
        if int(data.vocab_size) != self.vocab_size:
            raise DataError(
                f"data has vocab_size {data.vocab_size} but the model was built for "
                f"{self.vocab_size}"
            )
        start = time.perf_counter()
        trained = np.asarray(data.train).astype(np.int64)
        if len(trained) == 0:
            raise DataError("the train split is empty: nothing to fit the components on")
        for i, (spec, model) in enumerate(
            zip(self.config.components, self.components, strict=True)
        ):
            if isinstance(model, TorchSequenceModel):
                train(model, data, spec.train_config(self.config.seed + i))
            else:
                model.fit(data)
        k = len(self.components)
        self.counts = (
            ContextCounts.from_stream(trained, self.config.context_order, self.vocab_size)
            if self.per_context
            else None
        )
        self.window = max(1, int(data.context_len))
        logp, rows = self.val_logp(data)
        val_nll = float("nan")
        if len(logp) == 0:
            warnings.warn(
                "mixture: no val tokens to fit the weights on; using equal weights",
                stacklevel=2,
            )
            n_rows = 1 + (self.config.buckets if self.per_context else 0)
            self.weights = np.full((n_rows, k), 1.0 / k)
        else:
            self.weights = self.fit_weights(logp, rows)
            val_nll = float(-mixture_log_likelihood(logp, self.weights[rows]).mean())
        record = EpochRecord(
            epoch=1,
            train_nll=float("nan"),
            val_nll=val_nll,
            tokens_per_s=len(trained) / max(time.perf_counter() - start, 1e-9),
            seconds=time.perf_counter() - start,
        )
        if on_epoch is not None:
            on_epoch(record)
        return [record]

    def val_logp(self, data: FitData) -> tuple[np.ndarray, np.ndarray]:
        """(log p_k of each scored val token (N, K), its weight row (N,)), the kind of
        probabilities the test is scored with: on windows, or, when the mixture
        streams, in one carried-state pass from ``context_len`` tokens before the first
        val token, as ``metrics.evaluate`` starts it."""
        empty = (np.zeros((0, len(self.components))), np.zeros(0, dtype=np.int64))
        if not self.can_stream:
            contexts, targets = self.val_positions(data)
            if len(targets) == 0:
                return empty
            return self.component_target_logp(contexts, targets), self.bucket_of(contexts)
        if data.val is None or len(data.val) == 0:
            return empty
        stream = np.concatenate([np.asarray(data.train), np.asarray(data.val)]).astype(np.int64)
        assert self.window is not None
        first = max(len(data.train), self.window)
        if first >= len(stream):
            return empty
        warm = first - self.window
        return self.stream_component_logp(stream[warm:], first - warm)

    @staticmethod
    def val_positions(data: FitData) -> tuple[np.ndarray, np.ndarray]:
        """(contexts (N, context_len), targets (N,)) of the val tokens seqlab scores: each
        val token after its ``context_len`` predecessors, the train tail included."""
        if data.val is None or len(data.val) == 0:
            return np.zeros((0, 1), dtype=np.int64), np.zeros(0, dtype=np.int64)
        stream = np.concatenate([np.asarray(data.train), np.asarray(data.val)]).astype(np.int64)
        width = max(1, int(data.context_len))
        first = max(len(data.train), width)
        if first >= len(stream):
            return np.zeros((0, width), dtype=np.int64), np.zeros(0, dtype=np.int64)
        windows = np.lib.stride_tricks.sliding_window_view(stream, width)
        return windows[first - width : len(stream) - width], stream[first:]

    def component_target_logp(self, contexts: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """log p_k(target_t | context_t) for every component k: (N, K)."""
        out = np.empty((len(targets), len(self.components)))
        for start in range(0, len(targets), BATCH):
            ctx = np.ascontiguousarray(contexts[start : start + BATCH], dtype=np.int64)
            tgt = targets[start : start + BATCH]
            for k, model in enumerate(self.components):
                lp = np.asarray(model.log_proba(ctx), dtype=np.float64)
                out[start : start + BATCH, k] = lp[np.arange(len(tgt)), tgt]
        return out

    def stream_component_logp(self, ids: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
        """log p_k(ids[t]) for every t >= first and component k (N, K), and each token's
        weight row, from one carried-state pass over ``ids`` read in the pieces
        ``metrics.score_stream`` reads (so a streamed component's numbers are exactly
        those it gets scored alone; the others read their windows)."""
        ids = np.asarray(ids, dtype=np.int64)
        n = max(0, len(ids) - first)
        out, rows = np.empty((n, len(self.components))), np.zeros(n, dtype=np.int64)
        state: StreamState | None = None
        for start in range(0, len(ids) - 1, BATCH):
            piece, state = self._read(ids[start : min(start + BATCH, len(ids) - 1)], state)
            predicted = np.arange(start + 1, start + 1 + piece.n)  # row i predicts this id
            keep = predicted >= first
            if not keep.any():
                continue
            at, targets = predicted[keep] - first, ids[predicted[keep]]
            rows[at] = self._rows(piece)[keep]
            for k in range(len(self.components)):
                lp = self._component_logp(k, piece)[keep]
                out[at, k] = lp[np.arange(len(targets)), targets]
        return out, rows

    def bucket_of(self, contexts: np.ndarray) -> np.ndarray:
        """Each context's weight row: 0 (global) or 1 + its log2 train-count bucket."""
        rows = np.zeros(len(contexts), dtype=np.int64)
        if not self.per_context or contexts.shape[1] < self.config.context_order:
            return rows
        assert self.counts is not None
        counts = self.counts.lookup(contexts)
        bucket = np.floor(np.log2(1.0 + counts)).astype(np.int64)
        return 1 + np.minimum(bucket, self.config.buckets - 1)

    def fit_weights(self, logp: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Global weights by MAP-EM; per context, each bucket's shrunk towards them."""
        cfg = self.config
        finite = np.isfinite(logp.max(axis=1))  # a token no component allows says nothing
        logp, rows = logp[finite], rows[finite]
        k = logp.shape[1]
        glob = em_weights(logp, np.full(k, cfg.prior), cfg.em_iterations)
        if not self.per_context:
            return glob[None, :]
        out = np.tile(glob, (1 + cfg.buckets, 1))
        for b in range(1, 1 + cfg.buckets):
            mask = rows == b
            out[b] = em_weights(logp[mask], cfg.shrinkage * glob, cfg.em_iterations, glob)
        return out

    def target_logp(self, logp: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """The mixture's log p(target_t) from the components' (N, K) log-probabilities."""
        assert self.weights is not None
        return mixture_log_likelihood(logp, self.weights[self.bucket_of(contexts)])

    # ---- scoring -------------------------------------------------------------------
    def log_proba(self, contexts: np.ndarray) -> np.ndarray:
        """log sum_k w_k(context) p_k(. | context), in float64, each row renormalised."""
        if self.weights is None:
            raise NotFittedError("MixtureModel: fit or load before asking for probabilities")
        ctx = as_context_array(contexts)
        if ctx.shape[1] == 0:
            raise DataError("MixtureModel needs a context of at least one token")
        if ctx.size and (ctx.min() < 0 or ctx.max() >= self.vocab_size):
            raise DataError(f"token ids must lie in [0, {self.vocab_size})")
        logw = np.log(self.weights[self.bucket_of(ctx)])  # (B, K)
        mixed: np.ndarray | None = None  # accumulated: O(B x V) memory whatever K is
        for k, model in enumerate(self.components):
            part = np.asarray(model.log_proba(ctx), dtype=np.float64) + logw[:, k, None]
            mixed = part if mixed is None else np.logaddexp(mixed, part)
        assert mixed is not None
        return mixed - _logsumexp(mixed, axis=1)[:, None]

    def stream_log_proba(
        self, ids: np.ndarray, state: State = None, chunk: int = CHUNK
    ) -> tuple[np.ndarray, State]:
        """Carried state (:attr:`can_stream`): row t mixes, with the weights of its
        window's bucket, each streamed component's row after everything read so far
        and each other component's ``log_proba`` of its window (the ``context_len``
        tokens ending at ``ids[t]``); float64, each row renormalised as in
        :meth:`log_proba`. The state holds the streamed states and the last tokens."""
        if self.weights is None:
            raise NotFittedError("MixtureModel: fit or load before asking for probabilities")
        piece, after = self._read(ids, state, chunk)
        logw = np.log(self.weights[self._rows(piece)])
        mixed: np.ndarray | None = None
        for k in range(len(self.components)):
            part = self._component_logp(k, piece) + logw[:, k, None]
            mixed = part if mixed is None else np.logaddexp(mixed, part)
        assert mixed is not None
        return mixed - _logsumexp(mixed, axis=1)[:, None], after

    def _read(
        self, ids: np.ndarray, state: StreamState | None, chunk: int = CHUNK
    ) -> tuple[_Piece, StreamState]:
        """Advance the streamed components over ``ids`` and lay out the others' windows."""
        if not self.can_stream:
            raise PluginError(f"{type(self).__name__}: no component carries state")
        assert self.window is not None
        seq = as_context_array(np.asarray(ids).reshape(1, -1))[0]
        if len(seq) == 0:
            raise DataError("MixtureModel needs a context of at least one token")
        if seq.min() < 0 or seq.max() >= self.vocab_size:
            raise DataError(f"token ids must lie in [0, {self.vocab_size})")
        if state is None:
            state = StreamState((None,) * len(self.streamed), np.zeros(0, dtype=np.int64))
        streamed, carried = {}, []
        for k, before in zip(self.streamed, state.carried, strict=True):
            streamed[k], after = self._stream_component(k, seq, before, chunk)
            carried.append(after)
        text = np.concatenate([state.tail, seq])
        windows = window_groups(text, len(state.tail), self.window)
        tail = text[max(0, len(text) - (self.window - 1)) :]
        return _Piece(len(seq), windows, streamed), StreamState(tuple(carried), tail)

    def _stream_component(
        self, k: int, ids: np.ndarray, state: State, chunk: int
    ) -> tuple[np.ndarray, State]:
        """A streamed component's rows; in a dynamic evaluation, kept for its SGD step."""
        model, context = self.components[k], active_adapt_context()
        if context is not None and isinstance(model, TorchSequenceModel):
            return self.stream_learners.setdefault(k, StreamLearner(model, context)).score(
                ids, state
            )
        return model.stream_log_proba(ids, state, chunk)

    def _component_logp(self, k: int, piece: _Piece) -> np.ndarray:
        """Component k's rows (n, V): streamed, or its ``log_proba`` of each window."""
        if k in piece.streamed:
            return piece.streamed[k]
        model, out = self.components[k], np.empty((piece.n, self.vocab_size))
        for row, contexts in piece.windows:
            for start in range(0, len(contexts), BATCH):
                batch = contexts[start : start + BATCH]
                at = row + start
                out[at : at + len(batch)] = np.asarray(model.log_proba(batch), dtype=np.float64)
        return out

    def _rows(self, piece: _Piece) -> np.ndarray:
        """Each row's weight row, from its window as :meth:`bucket_of` reads windows."""
        return np.concatenate([self.bucket_of(contexts) for _, contexts in piece.windows])

    @property
    def is_fitted(self) -> bool:
        return self.weights is not None and all(m.is_fitted for m in self.components)

    def adapt(self, history: np.ndarray, new: int) -> None:
        """Dynamic evaluation: every component that can learn from the scored text does
        (an n-gram adds its counts; a neural one takes the SGD step seqlab gives a neural
        plugin scored on windows, with the run's dynamic settings); the others stay
        static, and the weights learned on validation are kept. Not supported when no
        component can adapt."""
        adapted = 0
        context = active_adapt_context()
        for i, model in enumerate(self.components):
            if i in self.stream_learners:  # scored with its state carried: a step on that
                self.stream_learners[i].learn(np.asarray(history)[-new:])
                adapted += 1
                continue
            if isinstance(model, TorchSequenceModel) and context is not None:
                self.learners.setdefault(i, TailLearner(model, context)).learn(history, new)
                adapted += 1
                continue
            try:
                model.adapt(history, new)
            except AdaptNotSupported:
                continue
            adapted += 1
        if not adapted:
            raise AdaptNotSupported(f"{type(self).__name__}: none of its components can adapt")

    # ---- persistence ---------------------------------------------------------------
    def get_state(self) -> dict[str, torch.Tensor]:
        """Weights, count tables and every component's state under ``c<i>.``."""
        if self.weights is None:
            raise NotFittedError("MixtureModel: nothing to save before fit()")
        state = {"weights": torch.from_numpy(self.weights.copy())}
        if self.window is not None:
            state["window"] = torch.tensor(self.window, dtype=torch.int64)
        if self.counts is not None:
            state.update({f"bucket.{k}": v for k, v in self.counts.state().items()})
        for i, model in enumerate(self.components):
            state.update({f"c{i}.{k}": v for k, v in model.get_state().items()})
        return state

    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`get_state`'s tensors; refuses a checkpoint of another mixture."""
        cfg, k = self.config, len(self.components)
        rows = 1 + (cfg.buckets if self.per_context else 0)
        if "weights" not in state:
            raise DataError("checkpoint does not fit MixtureModel: missing weights")
        weights = state["weights"].detach().cpu().numpy().astype(np.float64)
        if weights.shape != (rows, k):
            raise DataError(
                f"checkpoint does not fit MixtureModel: weights {tuple(weights.shape)}, "
                f"expected {(rows, k)}"
            )
        counts = None
        if self.per_context:
            names = [f"bucket.keys_{j}" for j in range(2, cfg.context_order + 1)]
            missing = [n for n in [*names, "bucket.counts"] if n not in state]
            if missing:
                raise DataError(f"checkpoint does not fit MixtureModel: missing {missing[0]}")
            keys = [state[n].detach().cpu().numpy().astype(np.int64) for n in names]
            table = state["bucket.counts"].detach().cpu().numpy().astype(np.int64)
            counts = ContextCounts(cfg.context_order, self.vocab_size, keys, table)
        for i, model in enumerate(self.components):
            prefix = f"c{i}."
            sub = {n[len(prefix) :]: v for n, v in state.items() if n.startswith(prefix)}
            if not sub:
                raise DataError(f"checkpoint does not fit MixtureModel: no state for component {i}")
            model.set_state(sub)
        self.weights, self.counts = weights, counts
        # a checkpoint from before carried-state scoring holds no window: windows only
        self.window = int(state["window"].item()) if "window" in state else None
