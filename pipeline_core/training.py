"""The one trainer for every torch plugin.

Mini-batches of windows drawn lazily from the train split, teacher forcing (position t
predicts token t+1), Adam or RMSprop, gradient clipping by value and/or by norm (if
‖g‖ > C then g <- g·C/‖g‖), a rich progress bar, and per-epoch figures.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pipeline_core.config import TrainConfig
from pipeline_core.contract import EpochCallback, EpochRecord, FitData
from pipeline_core.errors import DataError
from pipeline_core.vectorize import count_windows, iter_batches

if TYPE_CHECKING:
    from pipeline_core.contract import TorchSequenceModel


def make_optimizer(model: torch.nn.Module, settings: TrainConfig) -> torch.optim.Optimizer:
    if settings.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=settings.lr)
    return torch.optim.Adam(model.parameters(), lr=settings.lr)


def clip_gradients(model: torch.nn.Module, settings: TrainConfig) -> float:
    """Clip by value, then by norm; return the norm measured before norm clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if settings.clip_value is not None:
        torch.nn.utils.clip_grad_value_(params, settings.clip_value)
    max_norm = settings.clip_norm if settings.clip_norm is not None else float("inf")
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor, positions: str) -> torch.Tensor:
    """Cross-entropy over every position (teacher forcing) or the last one only."""
    if positions == "last":
        return torch.nn.functional.cross_entropy(logits[:, -1, :], targets[:, -1])
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    )


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op threads for the block (1 in parallel workers avoids collapse)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def train_torch_model(
    model: TorchSequenceModel,
    data: FitData,
    settings: TrainConfig,
    on_epoch: EpochCallback | None = None,
) -> list[EpochRecord]:
    """Fit ``model`` in place; return one :class:`EpochRecord` per epoch."""
    from pipeline_core.metrics import stream_nll

    window = data.context_len + 1
    n_windows = count_windows(len(data.train), window, data.step)
    if n_windows == 0:
        raise DataError(
            f"train split has {len(data.train)} tokens, fewer than context_len + 1 = {window}"
        )
    n_batches = -(-n_windows // settings.batch_size)
    if settings.max_batches_per_epoch is not None:
        n_batches = min(n_batches, settings.max_batches_per_epoch)
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    optimizer = make_optimizer(model, settings)
    history: list[EpochRecord] = []
    with torch_threads(settings.num_threads), progress_bar(settings.progress) as bar:
        for epoch in range(1, settings.epochs + 1):
            task = bar.add_task(f"{type(model).__name__} epoch {epoch}", total=n_batches, loss=0.0)
            model.train()
            started = time.perf_counter()
            losses, norms, tokens = [], [], 0
            batches = iter_batches(data.train, window, data.step, settings.batch_size, rng)
            for _, batch in zip(range(n_batches), batches, strict=False):
                xy = torch.from_numpy(batch)
                x, y = xy[:, :-1], xy[:, 1:]
                optimizer.zero_grad(set_to_none=True)
                loss = sequence_loss(model(x), y, settings.loss_positions)
                if not torch.isfinite(loss):
                    raise DataError(
                        f"training diverged at epoch {epoch} (loss {loss.item()}); "
                        "lower train.lr or set train.clip_norm"
                    )
                loss.backward()
                norms.append(clip_gradients(model, settings))
                optimizer.step()
                losses.append(loss.item())
                tokens += y.numel() if settings.loss_positions == "all" else len(y)
                bar.update(task, advance=1, loss=float(np.mean(losses[-50:])))
            seconds = time.perf_counter() - started
            val_nll = (
                stream_nll(model, data.val, data.context_len)
                if data.val is not None
                else float("nan")
            )
            record = EpochRecord(
                epoch=epoch,
                train_nll=float(np.mean(losses)),
                val_nll=val_nll,
                grad_norm=float(np.mean(norms)),
                tokens_per_s=tokens / seconds if seconds > 0 else float("nan"),
                seconds=seconds,
            )
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
    model.eval()
    return history
