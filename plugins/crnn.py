"""Convolutional-recurrent network (CRNN): 1-D convolutions over the input sequence
feeding a recurrent layer, then the linear head.

Why: a convolution turns each position into a feature of its last ``kernel_size``
tokens (a learnt n-gram detector, computed for all positions in parallel), so the
recurrent layer reads local patterns instead of raw symbols and can spend its state on
the longer range.

It is a next-token model, so it must be causal: every convolution is padded with
``kernel_size - 1`` zeros on the left only, never on the right, and position t sees
tokens t - k + 1 .. t of the layer below. That also makes it exactly stateful: the state
is each convolution's last ``kernel_size - 1`` inputs (zeros at a fresh start, the
left padding) and the recurrent layer's state, so scoring in chunks that carry it equals
scoring each full prefix (the kit's ``carried_state`` rule checks it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, cast

import torch
from pydantic import Field

from plugins.birnn import Cell, recurrent_layer
from plugins.recurrent import (
    RecurrentConfig,
    hidden_through_time,
    last_of,
    scale_recurrent_weights,
)
from seqlab.api import PluginConfig, State, TaskKind, TorchSequenceModel


def causal_conv(conv: torch.nn.Conv1d, full: torch.Tensor) -> torch.Tensor:
    """``conv(full)`` (no padding) as one matmul over the unfolded windows, (B, C_out,
    L - k + 1). Each output is then summed in the same order whatever the length of
    ``full``, so chunks carrying the state match one pass bit for bit (torch's conv
    kernels pick their algorithm by length and round differently, up to ~1e-5 in the
    log-probabilities of a trained model)."""
    k = conv.kernel_size[0]
    windows = full.unfold(2, k, 1).permute(0, 2, 1, 3)  # (B, L - k + 1, C_in, k)
    flat = windows.reshape(windows.shape[0], windows.shape[1], -1)
    out = flat @ conv.weight.reshape(conv.out_channels, -1).T
    if conv.bias is not None:
        out = out + conv.bias
    return out.transpose(1, 2)


class CRNNConfig(RecurrentConfig):
    """:class:`RecurrentConfig` plus the convolution stack and the recurrent cell."""

    cell: Cell = "gru"
    conv_channels: int = Field(default=64, ge=1, description="channels of every conv layer")
    kernel_size: int = Field(default=3, ge=1, le=64, description="tokens each conv sees")
    conv_layers: int = Field(default=1, ge=1, le=8, description="stacked causal convs")


class CRNNModel(TorchSequenceModel):
    """Input -> causal Conv1d + ReLU (x conv_layers) -> recurrent layer -> linear head;
    carries (conv inputs, recurrent state)."""

    config_class: ClassVar[type[PluginConfig]] = CRNNConfig
    task_kinds: ClassVar[frozenset[TaskKind]] = frozenset({"next-token", "classify"})
    test_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 8,
        "conv_channels": 8,
        "hidden_size": 16,
    }
    stateful: ClassVar[bool] = True
    config: CRNNConfig

    def __init__(self, vocab_size: int, config: CRNNConfig | Mapping[str, Any] | None = None):
        super().__init__(vocab_size, config)
        cfg = self.config
        self.embedding = (
            torch.nn.Embedding(vocab_size, cfg.embedding_dim) if cfg.input == "embedding" else None
        )
        width = cfg.embedding_dim if self.embedding is not None else vocab_size
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv1d(
                width if i == 0 else cfg.conv_channels, cfg.conv_channels, cfg.kernel_size
            )
            for i in range(cfg.conv_layers)
        )
        self.rnn = recurrent_layer(cfg.cell, cfg.conv_channels, cfg)
        scale_recurrent_weights(self.rnn, cfg.recurrent_scale)
        self.dropout = torch.nn.Dropout(cfg.dropout)
        self.head = torch.nn.Linear(cfg.hidden_size, vocab_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            return self.embedding(x)
        return torch.nn.functional.one_hot(x, self.vocab_size).float()

    def _features(self, x: torch.Tensor, past: Any) -> tuple[torch.Tensor, tuple[Any, ...]]:
        """The convolution stack's output (B, T, C) and the inputs it carries over."""
        pad = self.config.kernel_size - 1
        h = self.encode(x).transpose(1, 2)  # (B, channels, T)
        carried = []
        for i, conv in enumerate(self.convs):
            before = h.new_zeros(h.shape[0], h.shape[1], pad) if past is None else past[i]
            full = torch.cat([before, h], dim=2)  # left padding (or the carried inputs) only
            carried.append(full[:, :, full.shape[2] - pad :])
            h = self.dropout(torch.relu(causal_conv(cast(torch.nn.Conv1d, conv), full)))
        return h.transpose(1, 2), tuple(carried)

    def _hidden(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """The recurrent layer's outputs (B, T, H) and the state that continues ``x``."""
        past, rnn_state = (None, None) if state is None else state
        features, carried = self._features(x, past)
        hidden, rnn_state = self.rnn(features, rnn_state)
        return hidden, (carried, rnn_state)

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        hidden, state = self._hidden(x, state)
        return self.head(self.dropout(hidden)), state

    def summary(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The recurrent layer's state after each sequence's last real token (B, H); the
        convolutions are causal, so the padding after it changes nothing."""
        hidden, _ = self._hidden(x, None)
        return self.dropout(last_of(hidden, lengths))

    def hidden_sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        features, _ = self._features(x, None)
        return hidden_through_time(self.rnn, features, lambda h: self.head(self.dropout(h)))


__all__ = ["CRNNConfig", "CRNNModel", "causal_conv"]
