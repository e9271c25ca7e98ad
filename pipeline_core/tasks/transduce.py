"""``transduce``: map a source sequence to a target sequence (encoder-decoder models).

Pairs come from :mod:`pipeline_core.pairs` (``task_options.pairs``): ``noisy``
(spelling correction), ``reverse`` (word order reversed) or ``tsv`` (the user's file).
Built-in sets are cut from each split's own ids, so no test text reaches training.

**Ids** (``V`` = the vocabulary size; the contract's conventions, the only thing this
task knows of a model): a target is scored as its tokens then the end class ``V``;
sources are right-padded with ``V``; the decoder's inputs are ``V`` (the start marker)
then the target tokens, padded with ``V``; positions without a loss hold
:data:`~pipeline_core.tasks.IGNORE`.

**Training**: each batch holds ``source`` (B, S), ``inputs`` (B, T + 1) and ``targets``
(B, T + 1); :meth:`TransduceTask.forward` asks ``model.pair_logits(source, inputs,
progress)`` for (B, T + 1, V + 1) logits, ``progress`` driving scheduled sampling.
``data.context_len`` and ``data.step`` do not apply; the pairs are shuffled per epoch
from ``train.seed`` and the epoch.

**Scoring** (val / test pairs): ``exact_match`` (share of outputs whose text equals the
target's), ``cer`` (Levenshtein distance between the detokenized output and target,
summed over pairs, over the targets' total characters; the leaderboard ranks by it), and
the one metric on the target tokens and their end given the source, through
``target_log_proba``: ``nll`` per token, ``bpc`` = total bits over the targets'
characters, ``ppl``; ``acc1`` / ``acc5`` rank each target among the ``V + 1`` classes of
``pair_logits`` in eval mode (teacher-forced; neural plugins only, NaN otherwise).
Outputs are decoded with ``task_options.beam_size`` (1: greedy) up to
``max(task_options.max_len, longest target of the split)`` tokens.

The ``copy`` baseline outputs the source unchanged: real ``exact_match`` and ``cer``, no
probabilities (NaN nll / bpc).

**Open vocabulary** (as for next-token scoring, :mod:`pipeline_core.spelling`): an
``<unk>`` target whose real string is known (:attr:`~pipeline_core.pairs.PairSet.spellings`:
built-in pairs from the corpus, ``tsv`` pairs from the file) also pays that string's
spelling under the shared fallback fitted on the corpus's train split
(:attr:`Codec.fallback`, set by :meth:`TransduceTask.prepare`), for every model alike:
it enters ``nll``, ``bpc`` and ``ppl``, and such a target is never an ``acc1`` /
``acc5`` hit (ranking ``<unk>`` first names no token). Text figures compare against the
real target: the target reads with each known ``<unk>`` replaced by its string (so the
``bpc`` denominator counts the real characters), while an output is read as it is, each
``<unk>`` it emits being the five characters ``<unk>``. So an output that names an
unknown word or character ``<unk>`` is not an exact match and pays the edit distance
from ``<unk>`` to the real string, like any wrong token; and the copy baseline of a
source holding ``<unk>`` pays it too. An ``<unk>`` whose string is not known (pairs
handed in with :meth:`~pipeline_core.pairs.PairSet.of`, or a task bound with
:meth:`TransduceTask.use` and no corpus, which has no fallback) is scored as before: as
the text ``<unk>`` and at ``p(<unk>)`` alone. Without ``<unk>`` targets every figure is
what it was without the charge.

The task needs its corpus before it builds batches: the experiment calls
:meth:`TransduceTask.prepare` with it (``score`` and ``baselines`` do so themselves).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field

from pipeline_core.errors import ConfigError, DataError, PluginOutputError
from pipeline_core.pairs import PairSet, PairSets, Spellings, built_in_pairs, tsv_pairs
from pipeline_core.spelling import SpellingModel
from pipeline_core.tasks import (
    IGNORE,
    Baseline,
    Batch,
    Task,
    TaskOptions,
    check_examples_fill,
    epoch_picks,
    example_batches,
    register_task,
)
from pipeline_core.vectorize import SPLIT_NAMES, Vocabulary, detokenize

if TYPE_CHECKING:
    from pipeline_core.config import TrainConfig
    from pipeline_core.contract import SequenceModel, State, TorchSequenceModel
    from pipeline_core.metrics import Scores
    from pipeline_core.vectorize import EncodedCorpus

LN2 = math.log(2.0)


class TransduceOptions(TaskOptions):
    """``task_options`` of the transduce task."""

    pairs: Literal["noisy", "reverse", "tsv"] = Field(
        default="noisy",
        description="noisy: spelling correction of text segments; reverse: a phrase's words "
        "in reverse order; tsv: source<TAB>target lines of the file `tsv`.",
    )
    noise: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="noisy: per-token probability of an edit (deletion, insertion and "
        "substitution, a third each).",
    )
    max_len: int = Field(
        default=32,
        ge=1,
        description="Longest built segment in tokens; outputs are decoded up to it (or the "
        "split's longest target).",
    )
    words: int = Field(default=3, ge=1, le=64, description="reverse: most words in a phrase.")
    tsv: str | None = Field(default=None, description="tsv: the UTF-8 file of pairs.")
    max_pairs: int | None = Field(
        default=2000, ge=1, description="At most this many pairs per split (null: all)."
    )
    beam_size: int = Field(default=1, ge=1, le=64, description="Decoding for scoring; 1: greedy.")
    seed: int = Field(default=0, ge=0, description="Seed of the built pairs (noise, lengths).")


def end_id(vocab_size: int) -> int:
    """End class of targets, start marker of decoder inputs and padding of sources."""
    return vocab_size


def pad_rows(rows: Sequence[np.ndarray], value: int, lead: int | None = None) -> np.ndarray:
    """Rows right-padded with ``value`` into one (B, L) array, ``lead`` prepended."""
    extra = 0 if lead is None else 1
    width = max((len(r) for r in rows), default=0) + extra
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, row in enumerate(rows):
        if lead is not None:
            out[i, 0] = lead
        out[i, extra : extra + len(row)] = row
    return out


def make_batch(
    sources: Sequence[np.ndarray], targets: Sequence[np.ndarray], vocab_size: int
) -> Batch:
    """Source (B, S) padded with V; inputs = V then the target, padded with V; targets =
    the target then V, IGNORE after."""
    end = end_id(vocab_size)
    source = pad_rows(sources, end)
    inputs = pad_rows(targets, end, lead=end)
    out = np.full(inputs.shape, IGNORE, dtype=np.int64)
    for i, t in enumerate(targets):
        out[i, : len(t)] = t
        out[i, len(t)] = end
    return Batch(inputs=inputs, targets=out, source=source)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions cost 1), one numpy
    row at a time: ``row[j] = min(sub/del[j], row[j-1] + 1)`` is a running minimum."""
    if not a:
        return len(b)
    if not b:
        return len(a)
    bb = np.array([ord(c) for c in b], dtype=np.int64)
    idx = np.arange(len(b) + 1)
    row = idx.copy()
    for i, ch in enumerate(a, start=1):
        best = np.empty_like(row)
        best[0] = i
        best[1:] = np.minimum(row[:-1] + (bb != ord(ch)), row[1:] + 1)
        row = np.minimum.accumulate(best - idx) + idx
    return int(row[-1])


