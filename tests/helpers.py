"""Small reference models for tests: exact distributions we can compute by hand."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from pipeline_core.contract import (
    EpochCallback,
    EpochRecord,
    FitData,
    PluginConfig,
    SequenceModel,
    TorchSequenceModel,
)


class BigramTable(SequenceModel):
    """p(next | last token) from add-one counts: simple enough to recompute in a test."""

    def __init__(self, vocab_size: int, config: Any = None) -> None:
        super().__init__(vocab_size, config)
        self.table: np.ndarray | None = None

    def fit(self, data: FitData, on_epoch: EpochCallback | None = None) -> list[EpochRecord]:
        counts = np.ones((self.vocab_size, self.vocab_size))
        np.add.at(counts, (data.train[:-1].astype(int), data.train[1:].astype(int)), 1)
        self.table = np.log(counts / counts.sum(axis=1, keepdims=True))
        return [EpochRecord(1, float("nan"), float("nan"))]

    def log_proba(self, contexts: np.ndarray) -> np.ndarray:
        assert self.table is not None
        return self.table[np.asarray(contexts)[:, -1]]

    @property
    def is_fitted(self) -> bool:
        return self.table is not None

    def get_state(self) -> dict[str, torch.Tensor]:
        return {} if self.table is None else {"table": torch.from_numpy(self.table)}

    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self.table = state["table"].numpy()


class Uniform(BigramTable):
    """Every token equally likely: bpc is exactly log2(V) per token."""

    def log_proba(self, contexts: np.ndarray) -> np.ndarray:
        return np.full((len(contexts), self.vocab_size), -np.log(self.vocab_size))


class StatelessGRU(TorchSequenceModel):
    """A neural plugin without carried state (forward(x) -> logits only)."""

    config_class = PluginConfig

    def __init__(self, vocab_size: int, config: Any = None) -> None:
        super().__init__(vocab_size, config)
        self.embedding = torch.nn.Embedding(vocab_size, 8)
        self.gru = torch.nn.GRU(8, 16, batch_first=True)
        self.head = torch.nn.Linear(16, vocab_size)

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        hidden, _ = self.gru(self.embedding(x))
        return self.head(hidden)
