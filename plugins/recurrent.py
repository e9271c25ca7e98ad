"""The recurrent family's shared body: input -> stacked recurrent layers -> dropout ->
linear over the vocabulary, carrying the recurrent state.

The input is an embedding, or the tutorial's one-hot vectors (Keras'
``input_shape=(SEQ_LEN, nb_chars)``). Each plugin (rnn, gru, lstm) names its cell only.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from seqlab.api import PluginConfig, State, TaskKind, TorchSequenceModel


class RecurrentConfig(PluginConfig):
    """Sizes of a recurrent network; dropout applies between layers and before the head."""

    input: Literal["embedding", "onehot"] = "embedding"
    embedding_dim: int = Field(default=64, ge=1)
    hidden_size: int = Field(default=256, ge=1)
    num_layers: int = Field(default=1, ge=1, le=8)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class RecurrentLM(TorchSequenceModel):
    """A next-token model around one of torch's recurrent layers."""

    config_class: ClassVar[type[PluginConfig]] = RecurrentConfig
    task_kinds: ClassVar[frozenset[TaskKind]] = frozenset({"next-token"})
    test_params: ClassVar[dict[str, Any]] = {"embedding_dim": 8, "hidden_size": 16}
    stateful: ClassVar[bool] = True
    config: RecurrentConfig

    def __init__(self, vocab_size: int, config: RecurrentConfig | dict[str, Any] | None = None):
        super().__init__(vocab_size, config)
        cfg = self.config
        self.embedding = (
            torch.nn.Embedding(vocab_size, cfg.embedding_dim) if cfg.input == "embedding" else None
        )
        width = cfg.embedding_dim if self.embedding is not None else vocab_size
        self.rnn = self.make_layer(width, cfg)
        self.dropout = torch.nn.Dropout(cfg.dropout)
        self.head = torch.nn.Linear(cfg.hidden_size, vocab_size)

    def make_layer(self, width: int, cfg: RecurrentConfig) -> torch.nn.Module:
        """The recurrent layer (batch first); subclasses choose the cell."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            return self.embedding(x)
        return torch.nn.functional.one_hot(x, self.vocab_size).float()

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        hidden, state = self.rnn(self.encode(x), state)
        return self.head(self.dropout(hidden)), state


def layer_kwargs(cfg: RecurrentConfig) -> dict[str, Any]:
    return {
        "num_layers": cfg.num_layers,
        "dropout": cfg.dropout if cfg.num_layers > 1 else 0.0,
        "batch_first": True,
    }
