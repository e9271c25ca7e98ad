"""Dynamic evaluation: score a split while learning from it, as adaptive compressors do.

The text is read left to right in segments. Each segment is scored first, with the
parameters as they are (its log-loss counts), and only then learned from; so no token's
probability ever depends on itself or on anything after it. Neural plugins
(:class:`~pipeline_core.contract.TorchSequenceModel`) take one RMS-normalised SGD step
per segment on its mean loss, then move ``decay`` of the way back to the static weights
(Krause et al., 2018, "Dynamic Evaluation of Neural Sequence Models"; the mean squares
are a running average over the test segments, not taken from the training data);
every other plugin learns through :meth:`~pipeline_core.contract.SequenceModel.adapt`
(the n-gram adds the segment's counts), and one that cannot has no dynamic figure.
All of it happens on a copy: the static model, its scores and its checkpoint are
never touched. The figures are reported apart from the static ones (``test_bpc_dynamic``,
the leaderboard's ``dyn_bpc``), with the same ``<unk>`` spelling charge.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch

from pipeline_core.config import TrainConfig
from pipeline_core.contract import (
    AdaptNotSupported,
    SequenceModel,
    State,
    TorchSequenceModel,
    detach_state,
)
from pipeline_core.metrics import (
    Scores,
    TargetScores,
    _concat,
    _refuse_zero,
    charge_spelling,
    check_log_proba,
    score_targets,
    scored_chars,
    summarize,
    target_scores,
)
from pipeline_core.vectorize import EncodedCorpus, sliding_windows

log = logging.getLogger("seqlab")

#: the metric names on a model's run (kept apart from every static ``test_*`` figure)
METRIC_SUFFIX = "_dynamic"


@dataclass(frozen=True)
class DynamicSettings:
    """How a model learns while it is scored."""

    lr: float = 0.002
    decay: float = 0.02
    segment: int = 50

    @classmethod
    def from_train(cls, train: TrainConfig) -> DynamicSettings:
        return cls(lr=train.dynamic_lr, decay=train.dynamic_decay, segment=train.dynamic_segment)


@dataclass(frozen=True)
class AdaptContext:
    """What a plugin's :meth:`~SequenceModel.adapt` may need to learn like seqlab does:
    the run's dynamic settings and how many tokens each scored token was predicted from."""

    settings: DynamicSettings
    context_len: int


_ACTIVE: ContextVar[AdaptContext | None] = ContextVar("seqlab_dynamic_eval", default=None)


def active_adapt_context() -> AdaptContext | None:
    """The dynamic evaluation in progress (None outside one): a plugin that holds neural
    models of its own (the mixture) adapts them with the run's settings."""
    return _ACTIVE.get()


@contextlib.contextmanager
def _adapting(context: AdaptContext) -> Iterator[None]:
    token = _ACTIVE.set(context)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def score_dynamic(
    model: SequenceModel,
    ids: np.ndarray,
    first: int,
    context_len: int,
    settings: DynamicSettings,
    carry_state: bool = False,
) -> TargetScores:
    """log p of ``ids[first:]``, each scored before anything learns from it.

    With ``carry_state`` (plugins that can stream: stateful neural ones, a mixture
    holding one) one pass carries the state from ``ids[0]``; otherwise each token is
    scored after its ``context_len`` predecessors (``first >= context_len``). Raises
    :class:`AdaptNotSupported` for a plugin that cannot learn during evaluation."""
    ids = np.asarray(ids, dtype=np.int64)
    if isinstance(model, TorchSequenceModel):
        work = copy.deepcopy(model)
        with torch.backends.cudnn.flags(enabled=False):  # cuDNN RNNs refuse backward in eval
            if carry_state:
                scores = _torch_stream(work, ids, first, settings)
            else:
                scores = _torch_windows(work, ids, first, context_len, settings)
    elif carry_state:
        scores = _count_stream(
            copy.deepcopy(model), ids, first, AdaptContext(settings, context_len)
        )
    else:
        with _adapting(AdaptContext(settings, context_len)):
            scores = _count_windows(copy.deepcopy(model), ids, first, context_len, settings)
    _refuse_zero(model, scores.logp)
    return scores


def _segments(first: int, stop: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, stop)) for s in range(first, stop, size)]


def _count_windows(
    model: SequenceModel, ids: np.ndarray, first: int, context_len: int, s: DynamicSettings
) -> TargetScores:
    """Score each segment through ``log_proba``, then :meth:`SequenceModel.adapt`."""
    windows = sliding_windows(ids, context_len)
    parts = []
    for start, stop in _segments(first, len(ids), s.segment):
        positions = np.arange(start, stop)
        contexts = windows[positions - context_len].astype(np.int64)
        parts.append(score_targets(model, contexts, ids[start:stop]))
        model.adapt(ids[first:stop], stop - start)
    return _concat(parts)


