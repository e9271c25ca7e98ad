"""LSTM language model: embedding -> LSTM -> linear, trained by the one Trainer.

The LSTM's gates keep the gradient alive across time steps where a vanilla RNN's
vanishes; this plugin is the tutorial's recommended fix, as a next-token model. It
carries its (h, c) state, so it can train by truncated BPTT over contiguous streams
(``train.bptt: stateful``) and score a split in one O(N) pass.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from seqlab.api import PluginConfig, State, TaskKind, TorchSequenceModel


class LSTMConfig(PluginConfig):
    """Sizes of the network; dropout applies between stacked layers and before the head."""

    embedding_dim: int = Field(default=64, ge=1)
    hidden_size: int = Field(default=256, ge=1)
    num_layers: int = Field(default=1, ge=1, le=8)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class LSTMModel(TorchSequenceModel):
    """Embedding -> LSTM -> dropout -> linear over the vocabulary; carries (h, c)."""

    config_class: ClassVar[type[PluginConfig]] = LSTMConfig
    task_kinds: ClassVar[frozenset[TaskKind]] = frozenset({"next-token"})
    test_params: ClassVar[dict[str, Any]] = {"embedding_dim": 8, "hidden_size": 16}
    stateful: ClassVar[bool] = True
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

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        hidden, state = self.lstm(self.embedding(x), state)
        return self.head(self.dropout(hidden)), state
