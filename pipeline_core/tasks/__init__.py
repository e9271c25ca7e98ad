"""Tasks as their own layer, a small registry like fairseq's.

A task decides three things, so that neither the contract, the trainer nor the metrics
special-case one: how training batches and their target masks are built (positions
without a loss hold :data:`IGNORE`, as ``ignore_index`` does in PyTorch), which plugin
method it needs (``method``), and how a split is scored with the one metric.

``seqlab run --task NAME`` picks one; a plugin that does not declare the task in its
``task_kinds`` is refused before any run starts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pipeline_core.errors import ConfigError, PluginError

if TYPE_CHECKING:
    from pipeline_core.config import TrainConfig
    from pipeline_core.contract import SequenceModel
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

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE).sum())


class Task(ABC):
    """One task: batches for training, the plugin method it needs, and its scoring."""

    name: ClassVar[str]
    #: the plugin method this task's scoring asks for (the kit checks it exists)
    method: ClassVar[str]

    def check_plugin(self, plugin_cls: type[Any], label: str) -> None:
        """Refuse a plugin that does not declare this task (one line, before any run)."""
        kinds: frozenset[str] = frozenset(getattr(plugin_cls, "task_kinds", ()))
        if self.name not in kinds:
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


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown one is a one-line error listing the known."""
    _load_builtins()
    if name not in _TASKS:
        raise ConfigError(f"--task: unknown task '{name}'; known tasks: {', '.join(known_tasks())}")
    return _TASKS[name]()


def _load_builtins() -> None:
    from pipeline_core.tasks import next_token  # noqa: F401  (registers itself)