def _count_stream(
    model: SequenceModel, ids: np.ndarray, first: int, context: AdaptContext
) -> TargetScores:
    """Carried state for a plugin that is not itself neural (a mixture holding a
    stateful net): warm up on ``ids[:first - 1]`` in one static pass, as
    :func:`_torch_stream` does, then inside the dynamic evaluation each segment scored
    through ``stream_log_proba``, then learned from by ``adapt``."""
    if not model.can_stream:
        raise AdaptNotSupported(f"{type(model).__name__} carries no state")
    state: State = None
    if first > 1:
        _, state = model.stream_log_proba(ids[: first - 1], None, chunk=first - 1)
    parts = []
    with _adapting(context):
        for start, stop in _segments(first, len(ids), context.settings.segment):
            lp, state = model.stream_log_proba(ids[start - 1 : stop - 1], state)
            check_log_proba(lp, stop - start, model.vocab_size, model, start - first)
            parts.append(target_scores(lp, ids[start:stop]))
            model.adapt(ids[first:stop], stop - start)
    return _concat(parts)


class _Sgd:
    """RMS-normalised SGD on a neural copy, with a decay back toward the static weights:
    each gradient entry is divided by the root of its running mean square, so ``lr`` is
    about the step in weight units (plain SGD, tried first, diverged on sharp losses)."""

    RHO = 0.9
    EPS = 1e-8

    def __init__(self, model: TorchSequenceModel, settings: DynamicSettings) -> None:
        self.model, self.settings = model, settings
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.anchor = [p.detach().clone() for p in self.params]
        self.mean_square: list[torch.Tensor | None] = [None] * len(self.params)

    def step(self, loss: torch.Tensor) -> None:
        self.model.zero_grad(set_to_none=True)
        loss.backward()
        lr, decay = self.settings.lr, self.settings.decay
        with torch.no_grad():
            for i, (p, a) in enumerate(zip(self.params, self.anchor, strict=True)):
                if p.grad is not None:
                    ms = self.mean_square[i]
                    square = p.grad.square()
                    ms = square if ms is None else self.RHO * ms + (1 - self.RHO) * square
                    self.mean_square[i] = ms
                    p.sub_(lr * p.grad / (ms.sqrt() + self.EPS))
                if decay:
                    p.add_(decay * (a - p))


class TailLearner:
    """Adapts a neural model held inside another plugin (a mixture's component) from
    :meth:`~SequenceModel.adapt` calls, as :func:`score_dynamic` adapts one scored on
    windows: one :class:`_Sgd` step on the new tokens' mean loss, each predicted from the
    (at most ``context_len``) tokens before it in the text scored so far."""

    def __init__(self, model: TorchSequenceModel, context: AdaptContext) -> None:
        self.model, self.reach = model, max(1, context.context_len)
        self.sgd = _Sgd(model, context.settings)

    def learn(self, history: np.ndarray, new: int) -> None:
        ids = np.asarray(history, dtype=np.int64)[-(new + self.reach) :]
        count = min(new, len(ids) - 1)  # the text's first token has nothing before it
        if count <= 0:
            return
        model = self.model
        model.eval()
        x = torch.from_numpy(ids[None, :-1]).to(model.device)
        targets = torch.from_numpy(ids[-count:]).to(model.device)
        with torch.backends.cudnn.flags(enabled=False), torch.enable_grad():
            logits, _ = model.step(x, None)
            lp = torch.log_softmax(logits[0, -count:].double(), dim=-1)
            self.sgd.step(-lp.gather(1, targets[:, None]).mean())


