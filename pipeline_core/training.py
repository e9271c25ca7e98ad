"""The one Trainer for every torch plugin, as small as minGPT's, and knowing no plugin.

It takes a model, a task (which builds the batches and their target masks) and a
:class:`TrainConfig`; everything else attaches through callbacks: the progress bar,
MLflow logging, per-epoch checkpoints and early stopping. Teacher forcing, Adam or
RMSprop, clipping by value and/or norm (if ‖g‖ > C then g <- g·C/‖g‖), truncated BPTT
with the state carried across batches for stateful plugins, a learning-rate schedule,
and a state (weights, optimizer, schedule, RNG, epoch, best figure) that a checkpoint
holds so an interrupted run resumes exactly.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

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
from pipeline_core.contract import (
    EpochRecord,
    FitData,
    SequenceModel,
    TorchSequenceModel,
    detach_state,
)
from pipeline_core.errors import ConfigError, DataError
from pipeline_core.interrupt import raise_if_stopped
from pipeline_core.tasks import IGNORE, Task, get_task

Validator = Callable[[SequenceModel], float]


class TrainingDiverged(DataError):
    """The loss became NaN or infinite: that model stops, with a hint."""


def resolve_device(choice: str) -> torch.device:
    """``auto`` picks CUDA when torch sees one; ``cuda`` without one is a user error."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but torch sees no CUDA device")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def check_trainable(plugin: type[Any] | SequenceModel, settings: TrainConfig, label: str) -> None:
    """Refuse, before anything runs, settings the plugin (class or model) cannot honour."""
    cls = plugin if isinstance(plugin, type) else type(plugin)
    if settings.bptt == "stateful" and issubclass(cls, TorchSequenceModel) and not cls.stateful:
        raise ConfigError(
            f"train.bptt: stateful needs a plugin that carries state; model '{label}' "
            f"({cls.__name__}) has none: use bptt: windows"
        )
    resolve_device(settings.device)


def make_optimizer(model: torch.nn.Module, settings: TrainConfig) -> torch.optim.Optimizer:
    if settings.optimizer == "rmsprop":
        # Keras' RMSprop (the tutorial's): rho 0.9 and epsilon 1e-7 (torch defaults to
        # alpha 0.99 and 1e-8, a slower-moving average)
        return torch.optim.RMSprop(
            model.parameters(),
            lr=settings.lr,
            alpha=0.9,
            eps=1e-7,
            weight_decay=settings.weight_decay,
        )
    if settings.weight_decay:
        # decoupled (Loshchilov & Hutter): Adam's L2 term would be rescaled per weight
        return torch.optim.AdamW(
            model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
        )
    return torch.optim.Adam(model.parameters(), lr=settings.lr)


def make_scheduler(optimizer: torch.optim.Optimizer, settings: TrainConfig) -> Any:
    if settings.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs)
    if settings.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    return None


def clip_gradients(model: torch.nn.Module, settings: TrainConfig) -> float:
    """Clip by value, then by norm; return the norm measured before norm clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if settings.clip_value is not None:
        torch.nn.utils.clip_grad_value_(params, settings.clip_value)
    max_norm = settings.clip_norm if settings.clip_norm is not None else float("inf")
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


def masked_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose target is not IGNORE."""
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE
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


def epoch_seed(seed: int, epoch: int) -> int:
    """Dropout's RNG is reseeded per epoch, so an epoch replays exactly on resume."""
    return (seed * 1_000_003 + epoch) % 2**63


# ---- callbacks ----------------------------------------------------------------------
class Callback:
    """Hooks the Trainer calls; ``trainer`` is None for count-based models."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first epoch (or the first resumed one)."""

    def on_batch_end(self, trainer: Trainer, batch: int, loss: float) -> None:
        """After each optimizer step."""

    def on_epoch_end(self, trainer: Trainer | None, record: EpochRecord) -> None:
        """After each epoch's validation."""

    def on_train_end(self, trainer: Trainer | None) -> None:
        """Once, after the last epoch or an early stop."""


