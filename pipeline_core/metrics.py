"""The one metric, computed the same way for every plugin.

``nll`` is the mean negative log-likelihood per predicted token (nats); ``bpc`` is total
bits over total characters covered, so word and character models compare; ``ppl`` is
``exp(nll)``; ``acc@k`` counts targets among the k most probable tokens. Every model is
scored on the same positions: every token of the split, each after a full context.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from pipeline_core.contract import SequenceModel
from pipeline_core.errors import DataError, PluginError, PluginOutputError
from pipeline_core.vectorize import EncodedCorpus, sliding_windows

LN2 = math.log(2.0)


@dataclass(frozen=True)
class Scores:
    """Figures for one model on one split."""

    nll: float
    bpc: float
    ppl: float
    acc1: float
    acc5: float
    n_tokens: int
    n_chars: int
    #: sequence-to-sequence tasks only: share of outputs equal to the target, and the
    #: character error rate (edit distance / target length); NaN elsewhere
    exact_match: float = float("nan")
    cer: float = float("nan")
    #: sequence-level classification only (scikit-learn's accuracy_score, macro f1_score
    #: and log_loss over the examples); NaN elsewhere
    accuracy: float = float("nan")
    macro_f1: float = float("nan")
    log_loss: float = float("nan")
    #: regression only (scikit-learn's mean_squared_error and mean_absolute_error, in the
    #: target's units); NaN elsewhere
    mse: float = float("nan")
    mae: float = float("nan")

    def as_metrics(self, prefix: str) -> dict[str, float]:
        """MLflow-ready names: ``test_nll``, ``test_bpc``, ``test_acc1`` ... (a figure a
        task does not define, NaN, is left out)."""
        return {
            f"{prefix}_{k}": float(v) for k, v in asdict(self).items() if not math.isnan(float(v))
        }


@dataclass(frozen=True)
class TargetScores:
    """Per-position log-probability of the target and whether it ranks in the top 1/5."""

    logp: np.ndarray
    top1: np.ndarray
    top5: np.ndarray


NORM_TOL = 1e-6


def check_log_proba(
    lp: np.ndarray, n_rows: int, vocab_size: int, model: object, first: int
) -> None:
    """Refuse what no distribution is: wrong shape, NaN or +inf, or a row whose
    logsumexp is not 0 within 1e-6 (``first`` numbers the rows in the error)."""
    name = type(model).__name__
    if lp.shape != (n_rows, vocab_size):
        raise PluginOutputError(
            f"{name}: log_proba returned shape {lp.shape}, expected ({n_rows}, {vocab_size})"
        )
    bad = np.isnan(lp) | np.isposinf(lp)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise PluginOutputError(
            f"{name}: log_proba row {first + row} holds NaN or +inf; not a distribution"
        )
    peak = lp.max(axis=1)
    finite_peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        lse = finite_peak + np.log(np.exp(lp - finite_peak[:, None]).sum(axis=1))
    off = np.abs(lse) > NORM_TOL
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise PluginOutputError(
            f"{name}: log_proba row {first + row} sums to {float(np.exp(lse[row])):.9g}, "
            f"not 1 (tolerance {NORM_TOL:g} in log space); its scores would be wrong"
        )


def target_scores(lp: np.ndarray, targets: np.ndarray) -> TargetScores:
    """log p of each target and whether it ranks first / in the top five."""
    tgt = targets.astype(np.int64)
    chosen = lp[np.arange(len(tgt)), tgt]
    # rank of the target; ties go to the lower id, as argmax (greedy decoding) does
    ties_before = (lp == chosen[:, None]) & (np.arange(lp.shape[1]) < tgt[:, None])
    better = (lp > chosen[:, None]).sum(axis=1) + ties_before.sum(axis=1)
    return TargetScores(chosen, better < 1, better < 5)


def _concat(parts: list[TargetScores]) -> TargetScores:
    if not parts:
        empty = np.empty(0)
        return TargetScores(empty, empty.astype(bool), empty.astype(bool))
    return TargetScores(
        np.concatenate([p.logp for p in parts]),
        np.concatenate([p.top1 for p in parts]),
        np.concatenate([p.top5 for p in parts]),
    )


def _refuse_zero(model: SequenceModel, logp: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(logp))
    if bad.size:
        raise DataError(
            f"{type(model).__name__} gives zero probability to {bad.size} scored token(s) "
            f"(first at scored position {int(bad[0])}); use a smoothed model"
        )


def score_targets(
    model: SequenceModel,
    contexts: np.ndarray,
    targets: np.ndarray,
    batch_size: int = 2048,
    check: bool = True,
) -> TargetScores:
    """Ask the model for log p(target | context), batch by batch (O(batch x V) memory),
    checking every batch it gets back (``check=False`` only for reference comparisons)."""
    parts = []
    for start in range(0, len(targets), batch_size):
        stop = start + batch_size
        lp = np.asarray(model.log_proba(contexts[start:stop]), dtype=np.float64)
        if check:
            check_log_proba(lp, len(targets[start:stop]), model.vocab_size, model, start)
        parts.append(target_scores(lp, targets[start:stop]))
    scores = _concat(parts)
    _refuse_zero(model, scores.logp)
    return scores


def score_stream(
    model: SequenceModel, ids: np.ndarray, first: int, chunk: int = 2048
) -> TargetScores:
    """Carried-state scoring: one O(N) pass over ``ids``, scoring ``ids[first:]`` (each
    token after all of ``ids`` before it); the same checks as :func:`score_targets`."""
    parts, state = [], None
    for start in range(0, len(ids) - 1, chunk):
        piece = ids[start : min(start + chunk, len(ids) - 1)]
        lp, state = model.stream_log_proba(piece, state)
        predicted = np.arange(start + 1, start + 1 + len(piece))  # row i predicts this id
        keep = predicted >= first
        if not keep.any():
            continue
        lp = lp[keep]
        check_log_proba(lp, len(lp), model.vocab_size, model, int(predicted[keep][0] - first))
        parts.append(target_scores(lp, ids[predicted[keep]]))
    scores = _concat(parts)
    _refuse_zero(model, scores.logp)
    return scores


def summarize(scores: TargetScores, n_chars: int) -> Scores:
    n = len(scores.logp)
    if n == 0:
        raise DataError("no positions to score")
    total_nats = float(-scores.logp.sum())
    nll = total_nats / n
    return Scores(
        nll=nll,
        bpc=total_nats / LN2 / max(n_chars, 1),
        ppl=math.exp(min(nll, 700.0)),
        acc1=float(scores.top1.mean()),
        acc5=float(scores.top5.mean()),
        n_tokens=n,
        n_chars=int(n_chars),
    )


def can_carry_state(model: SequenceModel) -> bool:
    """A stateful net, or a plugin holding one (:attr:`SequenceModel.can_stream`)."""
    return model.can_stream


def evaluate(
    model: SequenceModel,
    corpus: EncodedCorpus,
    split: str = "test",
    batch_size: int = 2048,
    carry_state: bool = False,
) -> Scores:
    """Score ``model`` on every token of ``split``; identical positions for every plugin.

    Windows (default): each scored token after its ``context_len`` predecessors. With
    ``carry_state`` (plugins that :func:`can_carry_state`): one pass from ``context_len``
    tokens before the first scored one, so every token sees at least the context the
    windows give."""
    positions = corpus.scoring_positions(split)
    if carry_state:
        if not can_carry_state(model):
            raise PluginError(f"{type(model).__name__} carries no state to score with")
        warm = max(0, int(positions[0]) - corpus.config.context_len) if len(positions) else 0
        stop = corpus.span(split)[1]
        stream = corpus.ids[warm:stop].astype(np.int64)
        scores = score_stream(model, stream, int(positions[0]) - warm if len(positions) else 0)
    else:
        contexts = corpus.contexts_at(positions)
        targets = corpus.ids[positions]
        scores = score_targets(model, contexts, targets, batch_size)
    return summarize(charge_spelling(scores, corpus, positions), scored_chars(corpus, split))


def charge_spelling(
    scores: TargetScores, corpus: EncodedCorpus, positions: np.ndarray
) -> TargetScores:
    """Open-vocabulary scoring: an ``<unk>`` target at ``positions`` also pays its
    spelling under the shared fallback (:mod:`pipeline_core.spelling`), for every model,
    and is never a hit for acc@1/acc@5 (ranking ``<unk>`` first names no token)."""
    from pipeline_core.spelling import spelling_nats

    known = np.asarray(corpus.ids[positions]) != 0
    return replace(
        scores,
        logp=scores.logp - spelling_nats(corpus, positions),
        top1=scores.top1 & known,
        top5=scores.top5 & known,
    )


def scored_chars(corpus: EncodedCorpus, split: str) -> int:
    """Characters covered by the scored tokens of ``split`` (the bpc denominator); only
    the train split can lose its first tokens (no full context before them)."""
    start, stop = corpus.span(split)
    n_scored = len(corpus.scoring_positions(split))
    return round(corpus.split_chars[split] * n_scored / max(stop - start, 1))


def stream_nll(
    model: SequenceModel, ids: np.ndarray, context_len: int, batch_size: int = 2048
) -> float:
    """Mean nll of every token of ``ids`` after its first ``context_len`` (tests, kit)."""
    windows = sliding_windows(ids, context_len + 1)
    if len(windows) == 0:
        return float("nan")
    contexts = windows[:, :-1].astype(np.int64)
    targets = windows[:, -1]
    return float(-score_targets(model, contexts, targets, batch_size).logp.mean())
