"""The tutorial's vanilla RNN: h_t = tanh(W_x x_t + W_h h_{t-1} + b), y_t = softmax(W_y h_t).

torch's ``nn.RNN`` keeps two biases (b_ih + b_hh = the tutorial's b). Its gradient
through time is a product of tanh' W_h factors, so it vanishes (or explodes) over long
lags: the tutorial's reason for LSTM and GRU.
"""

from __future__ import annotations

import torch

from plugins.recurrent import RecurrentConfig, RecurrentLM, layer_kwargs


class RNNModel(RecurrentLM):
    """Input -> tanh RNN -> linear over the vocabulary; carries h."""

    def make_layer(self, width: int, cfg: RecurrentConfig) -> torch.nn.Module:
        return torch.nn.RNN(width, cfg.hidden_size, nonlinearity="tanh", **layer_kwargs(cfg))