class ProgressCallback(Callback):
    """A rich progress bar per epoch, with the running loss."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self.task_id: Any = None
        self.recent: list[float] = []

    def on_train_start(self, trainer: Trainer) -> None:
        self.bar.start()

    def on_batch_end(self, trainer: Trainer, batch: int, loss: float) -> None:
        if batch == 0:
            name = type(trainer.model).__name__
            self.task_id = self.bar.add_task(
                f"{name} epoch {trainer.epoch + 1}", total=trainer.n_batches, loss=loss
            )
            self.recent = []
        self.recent = [*self.recent[-49:], loss]
        self.bar.update(self.task_id, advance=1, loss=float(np.mean(self.recent)))

    def on_train_end(self, trainer: Trainer | None) -> None:
        self.bar.stop()


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without a better val nll; restore the best weights.

    Its figures live in ``trainer.state`` so a checkpoint carries them across a resume."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_epoch_end(self, trainer: Trainer | None, record: EpochRecord) -> None:
        if trainer is None or not math.isfinite(record.val_nll):
            return
        st = trainer.state
        if record.val_nll < st.best_val:
            st.best_val, st.best_epoch, st.bad_epochs = record.val_nll, record.epoch, 0
            st.best_weights = copy.deepcopy(trainer.model.state_dict())
        else:
            st.bad_epochs += 1
            if st.bad_epochs >= self.patience:
                st.stop = True

    def on_train_end(self, trainer: Trainer | None) -> None:
        if trainer is not None and trainer.state.best_weights is not None:
            trainer.model.load_state_dict(trainer.state.best_weights)


class StopOnSignal(Callback):
    """End training at the next batch once Ctrl-C or SIGTERM asked the run to stop
    (:mod:`pipeline_core.interrupt`): the Trainer may run on a worker thread, which
    Python's KeyboardInterrupt never reaches."""

    def on_batch_end(self, trainer: Trainer, batch: int, loss: float) -> None:
        raise_if_stopped()


@dataclass
class TrainerState:
    """What, beside weights and optimizer, a resume needs."""

    epoch: int = 0
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stop: bool = False
    best_weights: dict[str, torch.Tensor] | None = None
    history: list[EpochRecord] = field(default_factory=list)


