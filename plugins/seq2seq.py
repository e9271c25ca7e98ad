"""Encoder-decoder sequence-to-sequence network (the tutorial's seq2seq), with optional
Luong attention and scheduled sampling.

The encoder reads the source; its final state (every layer's, and the LSTM's cell) is
the decoder's initial state, as in the tutorial (Sutskever et al., 2014). With
``attention``, each decoder output also attends over the encoder's outputs (Luong et
al., 2015, "general" score ``h_t^T W_a h_s``; the attentional vector
``tanh(W_c [c_t; h_t])`` feeds the output layer, no input feeding, so a teacher-forced
pass runs the decoder over the whole target at once).

**Id conventions** (``V`` = ``vocab_size``; the transduce task's batches follow them):

* outputs: classes ``0..V-1`` are the vocabulary's tokens and class ``V`` is the end of
  the sequence; ``transduce`` returns ids in ``[0, V)`` without the end;
* sources are right-padded with ``V``; the encoder treats it as padding (its embedding
  row ``V`` is a zero ``padding_idx`` row and padded steps are packed away and masked
  out of attention);
* the decoder's inputs ``target_in`` start with ``V``, the start marker (the decoder's
  embedding row ``V``, as fairseq starts with the end symbol), then the target tokens;
  what follows the end is read by nothing.

These rows are internal: callers only ever pass ``V``.

**Next-token** (the decoder as a language model over an empty source): the decoder
starts from the state an empty source leaves (zeros), reads the start marker, then the
context; its logits over the ``V`` tokens (the end class dropped) are normalised by
``log_proba``. ``stateful``: the carried state is the decoder's, so a continuation is
exact.

**Teacher forcing and scheduled sampling** (Bengio et al., 2015). In training mode,
``pair_logits`` feeds the decoder the true previous token with probability ``ratio``
and otherwise its own previous prediction (the argmax over the ``V`` tokens, detached),
one coin per row and step, drawn from torch's RNG (seeded per epoch by the Trainer).
``ratio`` = :meth:`Seq2SeqModel.teacher_forcing_ratio` goes from ``teacher_forcing`` at
progress 0 to ``tf_final`` at progress 1: ``constant`` keeps ``teacher_forcing``;
``linear`` interpolates; ``inverse_sigmoid`` follows ``1 / (1 + exp(k (p - 1/2)))``
with ``k = 10``, rescaled to be exactly 1 at p = 0 and 0 at p = 1. In eval mode it
always teacher-forces, so ``pair_logits`` gives the exact conditional distributions
``target_log_proba`` reads.

**Decoding.** ``beam_size`` 1 is greedy (argmax until the end class or ``max_len``
tokens). A larger beam ranks hypotheses by their total log-probability, the end
included, *without* length normalisation (the objective is the sequence's probability);
a hypothesis reaching ``max_len`` tokens is closed with the end's log-probability. The
greedy hypothesis is always a candidate too, so a beam's answer is never less probable
than greedy's. ``transduce(sources)`` without ``max_len`` / ``beam_size`` uses the
config's; the transduce task passes its own ``task_options``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from seqlab.api import DataError, PluginConfig, State, TaskKind, TorchSequenceModel

Cell = Literal["rnn", "lstm", "gru"]
Schedule = Literal["constant", "linear", "inverse_sigmoid"]
#: steepness of the inverse-sigmoid teacher-forcing schedule
SIGMOID_K = 10.0
#: sources decoded together in transduce / target_log_proba
CHUNK = 256


class Seq2SeqConfig(PluginConfig):
    """Sizes of the encoder and decoder (the same for both), attention and decoding."""

    input: Literal["embedding", "onehot"] = "embedding"
    embedding_dim: int = Field(default=64, ge=1)
    hidden_size: int = Field(default=256, ge=1)
    num_layers: int = Field(default=1, ge=1, le=8)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    cell: Cell = "gru"
    attention: bool = Field(default=False, description="Luong attention over the encoder's outputs")
    teacher_forcing: float = Field(
        default=1.0, ge=0.0, le=1.0, description="share of true previous tokens fed at progress 0"
    )
    tf_schedule: Schedule = Field(
        default="constant", description="how the share goes to tf_final as training progresses"
    )
    tf_final: float = Field(default=0.0, ge=0.0, le=1.0, description="the share at progress 1")
    beam_size: int = Field(default=1, ge=1, le=64, description="1: greedy decoding")
    max_len: int = Field(default=64, ge=1, description="longest output transduce returns")


def _masked_fill_state(state: State, keep: torch.Tensor) -> State:
    """Zero the state of the rows where ``keep`` is False (empty sources)."""
    mask = keep.view(1, -1, 1).to(dtype=torch.float32)
    if isinstance(state, tuple):
        return tuple(s * mask.to(s.dtype) for s in state)
    return state * mask.to(state.dtype)


def _index_state(state: State, index: torch.Tensor) -> State:
    """Rows ``index`` of a state (batch is dim 1 of torch's recurrent states)."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)


class Seq2SeqModel(TorchSequenceModel):
    """Encoder RNN -> final state -> decoder RNN (-> attention) -> V tokens + end."""

    config_class: ClassVar[type[PluginConfig]] = Seq2SeqConfig
    task_kinds: ClassVar[frozenset[TaskKind]] = frozenset({"next-token", "transduce"})
    test_params: ClassVar[dict[str, Any]] = {"embedding_dim": 8, "hidden_size": 32}
    stateful: ClassVar[bool] = True
    config: Seq2SeqConfig

    def __init__(
        self, vocab_size: int, config: Seq2SeqConfig | Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(vocab_size, config)
        cfg = self.config
        v = vocab_size
        if cfg.input == "embedding":
            self.src_embedding: torch.nn.Embedding | None = torch.nn.Embedding(
                v + 1, cfg.embedding_dim, padding_idx=v
            )
            self.tgt_embedding: torch.nn.Embedding | None = torch.nn.Embedding(
                v + 1, cfg.embedding_dim
            )
            width = cfg.embedding_dim
        else:
            self.src_embedding = self.tgt_embedding = None
            width = v + 1
        self.encoder = self._layer(width)
        self.decoder = self._layer(width)
        self.dropout = torch.nn.Dropout(cfg.dropout)
        h = cfg.hidden_size
        if cfg.attention:
            self.att_score: torch.nn.Linear | None = torch.nn.Linear(h, h, bias=False)
            self.att_combine: torch.nn.Linear | None = torch.nn.Linear(2 * h, h)
        else:
            self.att_score = self.att_combine = None
        self.head = torch.nn.Linear(h, v + 1)

    def _layer(self, width: int) -> torch.nn.Module:
        cfg = self.config
        kind = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cfg.cell]
        return kind(
            width,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            batch_first=True,
        )

    # ---- pieces ----------------------------------------------------------------------
    @property
    def end_id(self) -> int:
        """End of sequence (outputs), start marker (decoder) and padding (sources)."""
        return self.vocab_size

    def _embed(
        self, ids: torch.Tensor, table: torch.nn.Embedding | None, pad: bool
    ) -> torch.Tensor:
        if table is not None:
            return self.dropout(table(ids))
        onehot = torch.nn.functional.one_hot(ids, self.vocab_size + 1).float()
        if pad:  # the padding id V is a zero vector
            onehot = onehot[..., : self.vocab_size]
            onehot = torch.nn.functional.pad(onehot, (0, 1))
        return onehot

    def _zero_state(self, batch: int, device: torch.device) -> State:
        cfg = self.config
        h = torch.zeros(cfg.num_layers, batch, cfg.hidden_size, device=device)
        return (h, h.clone()) if cfg.cell == "lstm" else h

    def _check_pair_ids(self, ids: torch.Tensor, what: str) -> None:
        if ids.dim() != 2:
            raise DataError(f"{what} must be a 2-D tensor (batch, time), got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > self.vocab_size):
            raise DataError(
                f"{what} ids must lie in [0, {self.vocab_size}] ({self.vocab_size}: "
                "padding / start)"
            )

    def encode(
        self, source: torch.Tensor
    ) -> tuple[State, torch.Tensor | None, torch.Tensor | None]:
        """(decoder initial state, encoder outputs (B, S, H), mask (B, S)) of a source
        right-padded with V; an empty source leaves the zero state."""
        b, s = source.shape
        if s == 0:
            return self._zero_state(b, source.device), None, None
        mask = source != self.end_id
        lengths = mask.sum(dim=1)
        x = self._embed(source, self.src_embedding, pad=True)
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out_packed, state = self.encoder(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(
            out_packed, batch_first=True, total_length=s
        )
        state = _masked_fill_state(state, lengths > 0)
        return state, out, mask

    def _attend(
        self, hidden: torch.Tensor, memory: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Decoder outputs (B, T, H) -> vectors the head reads (B, T, H)."""
        if self.att_score is None or self.att_combine is None:
            return hidden
        if memory is None or mask is None:
            context = torch.zeros_like(hidden)
        else:
            scores = torch.bmm(self.att_score(hidden), memory.transpose(1, 2))  # (B, T, S)
            scores = scores.masked_fill(~mask[:, None, :], torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1)
            weights = weights * mask.any(dim=1).to(weights.dtype)[:, None, None]  # empty: none
            context = torch.bmm(weights, memory)
        return torch.tanh(self.att_combine(torch.cat([context, hidden], dim=-1)))

    def decode(
        self,
        tokens: torch.Tensor,
        state: State,
        memory: torch.Tensor | None,
        mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, State]:
        """Logits (B, T, V + 1) for decoder inputs (B, T) from ``state``; new state."""
        hidden, state = self.decoder(self._embed(tokens, self.tgt_embedding, pad=False), state)
        out = self._attend(self.dropout(hidden), memory, mask)
        return self.head(out), state

    # ---- next-token: the decoder as a language model over an empty source ------------
    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        if state is None:
            start = torch.full((x.shape[0], 1), self.end_id, dtype=x.dtype, device=x.device)
            logits, state = self.decode(
                torch.cat([start, x], dim=1), self._zero_state(x.shape[0], x.device), None, None
            )
            logits = logits[:, 1:]
        else:
            logits, state = self.decode(x, state, None, None)
        return logits[..., : self.vocab_size], state

    # ---- transduce -------------------------------------------------------------------
    def teacher_forcing_ratio(self, progress: float) -> float:
        """Share of true previous tokens fed at ``progress`` in [0, 1] of training."""
        cfg = self.config
        p = min(max(float(progress), 0.0), 1.0)
        start, final = cfg.teacher_forcing, cfg.tf_final
        if cfg.tf_schedule == "constant":
            return start
        if cfg.tf_schedule == "linear":
            weight = 1.0 - p
        else:

            def sig(z: float) -> float:
                return 1.0 / (1.0 + math.exp(SIGMOID_K * (z - 0.5)))

            weight = (sig(p) - sig(1.0)) / (sig(0.0) - sig(1.0))
        return final + (start - final) * weight

    def pair_logits(
        self, source: torch.Tensor, target_in: torch.Tensor, progress: float = 1.0
    ) -> torch.Tensor:
        self._check_pair_ids(source, "source")
        self._check_pair_ids(target_in, "target_in")
        state, memory, mask = self.encode(source)
        ratio = self.teacher_forcing_ratio(progress) if self.training else 1.0
        if ratio >= 1.0 or target_in.shape[1] <= 1:
            logits, _ = self.decode(target_in, state, memory, mask)
            return logits
        steps: list[torch.Tensor] = []
        token = target_in[:, :1]
        for t in range(target_in.shape[1]):
            if t > 0:
                own = steps[-1][:, 0, : self.vocab_size].argmax(dim=-1, keepdim=True).detach()
                teach = torch.rand(own.shape, device=own.device) < ratio
                token = torch.where(teach, target_in[:, t : t + 1], own)
            logits, state = self.decode(token, state, memory, mask)
            steps.append(logits)
        return torch.cat(steps, dim=1)

    def _as_sources(self, sources: Sequence[np.ndarray], what: str = "sources") -> list[np.ndarray]:
        out = []
        for i, src in enumerate(sources):
            arr = np.asarray(src)
            if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
                raise DataError(f"{what}[{i}] must be a 1-D integer id array, got {arr.shape}")
            arr = arr.astype(np.int64)
            if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
                raise DataError(f"{what}[{i}]: token ids must lie in [0, {self.vocab_size})")
            out.append(arr)
        return out

    def _pad(self, rows: Sequence[np.ndarray], start: bool = False) -> torch.Tensor:
        """Right-pad with V (and prepend the start marker V when ``start``)."""
        lead = 1 if start else 0
        width = max((len(r) for r in rows), default=0) + lead
        out = np.full((len(rows), width), self.end_id, dtype=np.int64)
        for i, r in enumerate(rows):
            out[i, lead : lead + len(r)] = r
        return torch.from_numpy(out).to(self.device)

    @torch.no_grad()
    def target_log_proba(
        self, sources: Sequence[np.ndarray], targets: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        srcs, tgts = self._as_sources(sources), self._as_sources(targets, "targets")
        if len(srcs) != len(tgts):
            raise DataError(f"{len(srcs)} sources but {len(tgts)} targets")
        out: list[np.ndarray] = []
        was_training = self.training
        self.eval()
        try:
            for lo in range(0, len(srcs), CHUNK):
                src, tgt = srcs[lo : lo + CHUNK], tgts[lo : lo + CHUNK]
                logits = self.pair_logits(self._pad(src), self._pad(tgt, start=True))
                lp = torch.log_softmax(logits.double(), dim=-1).cpu().numpy()
                for i, t in enumerate(tgt):
                    want = np.append(t, self.end_id)
                    out.append(lp[i, np.arange(len(want)), want])
        finally:
            self.train(was_training)
        return out

    @torch.no_grad()
    def transduce(
        self,
        sources: Sequence[np.ndarray],
        max_len: int | None = None,
        beam_size: int | None = None,
    ) -> list[np.ndarray]:
        """Output ids for each source (``max_len`` and ``beam_size`` default to the
        config's); greedy for a beam of 1."""
        srcs = self._as_sources(sources)
        limit = self.config.max_len if max_len is None else int(max_len)
        beam = self.config.beam_size if beam_size is None else int(beam_size)
        if limit < 0 or beam < 1:
            raise DataError(
                f"transduce needs max_len >= 0 and beam_size >= 1 (got {limit}, {beam})"
            )
        was_training = self.training
        self.eval()
        try:
            out: list[np.ndarray] = []
            for lo in range(0, len(srcs), CHUNK):
                chunk = srcs[lo : lo + CHUNK]
                greedy = self._greedy(chunk, limit)
                if beam == 1:
                    out.extend(greedy)
                    continue
                beamed = self._beam(chunk, limit, beam)
                g_score = [float(s.sum()) for s in self.target_log_proba(chunk, greedy)]
                b_score = [float(s.sum()) for s in self.target_log_proba(chunk, beamed)]
                out.extend(
                    b if bs >= gs else g
                    for g, b, gs, bs in zip(greedy, beamed, g_score, b_score, strict=True)
                )
        finally:
            self.train(was_training)
        return out

    def _greedy(self, sources: list[np.ndarray], limit: int) -> list[np.ndarray]:
        n = len(sources)
        state, memory, mask = self.encode(self._pad(sources))
        token = torch.full((n, 1), self.end_id, dtype=torch.long, device=self.device)
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        steps: list[torch.Tensor] = []
        for _ in range(limit):
            logits, state = self.decode(token, state, memory, mask)
            token = logits[:, -1].argmax(dim=-1, keepdim=True)
            steps.append(torch.where(done[:, None], self.end_id, token))
            done |= token[:, 0] == self.end_id
            if bool(done.all()):
                break
        ids = torch.cat(steps, dim=1).cpu().numpy() if steps else np.empty((n, 0), np.int64)
        out = []
        for row in ids:
            ends = np.flatnonzero(row == self.end_id)
            out.append(row[: ends[0]] if ends.size else row)
        return out

    def _beam(self, sources: list[np.ndarray], limit: int, k: int) -> list[np.ndarray]:
        """Batched beam search, total log-probability, the end included."""
        n, v1 = len(sources), self.vocab_size + 1
        state, memory, mask = self.encode(self._pad(sources))
        rep = torch.arange(n, device=self.device).repeat_interleave(k)
        state = _index_state(state, rep)
        memory = memory.index_select(0, rep) if memory is not None else None
        mask = mask.index_select(0, rep) if mask is not None else None
        scores = torch.full((n, k), float("-inf"), dtype=torch.float64, device=self.device)
        scores[:, 0] = 0.0
        history = torch.empty((n, k, 0), dtype=torch.long, device=self.device)
        token = torch.full((n * k, 1), self.end_id, dtype=torch.long, device=self.device)
        finished: list[list[tuple[float, np.ndarray]]] = [[] for _ in range(n)]
        done = [False] * n
        for step in range(limit + 1):
            logits, state = self.decode(token, state, memory, mask)
            lp = torch.log_softmax(logits[:, -1].double(), dim=-1).view(n, k, v1)
            if step == limit:  # max_len tokens: only the end may follow
                lp[..., : self.vocab_size] = float("-inf")
            cand = (scores[:, :, None] + lp).view(n, k * v1)
            top, idx = cand.topk(min(2 * k, k * v1), dim=1)
            top_l, idx_l = top.cpu().tolist(), idx.cpu().tolist()
            hist = history.cpu().numpy()
            new_beam = torch.zeros((n, k), dtype=torch.long)
            new_tok = torch.full((n, k), self.end_id, dtype=torch.long)
            new_scores = torch.full((n, k), float("-inf"), dtype=torch.float64)
            for b in range(n):
                if done[b]:
                    continue
                filled = 0
                for score, flat in zip(top_l[b], idx_l[b], strict=True):
                    if score == float("-inf"):
                        break
                    beam, tok = divmod(flat, v1)
                    if tok == self.end_id:
                        finished[b].append((score, hist[b, beam].copy()))
                    elif filled < k:
                        new_beam[b, filled], new_tok[b, filled] = beam, tok
                        new_scores[b, filled] = score
                        filled += 1
                best_open = float(new_scores[b, 0])
                best_done = max((s for s, _ in finished[b]), default=float("-inf"))
                if best_done >= best_open or filled == 0:
                    done[b] = True  # scores only fall: no open beam can overtake
            if all(done):
                break
            new_beam, new_tok = new_beam.to(self.device), new_tok.to(self.device)
            scores = new_scores.to(self.device)
            history = torch.cat(
                [
                    history.gather(1, new_beam[:, :, None].expand(-1, -1, history.shape[2])),
                    new_tok[:, :, None],
                ],
                dim=2,
            )
            flat_index = (torch.arange(n, device=self.device)[:, None] * k + new_beam).view(-1)
            state = _index_state(state, flat_index)
            token = new_tok.view(-1, 1)
        return [
            max(f, key=lambda item: item[0])[1] if f else np.empty(0, dtype=np.int64)
            for f in finished
        ]
