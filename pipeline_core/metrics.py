"""The one metric, computed the same way for every plugin.

``nll`` is the mean negative log-likelihood per predicted token (nats); ``bpc`` is total
bits over total characters covered, so word and character models compare; ``ppl`` is
``exp(nll)``; ``acc@k`` counts targets among the k most probable tokens. Every model is
scored on the same positions: every token of the split, each after a full context.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from pipeline_core.contract import SequenceModel
from pipeline_core.errors import DataError
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

    def as_metrics(self, prefix: str) -> dict[str, float]:
        """MLflow-ready names: ``test_nll``, ``test_bpc``, ``test_acc1`` ..."""
        return {f"{prefix}_{k}": float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class TargetScores:
    """Per-position log-probability of the target and whether it ranks in the top 1/5."""

    logp: np.ndarray
    top1: np.ndarray
    top5: np.ndarray


def score_targets(
    model: SequenceModel, contexts: np.ndarray, targets: np.ndarray, batch_size: int = 2048
) -> TargetScores:
    """Ask the model for log p(target | context), batch by batch (O(batch x V) memory)."""
    logp = np.empty(len(targets), dtype=np.float64)
    top1 = np.empty(len(targets), dtype=bool)
    top5 = np.empty(len(targets), dtype=bool)
    for start in range(0, len(targets), batch_size):
        stop = start + batch_size
        lp = np.asarray(model.log_proba(contexts[start:stop]), dtype=np.float64)
        tgt = targets[start:stop].astype(np.int64)
        chosen = lp[np.arange(len(tgt)), tgt]
        # rank of the target; ties go to the lower id, as argmax (greedy decoding) does
        ties_before = (lp == chosen[:, None]) & (np.arange(lp.shape[1]) < tgt[:, None])
        better = (lp > chosen[:, None]).sum(axis=1) + ties_before.sum(axis=1)
        logp[start:stop] = chosen
        top1[start:stop] = better < 1
        top5[start:stop] = better < 5
    bad = np.flatnonzero(~np.isfinite(logp))
    if bad.size:
        raise DataError(
            f"{type(model).__name__} gives zero probability to {bad.size} scored token(s) "
            f"(first at scored position {int(bad[0])}); use a smoothed model"
        )
    return TargetScores(logp, top1, top5)


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


def evaluate(
    model: SequenceModel, corpus: EncodedCorpus, split: str = "test", batch_size: int = 2048
) -> Scores:
    """Score ``model`` on every token of ``split``; identical for every plugin."""
    positions = corpus.scoring_positions(split)
    contexts = corpus.contexts_at(positions)
    targets = corpus.ids[positions]
    scores = score_targets(model, contexts, targets, batch_size)
    start, stop = corpus.span(split)
    # only the train split can lose its first tokens (no full context before them)
    n_chars = round(corpus.split_chars[split] * len(positions) / max(stop - start, 1))
    return summarize(scores, n_chars)


def stream_nll(
    model: SequenceModel, ids: np.ndarray, context_len: int, batch_size: int = 2048
) -> float:
    """Mean nll of every token of ``ids`` after its first ``context_len`` (used per epoch)."""
    windows = sliding_windows(ids, context_len + 1)
    if len(windows) == 0:
        return float("nan")
    contexts = windows[:, :-1].astype(np.int64)
    targets = windows[:, -1]
    return float(-score_targets(model, contexts, targets, batch_size).logp.mean())
