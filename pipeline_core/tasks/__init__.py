"""Tasks as their own layer, a small registry like fairseq's.

A task decides three things, so that neither the contract, the trainer nor the metrics
special-case one: how training batches and their target masks are built (positions
without a loss hold :data:`IGNORE`, as ``ignore_index`` does in PyTorch), which plugin
method it needs (``method``), and how a split is scored with the one metric.

``seqlab run --task NAME`` picks one; a plugin that does not declare the task in its
``task_kinds`` is refused before any run starts.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from pipeline_core.errors import ConfigError, DataError, PluginError

if TYPE_CHECKING:
    from pipeline_core.config import TrainConfig
    from pipeline_core.contract import SequenceModel, State, TorchSequenceModel
    from pipeline_core.diagnostics import GradientFlow
    from pipeline_core.metrics import Scores
    from pipeline_core.vectorize import EncodedCorpus

#: Target value of a position that carries no loss (PyTorch's default ignore_index).
IGNORE = -100


@dataclass(frozen=True)
class Batch:
    """Inputs (B, T) and targets (B, T), IGNORE where no loss; ``carry``: continue the
    state left by the previous batch (stateful BPTT) instead of starting fresh."""

    inputs: np.ndarray
    targets: np.ndarray
    carry: bool = False
    #: what a sequence-to-sequence task conditions on (B, S), ``pad`` where shorter
    source: np.ndarray | None = None
    #: sequence-level tasks: the real length of each right-padded row of ``inputs`` (B,)
    lengths: np.ndarray | None = None

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE).sum())


class TaskOptions(BaseModel):
    """Base of a task's typed options (``task_options`` in a run config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Baseline:
    """A reference row the task scores itself (e.g. transduce's copy baseline)."""

    label: str
    val: Scores
    test: Scores
    scoring: str


def capped(n_batches: int, train_cfg: TrainConfig) -> int:
    """``n_batches``, at most ``train.max_batches_per_epoch``."""
    cap = train_cfg.max_batches_per_epoch
    return n_batches if cap is None else min(n_batches, cap)


