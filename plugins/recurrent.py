"""The recurrent family's shared body: input -> stacked recurrent layers -> dropout ->
linear over the vocabulary, carrying the recurrent state.

The input is an embedding, or the tutorial's one-hot vectors (Keras'
``input_shape=(SEQ_LEN, nb_chars)``). Each plugin (rnn, gru, lstm) names its cell only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from seqlab.api import PluginConfig, PluginError, State, TaskKind, TorchSequenceModel


class RecurrentConfig(PluginConfig):
    """Sizes of a recurrent network; dropout applies between layers and before the head."""

    input: Literal["embedding", "onehot"] = "embedding"
    embedding_dim: int = Field(default=64, ge=1)
    hidden_size: int = Field(default=256, ge=1)
    num_layers: int = Field(default=1, ge=1, le=8)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    #: multiplies the recurrent weights W_h at initialisation: > 1 makes gradients
    #: explode (the tutorial's failure mode, which clipping cures), < 1 vanish sooner
    recurrent_scale: float = Field(default=1.0, gt=0.0, le=1000.0)
    #: DropConnect on the hidden-to-hidden weights while training (AWD-LSTM, Merity et
    #: al. 2018): one mask per batch, shared by every time step, so it regularises the
    #: recurrence itself, which dropout between layers never touches
    weight_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    #: dropout on the input vectors (embeddings or one-hot) while training
    input_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class RecurrentLM(TorchSequenceModel):
    """A next-token model around one of torch's recurrent layers."""

    config_class: ClassVar[type[PluginConfig]] = RecurrentConfig
    task_kinds: ClassVar[frozenset[TaskKind]] = frozenset({"next-token", "classify", "regress"})
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
        self.input_width = width
        self.rnn = self.make_layer(width, cfg)
        scale_recurrent_weights(self.rnn, cfg.recurrent_scale)
        self.dropout = torch.nn.Dropout(cfg.dropout)
        self.input_dropout = torch.nn.Dropout(cfg.input_dropout)
        self.head = torch.nn.Linear(cfg.hidden_size, vocab_size)

    def make_layer(self, width: int, cfg: RecurrentConfig) -> torch.nn.Module:
        """The recurrent layer (batch first); subclasses choose the cell."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            return self.input_dropout(self.embedding(x))
        return self.input_dropout(torch.nn.functional.one_hot(x, self.vocab_size).float())

    def recur(self, inputs: torch.Tensor, state: State = None) -> tuple[torch.Tensor, Any]:
        """The recurrent layer over ``inputs``; while training with ``weight_dropout``,
        its hidden-to-hidden weights are dropped out for this call (the gradient reaches
        the kept entries of the real weights)."""
        rate = self.config.weight_dropout
        if not (self.training and rate > 0):
            return self.rnn(inputs, state)
        weights = {
            name: torch.nn.functional.dropout(w, rate) if name.startswith("weight_hh") else w
            for name, w in self.rnn.named_parameters()
        }
        return torch.func.functional_call(self.rnn, weights, (inputs, state))

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        hidden, state = self.recur(self.encode(x), state)
        return self.head(self.dropout(hidden)), state

    def summary(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The top layer's h after each sequence's last real token (B, H), dropped out."""
        hidden, _ = self.recur(self.encode(x))
        return self.dropout(last_of(hidden, lengths))

    def attach_value_input(self, n_features: int) -> torch.nn.Linear:
        """``Linear(n_features, input width)``: float rows enter the same recurrent stack
        where embeddings (or one-hot vectors) would. Kept when one of that size exists."""
        layer = self.value_input
        if layer is not None and layer.in_features == n_features:
            return layer
        layer = torch.nn.Linear(n_features, self.input_width).to(self.device)
        self.value_input = layer
        return layer

    def summary_values(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """As :meth:`summary`, over float rows (B, T, F) projected by ``value_input``."""
        layer = self.value_input
        if layer is None:
            raise PluginError(f"{type(self).__name__}: call attach_value_input first")
        hidden, _ = self.recur(self.input_dropout(layer(values.float())))
        return self.dropout(last_of(hidden, lengths))

    def hidden_sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(logits, hidden)`` of one fresh pass: ``hidden[:, t]`` is the top layer's
        output h_t (torch's RNN/GRU/LSTM output is that layer's h) and the logits at t
        are ``head(dropout(h_t))``; gradients of ``hidden`` include every later step
        (see :func:`hidden_through_time`). Call it in eval mode. None when a subclass
        overrides ``forward`` or runs both directions (its states are not these)."""
        if type(self).forward is not RecurrentLM.forward or getattr(
            self.rnn, "bidirectional", False
        ):
            return None
        return hidden_through_time(self.rnn, self.encode(x), lambda h: self.head(self.dropout(h)))

    def states_through_time(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The top layer's h_t over ids or float rows (see the contract), from
        :func:`hidden_through_time`; None where :meth:`hidden_sequence` is."""
        if type(self).forward is not RecurrentLM.forward or getattr(
            self.rnn, "bidirectional", False
        ):
            return None
        if x.is_floating_point():
            layer = self.value_input
            if layer is None:
                raise PluginError(f"{type(self).__name__}: call attach_value_input first")
            inputs = layer(x.float())
        else:
            inputs = self.encode(x)
        return hidden_through_time(self.rnn, inputs, lambda h: h)


def last_of(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``hidden[b, lengths[b] - 1]`` for each row: (B, T, H) -> (B, H), the state after a
    right-padded sequence's last real token."""
    index = (lengths.to(hidden.device).long() - 1).clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def hidden_through_time(
    rnn: torch.nn.Module,
    inputs: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(head(hidden), hidden)`` for a batch-first torch RNN/GRU/LSTM run from a fresh
    state on ``inputs`` (B, T, width), where ``hidden`` (B, T, H) holds the top layer's
    h_t and ``d(anything)/d hidden[:, t]`` is the total derivative through every later
    step: what backpropagation through time delivers to h_t.

    torch's fused recurrent layer hides the recurrence inside one op, so a gradient
    taken on its output tensor at t sees only what is computed from that tensor (the
    head at t), never the later steps: 0 for a loss at the last step only. So, when
    autograd is on, ``hidden`` is a leaf holding a fused pass's values, and the
    recurrence is re-run one step at a time with the top layer's state at t taken from
    ``hidden[:, t]`` (its value unchanged; the gradient still reaches the weights, as in
    ordinary BPTT). An LSTM's cell state c_t is carried as is. Under ``torch.no_grad``
    it is the fused pass alone. With dropout between layers, use eval mode: the two
    passes would draw different masks. (Reusable by any plugin whose top is such a
    layer.)
    """
    with torch.no_grad():
        values, _ = rnn(inputs)
    if not torch.is_grad_enabled():
        return head(values), values
    hidden = values.detach().requires_grad_()
    state: State = None
    steps = []
    for t in range(inputs.shape[1]):
        out, state = rnn(inputs[:, t : t + 1], state)
        h_t = hidden[:, t] + (out[:, 0] - out[:, 0].detach())
        state = _with_top_h(state, h_t)
        steps.append(h_t)
    return head(torch.stack(steps, dim=1)), hidden


def _with_top_h(state: State, h_top: torch.Tensor) -> State:
    """``state`` (h of shape (layers, B, H), or an LSTM's (h, c)) with the top layer's h
    replaced by ``h_top`` (B, H)."""
    if isinstance(state, tuple):
        return (_with_top_h(state[0], h_top), *state[1:])
    return torch.cat([state[:-1], h_top.unsqueeze(0)])


def layer_kwargs(cfg: RecurrentConfig) -> dict[str, Any]:
    return {
        "num_layers": cfg.num_layers,
        "dropout": cfg.dropout if cfg.num_layers > 1 else 0.0,
        "batch_first": True,
    }


@torch.no_grad()
def scale_recurrent_weights(layer: torch.nn.Module, scale: float) -> None:
    """Multiply every recurrent weight matrix (torch names them ``weight_hh_*``)."""
    if scale == 1.0:
        return
    for name, param in layer.named_parameters():
        if "weight_hh" in name:
            param.mul_(scale)
