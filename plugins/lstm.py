"""LSTM language model: embedding -> LSTM -> linear, trained by the one trainer.

The LSTM's gates keep the gradient alive across time steps where a vanilla RNN's
vanishes; this plugin is the tutorial's recommended fix, as a next-token model.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from pipeline_core.contract import PluginConfig, TaskKind, TorchSequenceModel


class LSTMConfig(PluginConfig):
    """Sizes of the network; dropout applies between stacked layers and before the head."""

    embedding_dim: int = Field(default=64, ge=1)
    hidden_size: int = Field(default=256, ge=1)
    num_layers: int = Field(default=1, ge=1, le=8)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class LSTMModel(TorchSequenceModel):
    """Embedding -> LSTM -> dropout -> linear over the vocabulary."""

    config_class: ClassVar[type[PluginConfig]] = LSTMConfig
    task_kinds: ClassVar[frozenset[TaskKind]] = frozenset({"next-token"})
    test_params: ClassVar[dict[str, Any]] = {"embedding_dim": 8, "hidden_size": 16}
    config: LSTMConfig

    def __init__(self, vocab_size: int, config: LSTMConfig | dict[str, Any] | None = None):
        super().__init__(vocab_size, config)
        cfg = self.config
        self.embedding = torch.nn.Embedding(vocab_size, cfg.embedding_dim)
        self.lstm = torch.nn.LSTM(
            cfg.embedding_dim,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.dropout = torch.nn.Dropout(cfg.dropout)
        self.head = torch.nn.Linear(cfg.hidden_size, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(self.embedding(x))
        return self.head(self.dropout(hidden))
