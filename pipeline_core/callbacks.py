"""Trainer callbacks that reach MLflow: per-epoch figures, per-epoch checkpoints, and
the tutorial's per-iteration greedy samples.

They live apart from the Trainer (which knows no tracker) and take a Tracker and a run.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline_core.contract import EpochRecord, SequenceModel, load_weights_only, write_torch
from pipeline_core.errors import DataError
from pipeline_core.tracking import RunRef, Tracker
from pipeline_core.training import Callback, Trainer
from pipeline_core.vectorize import EncodedCorpus, detokenize

LN2 = math.log(2.0)
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "last.pt"
TRAINER_FORMAT = 1


def epoch_metrics(record: EpochRecord, val_tokens_per_char: float) -> dict[str, float]:
    """Per-epoch names, the same for every plugin (MLflow's compare view lines them up)."""
    return {
        "train_nll": record.train_nll,
        "val_nll": record.val_nll,
        "val_bpc": record.val_nll / LN2 * val_tokens_per_char,
        "grad_norm": record.grad_norm,
        "tokens_per_s": record.tokens_per_s,
        "epoch_seconds": record.seconds,
        "lr": record.lr,
    }


class MlflowMetrics(Callback):
    """Log each epoch's figures to ``run`` at step = epoch."""

    def __init__(self, tracker: Tracker, run: RunRef, val_tokens_per_char: float) -> None:
        self.tracker, self.run, self.ratio = tracker, run, val_tokens_per_char

    def on_epoch_end(self, trainer: Trainer | None, record: EpochRecord) -> None:
        self.tracker.log_metrics(self.run, epoch_metrics(record, self.ratio), step=record.epoch)


class MlflowCheckpoint(Callback):
    """After every epoch: the Trainer's whole state as ``checkpoints/last.pt``."""

    def __init__(self, tracker: Tracker, run: RunRef) -> None:
        self.tracker, self.run = tracker, run

    def on_epoch_end(self, trainer: Trainer | None, record: EpochRecord) -> None:
        if trainer is None:
            return
        payload = {"format": TRAINER_FORMAT, "trainer": trainer.checkpoint_state()}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / CHECKPOINT_FILE
            write_torch(payload, path)
            self.tracker.log_file(self.run, path, CHECKPOINT_DIR)


def load_trainer_checkpoint(tracker: Tracker, run: RunRef) -> dict[str, Any] | None:
    """The last per-epoch checkpoint of ``run``; None if absent or unreadable (a kill
    while it was being written), in which case the model restarts from scratch."""
    with tempfile.TemporaryDirectory() as tmp:
        path = tracker.download(run, f"{CHECKPOINT_DIR}/{CHECKPOINT_FILE}", tmp)
        if path is None or not path.is_file():
            return None
        try:
            payload = load_weights_only(path)  # a hostile pickle is refused, not run
        except DataError:
            return None
    if not isinstance(payload, dict) or payload.get("format") != TRAINER_FORMAT:
        return None
    state = payload.get("trainer")
    return state if isinstance(state, dict) else None


ITERATIONS_DIR = "iterations"


def iteration_sample(
    model: SequenceModel, corpus: EncodedCorpus, n_tokens: int, seed: int, epoch: int
) -> str:
    """The tutorial's report after each iteration: a random seed window of the train
    split, then ``n_tokens`` greedy (argmax) tokens generated from it."""
    from pipeline_core.generation import generate

    ctx = corpus.config.context_len
    train = corpus.train
    rng = np.random.default_rng([seed, epoch, 7])
    start = int(rng.integers(0, max(len(train) - ctx, 1)))
    prompt = train[start : start + ctx].astype(np.int64)
    ids = generate(model, prompt, n_tokens, ctx, temperature=0.0, seed=seed)
    seed_text = detokenize(corpus.vocab.decode(prompt), corpus.level)
    text = detokenize(corpus.vocab.decode(ids), corpus.level)
    return f"Iteration #: {epoch - 1}\nGenerating from seed: {seed_text}\n{seed_text}{text}\n"


class IterationSamples(Callback):
    """After every epoch (an iteration of the tutorial's loop, numbered from 0 as it
    prints them): ``iterations/iteration_NNN.txt``, one file per epoch, so a resumed
    run keeps the earlier ones."""

    def __init__(
        self,
        tracker: Tracker,
        run: RunRef,
        model: SequenceModel,
        corpus: EncodedCorpus,
        n_tokens: int,
        seed: int,
    ) -> None:
        self.tracker, self.run, self.model = tracker, run, model
        self.corpus, self.n_tokens, self.seed = corpus, n_tokens, seed

    def on_epoch_end(self, trainer: Trainer | None, record: EpochRecord) -> None:
        text = iteration_sample(self.model, self.corpus, self.n_tokens, self.seed, record.epoch)
        name = f"{ITERATIONS_DIR}/iteration_{record.epoch - 1:03d}.txt"
        self.tracker.log_text(self.run, text, name)