class StreamLearner:
    """Adapts a stateful neural model held inside another plugin (a mixture's component
    scored with its state carried) as :func:`_torch_stream` adapts one scored alone:
    :meth:`score` reads a segment from the carried state in one pass that keeps its
    graph, and :meth:`learn` then takes one :class:`_Sgd` step on that segment's mean
    loss, so each token is scored before the step that learns from it."""

    def __init__(self, model: TorchSequenceModel, context: AdaptContext) -> None:
        self.model, self.sgd = model, _Sgd(model, context.settings)
        self.pending: torch.Tensor | None = None

    def score(self, ids: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """Rows (len(ids), V) predicting the token after each id, and the state after."""
        model = self.model
        model.eval()
        x = torch.from_numpy(np.asarray(ids, dtype=np.int64)[None, :]).to(model.device)
        with torch.backends.cudnn.flags(enabled=False), torch.enable_grad():
            logits, state = model.step(x, state)
            self.pending = torch.log_softmax(logits[0].double(), dim=-1)
        return self.pending.detach().cpu().numpy(), detach_state(state)

    def learn(self, targets: np.ndarray) -> None:
        """One step on the last scored rows' loss (their targets: the last ``targets``)."""
        lp, self.pending = self.pending, None
        count = min(len(targets), 0 if lp is None else len(lp))
        if lp is None or count == 0:
            return
        index = torch.from_numpy(np.asarray(targets[-count:], dtype=np.int64)).to(lp.device)
        with torch.backends.cudnn.flags(enabled=False):
            self.sgd.step(-lp[-count:].gather(1, index[:, None]).mean())


def _extra_adapt(model: TorchSequenceModel, history: np.ndarray, new: int) -> None:
    """A neural plugin that overrides ``adapt`` (e.g. a mixture holding count tables)
    learns there too, after the SGD step, what the gradient does not reach."""
    if type(model).adapt is not SequenceModel.adapt:
        model.adapt(history, new)


def _score_and_loss(
    model: TorchSequenceModel, logits: torch.Tensor, targets: np.ndarray, first_row: int
) -> tuple[TargetScores, torch.Tensor]:
    """The rows' scores (checked as every scored row is) and their mean loss."""
    lp = torch.log_softmax(logits.double(), dim=-1)
    rows = lp.detach().cpu().numpy()
    check_log_proba(rows, len(targets), model.vocab_size, model, first_row)
    index = torch.from_numpy(targets).to(lp.device)
    loss = -lp.gather(1, index[:, None]).mean()
    return target_scores(rows, targets), loss


def _torch_stream(
    model: TorchSequenceModel, ids: np.ndarray, first: int, s: DynamicSettings
) -> TargetScores:
    """Carried state: warm up on ``ids[:first - 1]``, then per segment one pass with
    gradients (its rows are the scores), one SGD step, and the state carried on."""
    if not model.stateful:
        raise AdaptNotSupported(f"{type(model).__name__} carries no state")
    model.eval()
    sgd, state, parts = _Sgd(model, s), None, []
    device = model.device
    if first > 1:
        with torch.no_grad():
            _, state = model.step(torch.from_numpy(ids[None, : first - 1]).to(device), None)
    for start, stop in _segments(first, len(ids), s.segment):
        x = torch.from_numpy(ids[None, start - 1 : stop - 1]).to(device)
        with torch.enable_grad():
            logits, state = model.step(x, state)
            scores, loss = _score_and_loss(model, logits[0], ids[start:stop], start - first)
            sgd.step(loss)
        _extra_adapt(model, ids[first:stop], stop - start)
        parts.append(scores)
        state = detach_state(state)
    return _concat(parts)


def _torch_windows(
    model: TorchSequenceModel, ids: np.ndarray, first: int, context_len: int, s: DynamicSettings
) -> TargetScores:
    """Windows: each segment's tokens scored from the last position of their windows,
    then one SGD step on those same predictions."""
    model.eval()
    sgd, parts = _Sgd(model, s), []
    windows = sliding_windows(ids, context_len)
    for start, stop in _segments(first, len(ids), s.segment):
        contexts = windows[np.arange(start, stop) - context_len].astype(np.int64)
        with torch.enable_grad():
            state: State = None
            logits, _ = model.step(torch.from_numpy(contexts).to(model.device), state)
            scores, loss = _score_and_loss(model, logits[:, -1], ids[start:stop], start - first)
            sgd.step(loss)
        _extra_adapt(model, ids[first:stop], stop - start)
        parts.append(scores)
    return _concat(parts)


def evaluate_dynamic(
    model: SequenceModel,
    corpus: EncodedCorpus,
    settings: DynamicSettings,
    carry_state: bool = False,
    split: str = "test",
) -> Scores | None:
    """Dynamic scores on the same positions, with the same ``<unk>`` spelling charge and
    bpc denominator as :func:`~pipeline_core.metrics.evaluate`; None when the plugin
    cannot adapt (reported as n/a)."""
    positions = corpus.scoring_positions(split)
    if not len(positions):
        return None
    ctx = corpus.config.context_len
    warm = max(0, int(positions[0]) - ctx)
    stream = corpus.ids[warm : corpus.span(split)[1]]
    try:
        scores = score_dynamic(model, stream, int(positions[0]) - warm, ctx, settings, carry_state)
    except AdaptNotSupported as err:
        log.info("no dynamic evaluation: %s", err)
        return None
    return summarize(charge_spelling(scores, corpus, positions), scored_chars(corpus, split))


def dynamic_metrics(scores: Scores) -> dict[str, float]:
    """``test_bpc_dynamic``, ``test_nll_dynamic``, ...: never a static name."""
    return {f"{k}{METRIC_SUFFIX}": v for k, v in scores.as_metrics("test").items()}
