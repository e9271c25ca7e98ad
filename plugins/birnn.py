"""Bidirectional recurrent network: fill in the blank from both sides of it.

The tutorial's "I am ___ hungry": reading left to right, "I am" allows "not", "very",
"so", "here"...; the word *after* the blank ("hungry") rules most of them out. A
bidirectional RNN reads the text both ways and predicts a token from what precedes it
*and* what follows it (the ``fill-blank`` task).

Layout: two separate recurrent stacks (ELMo's biLM, not torch's ``bidirectional=True``),
a forward one reading left to right and a backward one right to left, whose top states
are concatenated before the linear head. Keeping the stacks apart is what lets position
t be predicted without seeing x[t]: in torch's stacked bidirectional layers, layer 2 at
t mixes both directions' layer-1 states at t, and both have read x[t].

* ``fill-blank`` (:meth:`BiRNNModel.fill_blank_logits`,
  :meth:`BiRNNModel.fill_blank_log_proba`): position t from the forward state after
  x[:t] and the backward state after x[t+1:] read right to left (zeros where a side is
  empty); x[t] itself is never read.
* ``next-token`` must stay causal (the logits at t may not see x[t+1:], or training
  copies the answer), so ``forward`` encodes each *prefix* bidirectionally: the forward
  state after x[..t] and the backward stack's state after reading x[t], x[t-1], ..., x[0].
  Every prefix needs its own backward pass: ``forward`` is O(T^2) in time and memory (T
  backward passes over the window, batched into one call of B*T rows). ``log_proba``
  needs only the whole context's encoding, O(T).

It carries no state (``stateful = False``): the backward direction needs the future.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from plugins.recurrent import (
    RecurrentConfig,
    hidden_through_time,
    last_of,
    layer_kwargs,
    scale_recurrent_weights,
)
from seqlab.api import (
    DataError,
    PluginConfig,
    TaskKind,
    TorchSequenceModel,
    as_context_array,
)

Cell = Literal["rnn", "lstm", "gru"]
_CELLS: dict[str, Callable[..., torch.nn.RNNBase]] = {
    "rnn": torch.nn.RNN,
    "lstm": torch.nn.LSTM,
    "gru": torch.nn.GRU,
}


def recurrent_layer(cell: Cell, width: int, cfg: RecurrentConfig) -> torch.nn.RNNBase:
    """A batch-first stack of ``cfg.num_layers`` layers of ``cell`` (tanh for rnn)."""
    return _CELLS[cell](width, cfg.hidden_size, **layer_kwargs(cfg))


class BiRNNConfig(RecurrentConfig):
    """:class:`RecurrentConfig` plus the cell of both directions."""

    cell: Cell = "lstm"


class BiRNNModel(TorchSequenceModel):
    """Forward and backward recurrent stacks -> concatenated top states -> linear head."""

    config_class: ClassVar[type[PluginConfig]] = BiRNNConfig
    task_kinds: ClassVar[frozenset[TaskKind]] = frozenset({"next-token", "fill-blank", "classify"})
    test_params: ClassVar[dict[str, Any]] = {"embedding_dim": 8, "hidden_size": 16}
    stateful: ClassVar[bool] = False
    config: BiRNNConfig

    def __init__(self, vocab_size: int, config: BiRNNConfig | Mapping[str, Any] | None = None):
        super().__init__(vocab_size, config)
        cfg = self.config
        self.embedding = (
            torch.nn.Embedding(vocab_size, cfg.embedding_dim) if cfg.input == "embedding" else None
        )
        width = cfg.embedding_dim if self.embedding is not None else vocab_size
        self.fwd = recurrent_layer(cfg.cell, width, cfg)
        self.bwd = recurrent_layer(cfg.cell, width, cfg)
        for stack in (self.fwd, self.bwd):
            scale_recurrent_weights(stack, cfg.recurrent_scale)
        self.dropout = torch.nn.Dropout(cfg.dropout)
        self.head = torch.nn.Linear(2 * cfg.hidden_size, vocab_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            return self.embedding(x)
        return torch.nn.functional.one_hot(x, self.vocab_size).float()

    def _logits(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(torch.cat([left, right], dim=-1)))

    # ---- next-token: a bidirectional encoding of each prefix --------------------------
    def prefix_backward(self, e: torch.Tensor) -> torch.Tensor:
        """(B, T, H): at t, the backward stack's top output after reading x[t], ..., x[0].

        All B*T reversed prefixes go through the backward stack as one (B*T, T) batch,
        row t padded at its end (the output at step t never reads the padding). Padding
        beats a packed sequence here: torch's packed backward pass is several times
        slower on the CPU."""
        b, t, w = e.shape
        steps = torch.arange(t, device=e.device)
        order = (steps[:, None] - steps[None, :]).clamp(min=0)  # row t: t, t-1, ..., 0, 0...
        out, _ = self.bwd(e[:, order].reshape(b * t, t, w))
        return out.reshape(b, t, t, -1)[:, steps, steps]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, T, V); position t sees x[..t] only (O(T^2), see above)."""
        e = self.encode(x)
        ahead, _ = self.fwd(e)
        return self._logits(ahead, self.prefix_backward(e))

    def hidden_sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The forward stack's h_t (the backward one restarts at every prefix, so only
        the forward direction carries gradients across time steps)."""
        e = self.encode(x)
        back = self.prefix_backward(e)
        return hidden_through_time(self.fwd, e, lambda h: self._logits(h, back))

    def summary(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Both directions' final states (B, 2H): the forward stack after the last real
        token, the backward one after reading the real tokens right to left."""
        e = self.encode(x)
        lens = lengths.to(e.device).long()
        steps = torch.arange(e.shape[1], device=e.device)
        # row b reversed within its first lens[b] positions; the padding stays after them
        order = torch.where(steps < lens[:, None], lens[:, None] - 1 - steps, steps)
        ahead, _ = self.fwd(e)
        back, _ = self.bwd(e[torch.arange(e.shape[0], device=e.device)[:, None], order])
        both = torch.cat([last_of(ahead, lens), last_of(back, lens)], dim=-1)
        return self.dropout(both)

    @torch.no_grad()
    def log_proba(self, contexts: np.ndarray) -> np.ndarray:
        """The last position of ``forward``, computed in O(T): both directions over the
        whole context."""
        ctx = as_context_array(contexts)
        self.check_ids(ctx)
        was_training = self.training
        self.eval()
        try:
            e = self.encode(torch.from_numpy(ctx).to(self.device))
            ahead, _ = self.fwd(e)
            back, _ = self.bwd(e.flip(1))
            logits = self._logits(ahead[:, -1], back[:, -1])
            out = torch.log_softmax(logits.double(), dim=-1)
        finally:
            self.train(was_training)
        return out.cpu().numpy()

    # ---- fill-blank --------------------------------------------------------------------
    def fill_blank_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, V): position t from the forward state after x[:t] and the backward state
        after x[t+1:] read right to left (zeros at either end); x[t] is never read."""
        e = self.encode(x)
        ahead, _ = self.fwd(e)  # ahead[:, t]: after x[..t]
        back, _ = self.bwd(e.flip(1))
        back = back.flip(1)  # back[:, t]: after x[T-1], ..., x[t]
        zeros = ahead.new_zeros(ahead.shape[0], 1, ahead.shape[2])
        left = torch.cat([zeros, ahead[:, :-1]], dim=1)
        right = torch.cat([back[:, 1:], zeros], dim=1)
        return self._logits(left, right)

    def _side(self, rnn: torch.nn.RNNBase, ids: np.ndarray) -> torch.Tensor:
        """Top state (B, H) after reading ``ids`` left to right; zeros for no ids."""
        if ids.shape[1] == 0:
            return torch.zeros(ids.shape[0], self.config.hidden_size, device=self.device)
        out, _ = rnn(self.encode(torch.from_numpy(np.ascontiguousarray(ids)).to(self.device)))
        return out[:, -1]

    @torch.no_grad()
    def fill_blank_log_proba(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """log p(blank | left, right), (B, V) float64. ``left[:, -1]`` is the token just
        before the blank, ``right[:, 0]`` the one just after it; either may be empty."""
        lft, rgt = as_context_array(left), as_context_array(right)
        if lft.shape[0] != rgt.shape[0]:
            raise DataError(
                f"left and right contexts must have as many rows ({lft.shape[0]} != {rgt.shape[0]})"
            )
        for side in (lft, rgt):
            if side.size and (side.min() < 0 or side.max() >= self.vocab_size):
                raise DataError(f"token ids must lie in [0, {self.vocab_size})")
        was_training = self.training
        self.eval()
        try:
            logits = self._logits(self._side(self.fwd, lft), self._side(self.bwd, rgt[:, ::-1]))
            out = torch.log_softmax(logits.double(), dim=-1)
        finally:
            self.train(was_training)
        return out.cpu().numpy()


__all__ = ["BiRNNConfig", "BiRNNModel", "Cell", "recurrent_layer"]
