"""GRU language model: an update and a reset gate on one hidden state, the LSTM's
gradient-preserving idea with fewer parameters."""

from __future__ import annotations

import torch

from plugins.recurrent import RecurrentConfig, RecurrentLM, layer_kwargs


class GRUModel(RecurrentLM):
    """Input -> GRU -> linear over the vocabulary; carries h."""

    def make_layer(self, width: int, cfg: RecurrentConfig) -> torch.nn.Module:
        return torch.nn.GRU(width, cfg.hidden_size, **layer_kwargs(cfg))
