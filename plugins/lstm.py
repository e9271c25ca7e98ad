"""LSTM language model: input -> LSTM -> linear, trained by the one Trainer.

The LSTM's gates keep the gradient alive across time steps where a vanilla RNN's
vanishes; this plugin is the tutorial's recommended fix, as a next-token model. It
carries its (h, c) state, so it can train by truncated BPTT over contiguous streams
(``train.bptt: stateful``) and score a split in one O(N) pass.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from plugins.recurrent import RecurrentConfig, RecurrentLM, layer_kwargs
from seqlab.api import PluginConfig


class LSTMConfig(RecurrentConfig):
    """The recurrent sizes, and where the forget gate starts."""

    #: the forget gates' bias at initialisation (each layer's b_f, b_hh's part set to 0):
    #: 1.0 starts every cell remembering, which shortens the plateau long-lag tasks sit
    #: on before the gates learn to hold (Gers et al. 2000; Jozefowicz et al. 2015);
    #: 0.0 (the default) leaves torch's own initialisation untouched
    forget_bias: float = Field(default=0.0, ge=-10.0, le=10.0)


class LSTMModel(RecurrentLM):
    """Input -> LSTM -> dropout -> linear over the vocabulary; carries (h, c)."""

    config_class: ClassVar[type[PluginConfig]] = LSTMConfig
    config: LSTMConfig

    def __init__(self, vocab_size: int, config: LSTMConfig | dict[str, Any] | None = None):
        super().__init__(vocab_size, config)
        if self.config.forget_bias:
            set_forget_bias(self.rnn, self.config.forget_bias)

    def make_layer(self, width: int, cfg: RecurrentConfig) -> torch.nn.Module:
        return torch.nn.LSTM(width, cfg.hidden_size, **layer_kwargs(cfg))


def set_forget_bias(lstm: torch.nn.Module, value: float) -> None:
    """b_ih's forget slice (torch orders the gates i, f, g, o) to ``value`` and b_hh's to
    0 in every layer and direction: the gate's total bias is then exactly ``value``."""
    with torch.no_grad():
        for name, bias in lstm.named_parameters():
            if name.startswith("bias_"):
                hidden = bias.shape[0] // 4
                bias[hidden : 2 * hidden] = value if name.startswith("bias_ih") else 0.0