@dataclass(frozen=True)
class Codec:
    """What turns ids into text: the corpus vocabulary and level; and the corpus's
    shared spelling fallback that charges ``<unk>`` targets (None: no corpus, no charge)."""

    vocab: Vocabulary
    level: str
    fallback: SpellingModel | None = None

    def text(self, ids: np.ndarray, spellings: Spellings = ()) -> str:
        """The text of ``ids``; each ``<unk>`` reads as its real string where
        ``spellings`` (one per ``<unk>``, in order) knows it, else as ``<unk>``."""
        tokens = self.vocab.decode(np.asarray(ids).tolist())
        if any(s is not None for s in spellings):
            real = iter(spellings)
            unk = self.vocab.unk_id
            tokens = [
                (next(real) or t) if i == unk else t
                for t, i in zip(tokens, np.asarray(ids).tolist(), strict=True)
            ]
        return detokenize(tokens, self.level)  # type: ignore[arg-type]


def spelling_charge(
    pairs: PairSet, fallback: SpellingModel | None
) -> tuple[np.ndarray, np.ndarray]:
    """Nats to add to each scored target token and end (the spelling of each ``<unk>``
    target whose string is known, 0 elsewhere), and the mask of the charged tokens."""
    nats = [np.zeros(len(t) + 1) for t in pairs.targets]
    charged = [np.zeros(len(t) + 1, dtype=bool) for t in pairs.targets]
    if fallback is not None:
        for i, t in enumerate(pairs.targets):
            for j, spelling in zip(np.flatnonzero(t == 0), pairs.spelled(i), strict=True):
                if spelling is not None:
                    nats[i][j] = fallback.bits(spelling) * LN2
                    charged[i][j] = True
    if not nats:
        return np.empty(0), np.empty(0, dtype=bool)
    return np.concatenate(nats), np.concatenate(charged)


