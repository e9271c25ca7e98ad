"""``fill-blank``: predict a token from its left *and* right contexts (the tutorial's
"I am ___ hungry", what a bidirectional RNN is for).

Training (plugins declaring ``fill-blank``): windows of ``2 * context_len + 1`` tokens,
every ``data.step``, shuffled per epoch from the seed; every position of a window is a
target, predicted by ``fill_blank_logits`` from the tokens on both sides of it (never
from itself). A plugin that declares only ``next-token`` trains as a next-token model.

Scoring: the same positions for every model, each blank with ``context_len`` tokens on
each side inside the split (``max_positions`` keeps that many, evenly spaced).
Fill-blank plugins answer ``fill_blank_log_proba(left, right)``; next-token plugins
``log_proba(left)``, from the left context only (the leaderboard's ``scoring`` column
says which), so the comparison shows what the right context buys.

bpc is bits over the characters of the blanks: one per blank at char level; at word
level each blank counts its token's characters plus one for the space that separates
it from its neighbour (as the words are joined), and an ``<unk>`` blank, whose spelling
is gone, the split's mean characters per token.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import Field

from pipeline_core.errors import ConfigError, DataError, PluginError
from pipeline_core.tasks import Batch, Task, TaskOptions, capped, get_task, register_task
from pipeline_core.tasks.next_token import epoch_rng
from pipeline_core.vectorize import count_windows, iter_batches

if TYPE_CHECKING:
    from pipeline_core.config import TrainConfig
    from pipeline_core.contract import SequenceModel, State, TorchSequenceModel
    from pipeline_core.metrics import Scores
    from pipeline_core.vectorize import EncodedCorpus

#: rows per call to the model when scoring
SCORE_BATCH = 1024


class FillBlankOptions(TaskOptions):
    """``task_options`` of the fill-blank task."""

    max_positions: int | None = Field(
        default=None,
        ge=1,
        description="Score at most this many blanks per split, evenly spaced (null: all).",
    )


def declares_fill_blank(plugin_cls: type[Any]) -> bool:
    return "fill-blank" in frozenset(getattr(plugin_cls, "task_kinds", ()))


def blank_positions(
    start: int, stop: int, context_len: int, max_positions: int | None = None
) -> np.ndarray:
    """Positions p in [start, stop) with ``context_len`` tokens of [start, stop) on each
    side; at most ``max_positions`` of them, evenly spaced (first and last kept)."""
    positions = np.arange(start + context_len, stop - context_len, dtype=np.int64)
    if max_positions is not None and len(positions) > max_positions:
        pick = np.linspace(0, len(positions) - 1, max_positions).round().astype(np.int64)
        positions = positions[np.unique(pick)]
    return positions


def blank_contexts(
    ids: np.ndarray, position: int, context_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """The (1, L) left and (1, R) right contexts of the blank at ``position`` of ``ids``:
    up to ``context_len`` tokens on each side (fewer near an end).

    A position outside [0, len(ids)) raises a one-line :class:`ConfigError`."""
    n = len(ids)
    if isinstance(position, bool) or not isinstance(position, int | np.integer):
        raise ConfigError(f"blank position must be an integer (got {position!r})")
    if not 0 <= position < n:
        raise ConfigError(
            f"blank position {position} is outside the text of {n} tokens "
            f"(valid positions: 0 to {n - 1})"
            if n
            else f"blank position {position} is outside the text: it has no tokens"
        )
    p = int(position)
    arr = np.asarray(ids, dtype=np.int64)
    left = arr[max(0, p - context_len) : p]
    right = arr[p + 1 : p + 1 + context_len]
    return left[None, :], right[None, :]


def blank_log_proba(model: SequenceModel, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """log p(blank | contexts), (B, V): both sides for a fill-blank plugin, ``left``
    alone for a next-token one."""
    if declares_fill_blank(type(model)):
        return np.asarray(model.fill_blank_log_proba(left, right), dtype=np.float64)
    return np.asarray(model.log_proba(left), dtype=np.float64)


def blank_chars(corpus: EncodedCorpus, split: str, positions: np.ndarray) -> int:
    """Characters the blanks at ``positions`` cover (the bpc denominator; module doc)."""
    if corpus.level == "char":
        return len(positions)
    tokens = corpus.vocab.tokens
    lengths = np.array([len(t) + 1 for t in tokens], dtype=np.float64)
    start, stop = corpus.span(split)
    for special in corpus.vocab.specials:
        lengths[tokens.index(special)] = corpus.split_chars[split] / max(stop - start, 1)
    return round(float(lengths[corpus.ids[positions].astype(np.int64)].sum()))


@register_task
class FillBlankTask(Task):
    name = "fill-blank"
    method = "fill_blank_log_proba"
    options_class = FillBlankOptions
    options: FillBlankOptions

    def accepts(self, kinds: frozenset[str]) -> bool:
        """Fill-blank plugins, and next-token ones (scored from the left only)."""
        return "fill-blank" in kinds or "next-token" in kinds

    def training_task(self, plugin_cls: type[Any]) -> Task:
        return self if declares_fill_blank(plugin_cls) else get_task("next-token")

    def scoring_label(self, plugin_cls: type[Any], carry_state: bool) -> str:
        return "left+right" if declares_fill_blank(plugin_cls) else "left only"

    # ---- training --------------------------------------------------------------------
    def n_batches(
        self, train: np.ndarray, context_len: int, step: int, train_cfg: TrainConfig
    ) -> int:
        if train_cfg.bptt == "stateful":
            raise ConfigError(
                "train.bptt: stateful does not apply to the fill-blank task, which trains "
                "on windows with a blank's both sides; use bptt: windows"
            )
        window = 2 * context_len + 1
        n_windows = count_windows(len(train), window, step)
        if n_windows == 0:
            raise DataError(
                f"fill-blank: train split has {len(train)} tokens, fewer than "
                f"2 * context_len + 1 = {window} (a blank and context_len tokens each side)"
            )
        n = -(-n_windows // train_cfg.batch_size)
        return capped(n, train_cfg)

    def check_fill(
        self, train: np.ndarray, context_len: int, step: int, train_cfg: TrainConfig
    ) -> None:
        """At least ``batch_size`` windows of 2 * context_len + 1 tokens."""
        self.n_batches(train, context_len, step, train_cfg)
        window, size = 2 * context_len + 1, train_cfg.batch_size
        n_windows = count_windows(len(train), window, step)
        if n_windows < size:
            raise DataError(
                f"train.batch_size={size} cannot be filled: the train split's "
                f"{len(train):,} tokens give {n_windows:,} fill-blank windows of "
                f"2 * context_len + 1 = {window} every data.step={step}; lower "
                "train.batch_size, data.step or data.context_len"
            )

    def batches(
        self,
        train: np.ndarray,
        context_len: int,
        step: int,
        train_cfg: TrainConfig,
        epoch: int,
    ) -> Iterator[Batch]:
        n = self.n_batches(train, context_len, step, train_cfg)
        rng = epoch_rng(train_cfg.seed, epoch)
        windows = iter_batches(train, 2 * context_len + 1, step, train_cfg.batch_size, rng)
        for _, window in zip(range(n), windows, strict=False):
            yield Batch(window, window.copy())

    def forward(
        self, model: TorchSequenceModel, batch: Batch, state: State, progress: float
    ) -> tuple[torch.Tensor, State]:
        x = torch.from_numpy(np.ascontiguousarray(batch.inputs)).to(model.device)
        logits = model.fill_blank_logits(x)
        expected = (*x.shape, model.vocab_size)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise PluginError(
                f"{type(model).__name__}.fill_blank_logits returned {got}, expected {expected}"
            )
        return logits, None

    # ---- scoring ---------------------------------------------------------------------
    def tokens_per_char(self, corpus: EncodedCorpus, split: str) -> float:
        positions = self.positions(corpus, split)
        return len(positions) / max(blank_chars(corpus, split, positions), 1)

    def positions(self, corpus: EncodedCorpus, split: str) -> np.ndarray:
        """The blanks scored on ``split``: the same for every model."""
        start, stop = corpus.span(split)
        return blank_positions(start, stop, corpus.config.context_len, self.options.max_positions)

    def score(
        self, model: SequenceModel, corpus: EncodedCorpus, split: str, carry_state: bool
    ) -> Scores:
        """Every blank of :meth:`positions`, from ``context_len`` tokens each side (the
        left ones only for a next-token plugin); ``carry_state`` does not apply."""
        from pipeline_core.metrics import (
            _concat,
            charge_spelling,
            check_log_proba,
            summarize,
            target_scores,
        )

        positions = self.positions(corpus, split)
        c = corpus.config.context_len
        if len(positions) == 0:
            start, stop = corpus.span(split)
            raise DataError(
                f"fill-blank: the {split} split has {stop - start} tokens, too few for a "
                f"blank with context_len={c} tokens on each side ({2 * c + 1} needed)"
            )
        windows = np.lib.stride_tricks.sliding_window_view(corpus.ids, 2 * c + 1)
        parts = []
        for first in range(0, len(positions), SCORE_BATCH):
            rows = windows[positions[first : first + SCORE_BATCH] - c].astype(np.int64)
            lp = blank_log_proba(model, rows[:, :c], rows[:, c + 1 :])
            check_log_proba(lp, len(rows), model.vocab_size, model, first)
            parts.append(target_scores(lp, rows[:, c]))
        scores = _concat(parts)
        bad = np.flatnonzero(~np.isfinite(scores.logp))
        if bad.size:
            raise DataError(
                f"{type(model).__name__} gives zero probability to {bad.size} blank(s) "
                f"(first at blank {int(bad[0])}); use a smoothed model"
            )
        scores = charge_spelling(scores, corpus, positions)
        return summarize(scores, blank_chars(corpus, split, positions))