class Trainer:
    """Fit a :class:`TorchSequenceModel` on a task's batches; callbacks do the rest."""

    def __init__(
        self,
        model: TorchSequenceModel,
        data: FitData,
        settings: TrainConfig,
        task: Task | None = None,
        callbacks: Sequence[Callback] = (),
        validate: Validator | None = None,
    ) -> None:
        check_trainable(model, settings, type(model).__name__)
        self.model = model
        self.data = data
        self.settings = settings
        # fill-blank trains a left-only plugin as a next-token one: the task decides
        self.task = (task or get_task("next-token")).training_task(type(model))
        self.device = resolve_device(settings.device)
        self.validate = validate or default_validator(data, settings)
        extra: list[Callback] = [StopOnSignal()]
        if settings.patience is not None:
            extra.append(EarlyStopping(settings.patience))
        if settings.progress:
            extra.append(ProgressCallback())
        self.callbacks = [*extra, *callbacks]
        self.task.setup_model(model)  # e.g. classify's head, before the optimizer
        model.to(self.device)
        self.optimizer = make_optimizer(model, settings)
        self.scheduler = make_scheduler(self.optimizer, settings)
        self.state = TrainerState()
        self.n_batches = self.task.n_batches(data.train, data.context_len, data.step, settings)

    @property
    def epoch(self) -> int:
        """Epochs completed so far."""
        return self.state.epoch

    # ---- the loop ----------------------------------------------------------------------
    def fit(self) -> list[EpochRecord]:
        s = self.settings
        with torch_threads(s.num_threads):
            for cb in self.callbacks:
                cb.on_train_start(self)
            try:
                while self.state.epoch < s.epochs and not self.state.stop:
                    record = self.run_epoch(self.state.epoch + 1)
                    self.state.epoch = record.epoch
                    self.state.history.append(record)
                    self.step_scheduler(record.val_nll)
                    for cb in self.callbacks:
                        cb.on_epoch_end(self, record)
            finally:
                for cb in self.callbacks:
                    cb.on_train_end(self)
        self.model.to("cpu")
        self.model.eval()
        self.model.mark_fitted()
        return list(self.state.history)

    def run_epoch(self, epoch: int) -> EpochRecord:
        s, model = self.settings, self.model
        torch.manual_seed(epoch_seed(s.seed, epoch))
        model.train()
        started = time.perf_counter()
        losses: list[float] = []
        norms: list[float] = []
        tokens = 0
        state: Any = None
        lr = float(self.optimizer.param_groups[0]["lr"])
        batches = self.task.batches(
            self.data.train, self.data.context_len, self.data.step, s, epoch
        )
        for i, batch in enumerate(batches):
            y = torch.from_numpy(np.ascontiguousarray(batch.targets)).to(self.device)
            if not batch.carry:
                state = None
            self.optimizer.zero_grad(set_to_none=True)
            progress = (epoch - 1 + i / max(self.n_batches, 1)) / max(s.epochs, 1)
            logits, state = self.task.forward(model, batch, state, progress)
            state = detach_state(state)
            loss = self.task.loss(logits, y)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch}, batch {i + 1} (loss {loss.item()}); "
                    "lower train.lr or set train.clip_norm"
                )
            loss.backward()
            norms.append(clip_gradients(model, s))
            self.optimizer.step()
            value = float(loss.item())
            losses.append(value)
            tokens += batch.n_targets
            for cb in self.callbacks:
                cb.on_batch_end(self, i, value)
        seconds = time.perf_counter() - started
        model.eval()
        val_nll = self.validate(model)
        return EpochRecord(
            epoch=epoch,
            train_nll=float(np.mean(losses)) if losses else float("nan"),
            val_nll=val_nll,
            grad_norm=float(np.mean(norms)) if norms else float("nan"),
            tokens_per_s=tokens / seconds if seconds > 0 else float("nan"),
            seconds=seconds,
            lr=lr,
        )

    def step_scheduler(self, val_nll: float) -> None:
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if math.isfinite(val_nll):
                self.scheduler.step(val_nll)
        else:
            self.scheduler.step()

    # ---- checkpoints -------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything an exact resume needs, in types ``weights_only=True`` loads."""
        st = self.state
        return {
            "weights": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "torch_rng": torch.get_rng_state(),
            "epoch": st.epoch,
            "best_val": st.best_val,
            "best_epoch": st.best_epoch,
            "bad_epochs": st.bad_epochs,
            "stop": st.stop,
            "best_weights": st.best_weights or {},
            "history": [asdict(r) for r in st.history],
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from :meth:`checkpoint_state`'s result: the next epoch is saved+1."""
        self.model.load_state_dict(saved["weights"])
        self.model.to(self.device)
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None and saved["scheduler"]:
            self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        self.state = TrainerState(
            epoch=int(saved["epoch"]),
            best_val=float(saved["best_val"]),
            best_epoch=int(saved["best_epoch"]),
            bad_epochs=int(saved["bad_epochs"]),
            stop=bool(saved["stop"]),
            best_weights=dict(saved["best_weights"]) or None,
            history=[EpochRecord(**r) for r in saved["history"]],
        )


def default_validator(data: FitData, settings: TrainConfig | None = None) -> Validator:
    """Mean val nll over windows of the val split (the experiment passes the task's own
    scorer instead, so per-epoch and final figures agree). A stateful plugin trained by
    stateful BPTT is scored as seqlab scores it, in one pass with its state carried from
    the train split's last ``context_len`` tokens: O(N) per epoch, where windows cost
    O(N x context_len) (a mixture's neural component is trained this way)."""

    def validate(model: SequenceModel) -> float:
        from pipeline_core.metrics import can_carry_state, score_stream, stream_nll

        if data.val is None:
            return float("nan")
        stateful = settings is not None and settings.bptt == "stateful"
        if stateful and isinstance(model, TorchSequenceModel) and can_carry_state(model):
            tail = np.asarray(data.train, dtype=np.int64)[-max(1, data.context_len) :]
            first = max(1, len(tail))  # the stream's first token has nothing before it
            stream = np.concatenate([tail, np.asarray(data.val, dtype=np.int64)])
            if len(stream) <= first:  # no val token to score
                return float("nan")
            return float(-score_stream(model, stream, first).logp.mean())
        return stream_nll(model, data.val, data.context_len)

    return validate


def fit_model(
    model: SequenceModel,
    data: FitData,
    settings: TrainConfig,
    task: Task | None = None,
    callbacks: Sequence[Callback] = (),
    validate: Validator | None = None,
    resume_from: dict[str, Any] | None = None,
) -> list[EpochRecord]:
    """Fit any plugin: neural ones by the Trainer, count-based ones by their own ``fit``
    (which never sees ``settings``); callbacks see the same records either way."""
    if isinstance(model, TorchSequenceModel):
        trainer = Trainer(model, data, settings, task, callbacks, validate)
        if resume_from is not None:
            trainer.restore(resume_from)
        return trainer.fit()
    records = model.fit(data)
    if validate is not None and records:
        last = records[-1]
        records[-1] = EpochRecord(**{**asdict(last), "val_nll": validate(model)})
    for record in records:
        for cb in callbacks:
            cb.on_epoch_end(None, record)
    for cb in callbacks:
        cb.on_train_end(None)
    return records


def train(
    model: SequenceModel,
    data: FitData,
    settings: TrainConfig | None = None,
    callbacks: Sequence[Callback] = (),
) -> list[EpochRecord]:
    """The public entry point (``seqlab.api.train``): fit ``model`` on ``data``."""
    return fit_model(model, data, settings or TrainConfig(), callbacks=callbacks)