def _check_outputs(model: Any, outputs: Any, n: int, cap: int, vocab_size: int) -> list[np.ndarray]:
    name = type(model).__name__
    if not isinstance(outputs, list | tuple) or len(outputs) != n:
        got = len(outputs) if isinstance(outputs, list | tuple) else type(outputs).__name__
        raise PluginOutputError(f"{name}: transduce returned {got} outputs for {n} sources")
    checked = []
    for i, out in enumerate(outputs):
        arr = np.asarray(out)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise PluginOutputError(f"{name}: transduce output {i} is not a 1-D id array")
        if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
            raise PluginOutputError(
                f"{name}: transduce output {i} has ids outside [0, {vocab_size})"
            )
        if len(arr) > cap:
            raise PluginOutputError(
                f"{name}: transduce output {i} has {len(arr)} ids, max_len {cap}"
            )
        checked.append(arr.astype(np.int64))
    return checked


def _check_target_logp(model: Any, rows: Any, targets: Sequence[np.ndarray]) -> np.ndarray:
    name = type(model).__name__
    if not isinstance(rows, list | tuple) or len(rows) != len(targets):
        raise PluginOutputError(f"{name}: target_log_proba returned a wrong number of rows")
    parts = []
    for i, (row, t) in enumerate(zip(rows, targets, strict=True)):
        arr = np.asarray(row, dtype=np.float64)
        if arr.shape != (len(t) + 1,):
            raise PluginOutputError(
                f"{name}: target_log_proba row {i} has shape {arr.shape}, expected ({len(t) + 1},)"
            )
        if np.isnan(arr).any() or (arr > 1e-9).any():
            raise PluginOutputError(f"{name}: target_log_proba row {i} holds NaN or values > 0")
        parts.append(arr)
    logp = np.concatenate(parts) if parts else np.empty(0)
    bad = np.flatnonzero(~np.isfinite(logp))
    if bad.size:
        raise DataError(f"{name} gives zero probability to {bad.size} target token(s)")
    return logp


