"""``next-token``: predict token t+1 from what precedes it (the tutorial's task).

Objectives: ``last`` puts one label on each window (Keras' ``return_sequences=False``,
the tutorial's setup), ``all`` a label on every position (teacher forcing). With
``bptt: stateful`` the train split is cut into B contiguous streams (char-rnn's and
word_language_model's batchify) read in order, so the trainer can carry the state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from pipeline_core.errors import DataError
from pipeline_core.tasks import IGNORE, Batch, Task, capped, register_task
from pipeline_core.vectorize import count_windows, iter_batches

if TYPE_CHECKING:
    from pipeline_core.config import TrainConfig
    from pipeline_core.contract import SequenceModel
    from pipeline_core.metrics import Scores
    from pipeline_core.vectorize import EncodedCorpus


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """Batch order of one epoch, from the seed and the epoch alone (so resume is exact)."""
    return np.random.default_rng([seed, epoch])


def mask_objective(targets: np.ndarray, objective: str) -> np.ndarray:
    """Keep every target (``all``) or only the last column (``last``)."""
    if objective == "all":
        return targets
    masked = np.full_like(targets, IGNORE)
    masked[:, -1] = targets[:, -1]
    return masked


def stream_layout(n_ids: int, batch_size: int, context_len: int) -> tuple[int, int]:
    """(streams, stream length) for stateful BPTT; DataError with the numbers if empty."""
    length = (n_ids - 1) // batch_size
    if length < 1:
        raise DataError(
            f"bptt stateful: the train split has {n_ids} tokens, too few for "
            f"batch_size {batch_size} streams; lower train.batch_size"
        )
    return batch_size, length


@register_task
class NextTokenTask(Task):
    name = "next-token"
    method = "log_proba"

    def n_batches(
        self, train: np.ndarray, context_len: int, step: int, train_cfg: TrainConfig
    ) -> int:
        if train_cfg.bptt == "stateful":
            _, length = stream_layout(len(train), train_cfg.batch_size, context_len)
            n = -(-length // context_len)
        else:
            window = context_len + 1
            n_windows = count_windows(len(train), window, step)
            if n_windows == 0:
                raise DataError(
                    f"train split has {len(train)} tokens, fewer than context_len + 1 = {window}"
                )
            n = -(-n_windows // train_cfg.batch_size)
        return capped(n, train_cfg)

    def check_fill(
        self, train: np.ndarray, context_len: int, step: int, train_cfg: TrainConfig
    ) -> None:
        """Windows: at least ``batch_size`` of them; stateful: ``batch_size`` streams of
        at least ``context_len`` tokens each. Otherwise a DataError with the numbers."""
        self.n_batches(train, context_len, step, train_cfg)
        n, size = len(train), train_cfg.batch_size
        if train_cfg.bptt == "stateful":
            _, length = stream_layout(n, size, context_len)
            if length < context_len:
                raise DataError(
                    f"train.bptt stateful: the train split's {n:,} tokens cut into "
                    f"train.batch_size={size} streams give {length:,} tokens each, fewer "
                    f"than data.context_len={context_len}; lower train.batch_size or "
                    "data.context_len"
                )
            return
        window = context_len + 1
        n_windows = count_windows(n, window, step)
        if n_windows < size:
            raise DataError(
                f"train.batch_size={size} cannot be filled: the train split's {n:,} tokens "
                f"give {n_windows:,} windows of context_len + 1 = {window} every "
                f"data.step={step}; lower train.batch_size, data.step or data.context_len"
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
        if train_cfg.bptt == "stateful":
            streams, length = stream_layout(len(train), train_cfg.batch_size, context_len)
            ids = train.astype(np.int64)
            x = ids[: streams * length].reshape(streams, length)
            y = ids[1 : streams * length + 1].reshape(streams, length)
            for i, start in enumerate(range(0, length, context_len)):
                if i >= n:
                    return
                stop = start + context_len
                yield Batch(
                    x[:, start:stop],
                    mask_objective(y[:, start:stop], train_cfg.objective),
                    carry=start > 0,
                )
            return
        rng = epoch_rng(train_cfg.seed, epoch)
        windows = iter_batches(train, context_len + 1, step, train_cfg.batch_size, rng)
        for _, xy in zip(range(n), windows, strict=False):
            yield Batch(xy[:, :-1], mask_objective(xy[:, 1:], train_cfg.objective))

    def score(
        self, model: SequenceModel, corpus: EncodedCorpus, split: str, carry_state: bool
    ) -> Scores:
        from pipeline_core.metrics import evaluate

        return evaluate(model, corpus, split, carry_state=carry_state)
