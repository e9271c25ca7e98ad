"""LSTM language model: input -> LSTM -> linear, trained by the one Trainer.

The LSTM's gates keep the gradient alive across time steps where a vanilla RNN's
vanishes; this plugin is the tutorial's recommended fix, as a next-token model. It
carries its (h, c) state, so it can train by truncated BPTT over contiguous streams
(``train.bptt: stateful``) and score a split in one O(N) pass.
"""

from __future__ import annotations

import torch

from plugins.recurrent import RecurrentConfig, RecurrentLM, layer_kwargs

LSTMConfig = RecurrentConfig


class LSTMModel(RecurrentLM):
    """Input -> LSTM -> dropout -> linear over the vocabulary; carries (h, c)."""

    def make_layer(self, width: int, cfg: RecurrentConfig) -> torch.nn.Module:
        return torch.nn.LSTM(width, cfg.hidden_size, **layer_kwargs(cfg))