def _ranks(
    model: TorchSequenceModel, pairs: PairSet, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """top1 / top5 of every target token and end under ``pair_logits`` in eval mode."""
    from pipeline_core.metrics import target_scores

    top1, top5 = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for lo in range(0, len(pairs), batch_size):
                src = pairs.sources[lo : lo + batch_size]
                tgt = pairs.targets[lo : lo + batch_size]
                batch = make_batch(src, tgt, model.vocab_size)
                logits = model.pair_logits(
                    torch.from_numpy(batch.source).to(model.device),
                    torch.from_numpy(batch.inputs).to(model.device),
                )
                lp = torch.log_softmax(logits.double(), dim=-1).cpu().numpy()
                keep = batch.targets != IGNORE
                scores = target_scores(lp[keep], batch.targets[keep])
                top1.append(scores.top1)
                top5.append(scores.top5)
    finally:
        model.train(was_training)
    return np.concatenate(top1), np.concatenate(top5)


def text_scores(
    outputs: Sequence[np.ndarray], pairs: PairSet, codec: Codec
) -> tuple[float, float, int]:
    """(exact match, cer, target characters) of outputs against the pairs' targets, as
    text: each output as it is, each target with its known ``<unk>`` strings."""
    exact, edits, chars = 0, 0, 0
    for i, out in enumerate(outputs):
        o, t = codec.text(out), codec.text(pairs.targets[i], pairs.spelled(i))
        exact += o == t
        edits += edit_distance(o, t)
        chars += len(t)
    n = len(pairs)
    return exact / n if n else math.nan, edits / chars if chars else math.nan, chars


def decode_cap(max_len: int, pairs: PairSet) -> int:
    return max(max_len, pairs.longest_target)


def score_pairs(
    model: SequenceModel, pairs: PairSet, codec: Codec, max_len: int, beam_size: int = 1
) -> Scores:
    """The transduce figures of ``model`` on ``pairs`` (see the module's docstring)."""
    from pipeline_core.contract import TorchSequenceModel
    from pipeline_core.metrics import Scores

    if not len(pairs):
        raise DataError("no pairs to score")
    cap = decode_cap(max_len, pairs)
    outputs = _check_outputs(
        model,
        model.transduce(list(pairs.sources), cap, beam_size),
        len(pairs),
        cap,
        model.vocab_size,
    )
    exact, cer, chars = text_scores(outputs, pairs, codec)
    logp = _check_target_logp(
        model, model.target_log_proba(list(pairs.sources), list(pairs.targets)), pairs.targets
    )
    charge, charged = spelling_charge(pairs, codec.fallback)
    logp = logp - charge
    nll = float(-logp.mean())
    acc1 = acc5 = math.nan
    if isinstance(model, TorchSequenceModel):
        top1, top5 = _ranks(model, pairs)
        acc1, acc5 = float((top1 & ~charged).mean()), float((top5 & ~charged).mean())
    return Scores(
        nll=nll,
        bpc=float(-logp.sum()) / LN2 / chars if chars else math.nan,
        ppl=math.exp(min(nll, 700.0)),
        acc1=acc1,
        acc5=acc5,
        n_tokens=len(logp),
        n_chars=chars,
        exact_match=exact,
        cer=cer,
    )


def copy_scores(pairs: PairSet, codec: Codec) -> Scores:
    """The copy baseline: output = source; no probabilities."""
    from pipeline_core.metrics import Scores

    exact, cer, chars = text_scores(pairs.sources, pairs, codec)
    nan = math.nan
    n_tokens = sum(len(t) + 1 for t in pairs.targets)
    return Scores(nan, nan, nan, nan, nan, n_tokens, chars, exact_match=exact, cer=cer)


def _ids_key(ids: np.ndarray) -> tuple[Any, ...]:
    arr = np.ascontiguousarray(ids)
    return (arr.shape, str(arr.dtype), hashlib.sha1(arr.tobytes()).hexdigest())


@register_task
class TransduceTask(Task):
    name = "transduce"
    method = "transduce"
    options_class = TransduceOptions
    rank_metric = "cer"
    options: TransduceOptions

    def __init__(self, options: TransduceOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        opts = self.options
        if opts.pairs == "tsv" and not opts.tsv:
            raise ConfigError(
                "invalid config: task_options.tsv: a file of source<TAB>target lines is "
                "required with pairs: tsv"
            )
        if opts.pairs != "tsv" and opts.tsv:
            raise ConfigError(
                f"invalid config: task_options.tsv is only read with pairs: tsv (pairs is "
                f"{opts.pairs})"
            )
        self._codec: Codec | None = None
        self._fixed: PairSets | None = None
        self._corpus_key: tuple[Any, ...] | None = None
        self._cache: dict[tuple[Any, ...], PairSet] = {}

    def __reduce__(self) -> tuple[Any, ...]:  # the bound corpus travels too (Dask)
        state = {k: self.__dict__[k] for k in ("_codec", "_fixed", "_corpus_key", "_cache")}
        return (type(self), (self.options.model_dump(),), state)

    # ---- binding to a corpus -------------------------------------------------------
    def prepare(self, corpus: EncodedCorpus) -> None:
        """Bind the corpus whose vocabulary, level (and, for tsv, file) the pairs use,
        and fit its shared spelling fallback (train split only) for scoring; needed
        before :meth:`batches`. Idempotent."""
        key = (corpus.text_sha256, corpus.level, corpus.bounds, corpus.vocab.tokens)
        if key == self._corpus_key:
            return
        self.use(corpus.vocab, corpus.level)
        self._codec = Codec(corpus.vocab, corpus.level, SpellingModel.fit(corpus))
        self._corpus_key = key

    def use(
        self, vocab: Vocabulary, level: str, pairs: PairSets | dict[str, PairSet] | None = None
    ) -> TransduceTask:
        """Bind a vocabulary and level directly; ``pairs`` replaces the built sets (the
        kit's and tests' own pairs). Returns the task."""
        self._codec = Codec(vocab, level)
        self._cache = {}
        self._corpus_key = None
        if pairs is not None:
            self._fixed = pairs if isinstance(pairs, PairSets) else PairSets(dict(pairs), "given")
        elif self.options.pairs == "tsv":
            assert self.options.tsv is not None
            self._fixed = tsv_pairs(self.options.tsv, vocab, level, self.options.max_pairs)
        else:
            self._fixed = None
        return self

    @property
    def codec(self) -> Codec:
        if self._codec is None:
            raise RuntimeError(
                "the transduce task builds its pairs from the corpus: call "
                "TransduceTask.prepare(corpus) first"
            )
        return self._codec

    def pairs_of(
        self, ids: np.ndarray, split: str, unk_spellings: Mapping[int, str] | None = None
    ) -> PairSet:
        """The pairs of ``split`` (built from ``ids``, that split's ids, or the fixed set);
        ``unk_spellings`` (position in ``ids`` -> string) gives built targets their real
        ``<unk>`` strings."""
        codec = self.codec
        if self._fixed is not None:
            if split not in self._fixed.splits:
                raise DataError(f"the transduce task has no {split} pairs")
            return self._fixed[split]
        key = (split, unk_spellings is not None, *_ids_key(ids))
        if key not in self._cache:
            o = self.options
            assert o.pairs != "tsv"
            self._cache[key] = built_in_pairs(
                o.pairs,
                ids,
                codec.vocab,
                codec.level,
                split=split,
                max_len=o.max_len,
                seed=o.seed,
                noise=o.noise,
                words=o.words,
                max_pairs=o.max_pairs,
                unk_spellings=unk_spellings,
            )
        return self._cache[key]

    def split_pairs(self, corpus: EncodedCorpus, split: str) -> PairSet:
        """The pairs of one split of ``corpus`` (made from that split's ids only)."""
        if split not in SPLIT_NAMES:
            raise DataError(f"unknown split '{split}'")
        self.prepare(corpus)
        start, stop = corpus.span(split)
        spellings = {p - start: s for p, s in corpus.unk_spellings.items() if start <= p < stop}
        return self.pairs_of(corpus.split(split), split, spellings)

    # ---- training --------------------------------------------------------------------
    def n_batches(
        self, train: np.ndarray, context_len: int, step: int, train_cfg: TrainConfig
    ) -> int:
        pairs = self.pairs_of(train, "train")
        if not len(pairs):
            raise DataError(
                f"the transduce task built no {self.options.pairs} pairs from the train "
                f"split's {len(train):,} tokens; use more data or raise task_options.max_len"
            )
        return example_batches(len(pairs), train_cfg)

    def check_fill(
        self, train: np.ndarray, context_len: int, step: int, train_cfg: TrainConfig
    ) -> None:
        self.n_batches(train, context_len, step, train_cfg)
        n = len(self.pairs_of(train, "train"))
        hint = " or raise task_options.max_pairs"
        check_examples_fill(self.name, n, "pair", train_cfg, hint)

    def batches(
        self,
        train: np.ndarray,
        context_len: int,
        step: int,
        train_cfg: TrainConfig,
        epoch: int,
    ) -> Iterator[Batch]:
        pairs = self.pairs_of(train, "train")
        vocab_size = len(self.codec.vocab)
        for rows in epoch_picks(len(pairs), train_cfg, epoch):
            yield make_batch(
                [pairs.sources[j] for j in rows], [pairs.targets[j] for j in rows], vocab_size
            )

    def forward(
        self, model: TorchSequenceModel, batch: Batch, state: State, progress: float
    ) -> tuple[torch.Tensor, State]:
        if batch.source is None:
            raise DataError("a transduce batch needs its source")
        source = torch.from_numpy(np.ascontiguousarray(batch.source)).to(model.device)
        inputs = torch.from_numpy(np.ascontiguousarray(batch.inputs)).to(model.device)
        return model.pair_logits(source, inputs, progress), None

    # ---- scoring ---------------------------------------------------------------------
    def scoring_label(self, plugin_cls: type[Any], carry_state: bool) -> str:
        k = self.options.beam_size
        return "greedy" if k == 1 else f"beam {k}"

    def score(
        self, model: SequenceModel, corpus: EncodedCorpus, split: str, carry_state: bool
    ) -> Scores:
        pairs = self.split_pairs(corpus, split)
        if len(corpus.vocab) != model.vocab_size:
            raise DataError(f"the model has {model.vocab_size} ids, the corpus {len(corpus.vocab)}")
        return score_pairs(model, pairs, self.codec, self.options.max_len, self.options.beam_size)

    def baselines(self, corpus: EncodedCorpus) -> list[Baseline]:
        val = copy_scores(self.split_pairs(corpus, "val"), self.codec)
        test = copy_scores(self.split_pairs(corpus, "test"), self.codec)
        return [Baseline("copy", val, test, "copy")]