def example_batches(n_examples: int, train_cfg: TrainConfig) -> int:
    """Batches per epoch of a task trained on whole examples (pairs, labelled texts,
    numeric windows): every example once, the last batch partial, then capped."""
    return capped(-(-n_examples // train_cfg.batch_size), train_cfg)


def epoch_picks(n_examples: int, train_cfg: TrainConfig, epoch: int) -> Iterator[np.ndarray]:
    """The example indices of each batch of ``epoch`` for a task trained on whole
    examples: a fresh permutation per epoch (reproducible from the seed), cut into
    batches of ``train.batch_size``, as many as :func:`example_batches` counts."""
    from pipeline_core.tasks.next_token import epoch_rng

    order = epoch_rng(train_cfg.seed, epoch).permutation(n_examples)
    size = train_cfg.batch_size
    for i in range(example_batches(n_examples, train_cfg)):
        yield order[i * size : (i + 1) * size]


def full_length_sample(lengths: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` indices, drawn by ``seed`` and sorted, of examples of one length (the
    most common; ties: the shortest), so rows need no padding and step t is the same
    distance from every row's end (the gradient diagnostics of whole-example tasks)."""
    lengths = np.asarray(lengths)
    if not len(lengths):
        return np.empty(0, np.int64)
    values, counts = np.unique(lengths, return_counts=True)
    common = values[np.argmax(counts)]
    rows = np.flatnonzero(lengths == common)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=min(n, len(rows)), replace=False))


def check_examples_fill(
    task: str, n_examples: int, unit: str, train_cfg: TrainConfig, hint: str = ""
) -> None:
    """Refuse, in one line, what a task trained on whole examples cannot do: carried
    state across examples (each starts fresh) and a batch larger than its train set."""
    if train_cfg.bptt == "stateful":
        raise ConfigError(
            f"train.bptt: stateful does not apply to the {task} task (each {unit} starts "
            "fresh): use bptt: windows"
        )
    if n_examples < train_cfg.batch_size:
        raise DataError(
            f"train.batch_size={train_cfg.batch_size} cannot be filled: the {task} task has "
            f"{n_examples:,} train {unit}s; lower train.batch_size{hint}"
        )


class Task(ABC):
    """One task: batches for training, the plugin method it needs, and its scoring."""

    name: ClassVar[str]
    #: the plugin method this task's scoring asks for (the kit checks it exists)
    method: ClassVar[str]
    #: the task's typed options (validated from ``task_options``)
    options_class: ClassVar[type[TaskOptions]] = TaskOptions
    #: the Scores field the leaderboard ranks by, lower first
    rank_metric: ClassVar[str] = "bpc"
    #: whether the corpus's token stream is what the task scores, so its out-of-vocabulary
    #: rates belong under the leaderboard (not for classify's or regress's examples)
    scores_token_stream: ClassVar[bool] = True

    def __init__(self, options: TaskOptions | Mapping[str, Any] | None = None) -> None:
        from pipeline_core.config import validate_model

        self.options = validate_model(self.options_class, options, where="task_options")

    def __reduce__(self) -> tuple[Any, ...]:  # plain data across processes (Dask)
        return (type(self), (self.options.model_dump(),))

    def prepare(self, corpus: EncodedCorpus) -> None:  # noqa: B027  (optional hook)
        """Bind the prepared corpus before batches are asked for (transduce builds its
        pairs from it); default: nothing to do."""

    def setup_model(self, model: TorchSequenceModel) -> None:  # noqa: B027  (optional hook)
        """Add what training on this task needs before the optimizer sees the parameters
        (classify attaches its head); default: nothing."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of :meth:`forward`'s outputs against the batch's targets
        (default: cross-entropy over the positions not IGNORE; regress: squared error)."""
        from pipeline_core.training import masked_loss

        return masked_loss(outputs, targets)

    def training_task(self, plugin_cls: type[Any]) -> Task:
        """The task whose batches train ``plugin_cls`` (fill-blank trains a left-only
        model as a next-token one); default: this one."""
        return self

    def forward(
        self, model: TorchSequenceModel, batch: Batch, state: State, progress: float
    ) -> tuple[torch.Tensor, State]:
        """Logits (B, T, V) for ``batch`` aligned with its targets; ``progress`` in [0, 1]
        is how far training has gone (scheduled sampling reads it)."""
        x = torch.from_numpy(np.ascontiguousarray(batch.inputs)).to(model.device)
        return model.step(x, state)

    def scoring_label(self, plugin_cls: type[Any], carry_state: bool) -> str:
        """How a model was scored, for the leaderboard's ``scoring`` column."""
        return "carried state" if carry_state else "windows"

    def tokens_per_char(self, corpus: EncodedCorpus, split: str) -> float:
        """Scored tokens per character they cover on ``split``: turns a per-epoch nll
        into the bpc the final score reports (default: next-token's positions)."""
        from pipeline_core.metrics import scored_chars

        return len(corpus.scoring_positions(split)) / max(scored_chars(corpus, split), 1)

    def baselines(self, corpus: EncodedCorpus) -> list[Baseline]:
        """Reference rows this task scores without a plugin (none by default)."""
        return []

    def gradient_flow(
        self, model: SequenceModel, corpus: EncodedCorpus, n: int, seed: int
    ) -> GradientFlow | None:
        """‖∂L/∂h_t‖ per step on ``n`` val inputs drawn by ``seed``, with the task's own
        loss at the last step (default: the next-token loss after windows of
        ``data.context_len`` tokens); None where the model exposes no states."""
        from pipeline_core.diagnostics import gradient_flow, sample_windows

        windows = sample_windows(corpus.val, corpus.config.context_len, n, seed)
        return gradient_flow(model, windows) if len(windows) else None

    def checkpoint_extra(self) -> dict[str, Any]:
        """Plain data a model's checkpoint records as ``extra.task`` (after
        :meth:`prepare`): the task's name and options; classify and regress add what
        serving and scoring the checkpoint need (labels, scaling)."""
        return {"name": self.name, "options": self.options.model_dump(mode="json")}

    def accepts(self, kinds: frozenset[str]) -> bool:
        """Whether a plugin declaring ``kinds`` can run this task (default: it declares
        the task; fill-blank also scores next-token plugins, from the left only)."""
        return self.name in kinds

    def check_plugin(self, plugin_cls: type[Any], label: str) -> None:
        """Refuse a plugin this task cannot run (one line, before any run)."""
        kinds: frozenset[str] = frozenset(getattr(plugin_cls, "task_kinds", ()))
        if not self.accepts(kinds):
            declared = ", ".join(sorted(kinds)) or "none"
            raise PluginError(
                f"model '{label}' does not support the {self.name} task (it declares: {declared})"
            )

    @abstractmethod
    def n_batches(
        self, train: np.ndarray, context_len: int, step: int, train_cfg: TrainConfig
    ) -> int:
        """Batches in one epoch (raises DataError, with the numbers, when none fit)."""

    def check_fill(
        self, train: np.ndarray, context_len: int, step: int, train_cfg: TrainConfig
    ) -> None:
        """Before any run starts: refuse, with the numbers, settings whose batches the
        train split cannot fill (default: that at least one batch exists)."""
        self.n_batches(train, context_len, step, train_cfg)

    @abstractmethod
    def batches(
        self,
        train: np.ndarray,
        context_len: int,
        step: int,
        train_cfg: TrainConfig,
        epoch: int,
    ) -> Iterator[Batch]:
        """The batches of ``epoch`` (1-based), reproducible from the seed and the epoch."""

    @abstractmethod
    def score(
        self, model: SequenceModel, corpus: EncodedCorpus, split: str, carry_state: bool
    ) -> Scores:
        """The one metric on ``split``: the same positions for every model."""


class ExampleTask(Task):
    """A sequence-level task trained and scored on whole examples (classify, regress):
    each example one row of the batch, its output read from the model's summary of it.
    Subclasses say how many train examples there are and what the summary gives."""

    scores_token_stream: ClassVar[bool] = False

    @abstractmethod
    def n_train_examples(self) -> int:
        """Examples in the train split (after :meth:`prepare`)."""

    @abstractmethod
    def summary_outputs(
        self, model: TorchSequenceModel, x: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """The outputs :meth:`loss` compares with the batch's targets, for padded rows
        ``x`` whose true lengths are ``lengths``."""

    def n_batches(
        self, train: np.ndarray, context_len: int, step: int, train_cfg: TrainConfig
    ) -> int:
        return example_batches(self.n_train_examples(), train_cfg)

    def check_fill(
        self, train: np.ndarray, context_len: int, step: int, train_cfg: TrainConfig
    ) -> None:
        check_examples_fill(self.name, self.n_train_examples(), "example", train_cfg)

    def forward(
        self, model: TorchSequenceModel, batch: Batch, state: State, progress: float
    ) -> tuple[torch.Tensor, State]:
        """Whole examples start fresh: no state in, none out."""
        if batch.lengths is None:
            raise DataError(f"a {self.name} batch needs its lengths")
        x = torch.from_numpy(np.ascontiguousarray(batch.inputs)).to(model.device)
        lengths = torch.from_numpy(np.ascontiguousarray(batch.lengths))
        return self.summary_outputs(model, x, lengths), None

    def scoring_label(self, plugin_cls: type[Any], carry_state: bool) -> str:
        return "summary"

    def tokens_per_char(self, corpus: EncodedCorpus, split: str) -> float:
        return math.nan  # a per-example loss has no bits per character


_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` reachable by ``cls.name``; a duplicate is an error."""
    if cls.name in _TASKS and _TASKS[cls.name] is not cls:
        raise PluginError(f"task '{cls.name}' is registered twice")
    _TASKS[cls.name] = cls
    return cls


def known_tasks() -> list[str]:
    _load_builtins()
    return sorted(_TASKS)


def get_task(name: str, options: TaskOptions | Mapping[str, Any] | None = None) -> Task:
    """The task called ``name`` with its options; an unknown one is a one-line error
    listing the known."""
    _load_builtins()
    if name not in _TASKS:
        raise ConfigError(f"--task: unknown task '{name}'; known tasks: {', '.join(known_tasks())}")
    return _TASKS[name](options)


def as_task(task: str | Task) -> Task:
    """A Task as given, or the one named (with default options)."""
    return task if isinstance(task, Task) else get_task(task)


def _load_builtins() -> None:
    from pipeline_core.tasks import (  # noqa: F401  (register)
        classify,
        fill_blank,
        next_token,
        regress,
        transduce,
    )
