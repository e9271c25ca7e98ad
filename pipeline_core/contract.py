"""The plugin contract every model in seqlab satisfies, neural or count-based.

A plugin is a class registered in the entry-point group ``seqlab.models``. It declares

* ``config_class``: a pydantic model of its hyper-parameters, every field with a default;
* ``task_kinds``: the tasks it supports (:data:`TASK_KINDS`);
* ``test_params``: a small config for the conformance kit (fast to fit, still meaningful);

and answers one question, :meth:`SequenceModel.log_proba`: natural-log probabilities of
the next token over the whole vocabulary, given a batch of contexts. Metrics, generation,
serving and comparison use only that, so nothing special-cases a plugin.

A count-based plugin learns in :meth:`SequenceModel.fit` from a :class:`FitData` (it
never sees trainer settings). A neural plugin subclasses :class:`TorchSequenceModel`
and writes only ``forward``; seqlab's Trainer (``pipeline_core.training``) fits it. A
recurrent plugin may set ``stateful = True`` and implement
``forward(x, state=None) -> (logits, state)``: it then trains by truncated BPTT over
contiguous streams and scores a split in one O(N) pass carrying its state.

Carried-state scoring is optional for any plugin: one that answers
:meth:`SequenceModel.stream_log_proba` says so per instance (:attr:`~SequenceModel.can_stream`)
and, for a run, per config (:meth:`~SequenceModel.scores_streaming`): a stateful neural
plugin trained by stateful BPTT does, and so does a mixture holding one. The default is
windows, so a plugin written before this changes nothing.

This module imports neither the trainer nor the metrics (a test keeps it so).

Construction takes only ``vocab_size`` and a config (no data-dependent state before
``fit``). Checkpoints hold the construction arguments, the vocabulary and the weights
as tensors, and are loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import pickle
import random
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from pipeline_core.config import TrainConfig, validate_model
from pipeline_core.errors import ConfigError, DataError, PluginError

TaskKind = Literal["next-token", "fill-blank", "transduce", "classify", "regress"]
TASK_KINDS: tuple[TaskKind, ...] = (
    "next-token",
    "fill-blank",
    "transduce",
    "classify",
    "regress",
)
#: A recurrent state: a tensor, or a tuple of tensors (an LSTM's (h, c)), or None.
State = Any
CHECKPOINT_FORMAT = 1


class PluginConfig(BaseModel):
    """Base of every plugin's typed config: all fields have defaults, unknown keys fail."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class FitData:
    """What a plugin may learn from: integer token ids of the train (and val) split."""

    train: np.ndarray
    val: np.ndarray | None
    vocab_size: int
    context_len: int
    step: int = 1


@dataclass(frozen=True)
class EpochRecord:
    """Per-epoch figures logged to MLflow (``nan`` where a plugin has none)."""

    epoch: int
    train_nll: float
    val_nll: float
    grad_norm: float = float("nan")
    tokens_per_s: float = float("nan")
    seconds: float = float("nan")
    lr: float = float("nan")


EpochCallback = Callable[[EpochRecord], None]


class NotFittedError(PluginError):
    """A model was asked for probabilities before it was fitted or loaded."""


class AdaptNotSupported(PluginError):
    """A model cannot learn during evaluation (:meth:`SequenceModel.adapt`): its dynamic
    figures are reported as not available, never silently static ones."""


class SequenceModel(ABC):
    """The contract. Subclass :class:`TorchSequenceModel` for a neural plugin."""

    config_class: ClassVar[type[PluginConfig]] = PluginConfig
    task_kinds: ClassVar[frozenset[TaskKind]] = frozenset({"next-token"})
    test_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, vocab_size: int, config: PluginConfig | Mapping[str, Any] | None = None):
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int | np.integer):
            raise ConfigError(f"vocab_size: must be an integer (got {vocab_size!r})")
        if vocab_size < 1:
            raise ConfigError(f"vocab_size: must be >= 1 (got {vocab_size})")
        self.vocab_size = int(vocab_size)
        self.config = self.make_config(config)

    # ---- configuration -------------------------------------------------------------
    @classmethod
    def make_config(cls, values: PluginConfig | Mapping[str, Any] | None) -> PluginConfig:
        """Validate ``values`` into ``config_class``; errors name the plugin's field."""
        if isinstance(values, PluginConfig) and not isinstance(values, cls.config_class):
            raise ConfigError(
                f"config: expected {cls.config_class.__name__}, got {type(values).__name__}"
            )
        return validate_model(cls.config_class, values, where=cls.__name__)

    @classmethod
    def create(
        cls,
        vocab_size: int,
        config: PluginConfig | Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> Self:
        """Construct under a seed, so initial weights are reproducible."""
        seed_everything(seed)
        return cls(vocab_size, config)

    def init_args(self) -> dict[str, Any]:
        """Construction arguments, stored in every checkpoint."""
        return {"vocab_size": self.vocab_size, "config": self.config.model_dump(mode="json")}

    # ---- learning and scoring ------------------------------------------------------
    @abstractmethod
    def fit(self, data: FitData, on_epoch: EpochCallback | None = None) -> list[EpochRecord]:
        """Count-based plugins: learn from ``data``; return its records (usually one).

        Neural plugins do not implement this: the Trainer fits them."""

    @abstractmethod
    def log_proba(self, contexts: np.ndarray) -> np.ndarray:
        """Next-token log-probabilities.

        ``contexts`` is an int array of shape (B, T) with T >= 1 (shorter than the training
        window is allowed); the result is float64 of shape (B, vocab_size) and each row's
        ``exp`` sums to 1.
        """

    def fill_blank_log_proba(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """For ``fill-blank`` plugins: log p(token | left context, right context), (B, V)."""
        raise PluginError(f"{type(self).__name__} does not support the fill-blank task")

    def transduce(
        self, sources: Sequence[np.ndarray], max_len: int, beam_size: int = 1
    ) -> list[np.ndarray]:
        """For ``transduce`` plugins: the output ids for each source (1-D id arrays),
        at most ``max_len`` tokens each; ``beam_size`` 1 is greedy decoding."""
        raise PluginError(f"{type(self).__name__} does not support the transduce task")

    def target_log_proba(
        self, sources: Sequence[np.ndarray], targets: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """For ``transduce`` plugins: log p(target token | source, earlier target tokens)
        for every token of each target and its end, (len(target) + 1,) per pair."""
        raise PluginError(f"{type(self).__name__} does not support the transduce task")

    def adapt(self, history: np.ndarray, new: int) -> None:
        """Dynamic evaluation, count-based plugins: learn from the last ``new`` tokens of
        ``history`` (1-D ids), all of which were just scored. ``history`` is the whole text
        since dynamic scoring began, so a model can count what straddles segments. It is
        called on a copy, never on the static model. Neural plugins need not implement
        it: seqlab adapts their weights by SGD (:mod:`pipeline_core.dynamic`) and calls
        an override after each step, for what the gradient does not reach. Default: not
        supported, so a count-based plugin's dynamic figures are n/a."""
        raise AdaptNotSupported(f"{type(self).__name__} cannot adapt during evaluation")

    def context_reach(self) -> int | None:
        """How many previous tokens a next-token prediction can depend on, by the model's
        design (an n-gram of order N: N - 1); None: no limit of its own (a recurrent
        state), so only the scoring window limits it. The demo's explanation compares it
        with how far back a source's law reaches."""
        return None

    def stream_log_proba(
        self, ids: np.ndarray, state: State = None, chunk: int = 512
    ) -> tuple[np.ndarray, State]:
        """Carried-state scoring (only where :attr:`can_stream`): log p(ids[t+1] | all
        read so far) for every t, (len(ids), V), and the state that continues after
        ``ids`` (``state=None``: a fresh start); ``chunk`` bounds one neural pass."""
        raise PluginError(f"{type(self).__name__} carries no state")

    @property
    def can_stream(self) -> bool:
        """Whether this instance answers :meth:`stream_log_proba` (default: no)."""
        return False

    @classmethod
    def trained_parts(
        cls, config: Mapping[str, Any]
    ) -> list[tuple[str, type[TorchSequenceModel], TrainConfig]]:
        """The neural models this plugin trains with seqlab's Trainer inside its own
        ``fit`` (a mixture's components): ``(name, class, settings)`` each, so a run
        refuses settings their batches cannot fill before it starts, as it does for a
        neural plugin. Default: none."""
        return []

    @classmethod
    def scores_streaming(cls, config: Mapping[str, Any], train: TrainConfig) -> bool:
        """Whether a run scores a model of this class, built from ``config`` and trained
        under ``train``, with its state carried (the leaderboard's "carried state")
        rather than on windows. Decided from the config, before anything is built."""
        return False

    @property
    @abstractmethod
    def is_fitted(self) -> bool:
        """True once fitted or loaded: only then are probabilities meaningful."""

    # ---- persistence ---------------------------------------------------------------
    @abstractmethod
    def get_state(self) -> dict[str, torch.Tensor]:
        """Everything learned, as tensors (so ``weights_only=True`` can load it).

        Before ``fit``: a neural model returns its initial weights; a count-based model
        has learned nothing and raises :class:`NotFittedError` (an empty state saved and
        reloaded would pose as a fitted model)."""

    @abstractmethod
    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what :meth:`get_state` returned; marks the model fitted."""

    def save(
        self,
        path: str | Path,
        vocab: Sequence[str] | None = None,
        plugin: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write a checkpoint: construction arguments, vocabulary, state tensors."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "plugin": plugin,
            "class_path": f"{type(self).__module__}:{type(self).__qualname__}",
            "init_args": self.init_args(),
            "vocab": list(vocab) if vocab is not None else None,
            "state": {k: v.detach().cpu().clone() for k, v in self.get_state().items()},
            "extra": dict(extra or {}),
        }
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_torch(payload, out)
        return out

    @classmethod
    def load(cls, path: str | Path, vocab: Sequence[str] | None = None) -> Self:
        """Rebuild from a checkpoint; with ``vocab``, refuse one trained on another."""
        payload = read_checkpoint(path)
        check_vocab(payload, vocab, path)
        args = payload["init_args"]
        model = cls(int(args["vocab_size"]), args["config"])
        model.set_state(payload["state"])
        return model


_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_weights_only(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain data only, so a pickle that
    would import anything else (and could run code) is refused before any of it runs.
    torch's warnings stay off the console; every failure is one DataError line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = _UNSAFE_GLOBAL.search(str(err))
        if unsafe is None:
            raise DataError(f"{path}: not a seqlab checkpoint (UnpicklingError)") from None
        raise DataError(
            f"{path}: not a seqlab checkpoint: refused to unpickle {unsafe.group(1)} (only "
            "tensors and plain data are loaded, so nothing in the file runs)"
        ) from None
    except Exception as err:  # torch raises many kinds for a corrupt or foreign file
        raise DataError(f"{path}: not a seqlab checkpoint ({type(err).__name__})") from None


def _malformed(payload: dict[str, Any]) -> str | None:
    """The first entry of a format-1 payload whose type is wrong (None if all are fine)."""
    args = payload.get("init_args")
    if not (
        isinstance(args, dict)
        and type(args.get("vocab_size")) is int
        and isinstance(args.get("config"), dict | None)
    ):
        return "init_args"
    state = payload.get("state")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        return "state"
    vocab = payload.get("vocab")
    if vocab is not None and not (
        isinstance(vocab, list) and all(isinstance(t, str) for t in vocab)
    ):
        return "vocab"
    for key, kind in (("plugin", str), ("class_path", str), ("extra", dict)):
        if payload.get(key) is not None and not isinstance(payload[key], kind):
            return key
    extra = payload.get("extra") or {}
    for key, kind in (("data", dict), ("scoring", str)):
        if extra.get(key) is not None and not isinstance(extra[key], kind):
            return f"extra.{key}"
    return None


def write_torch(payload: Any, path: Path) -> None:
    """``torch.save`` with a one-line error when the file cannot be written (a full
    disk makes torch raise an obscure ``RuntimeError`` from its zip writer)."""
    try:
        torch.save(payload, path)
    except (OSError, RuntimeError) as err:
        path.unlink(missing_ok=True)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise DataError(
            f"{path}: could not write the checkpoint ({' '.join(reason.split())[:120]}); "
            "is the disk full or the folder unwritable?"
        ) from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True``; one-line error if unreadable."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"checkpoint not found: {p}")
    payload = load_weights_only(p)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{p}: not a seqlab checkpoint (format {CHECKPOINT_FORMAT} expected)")
    bad = _malformed(payload)
    if bad is not None:
        raise DataError(f"{p}: not a seqlab checkpoint: its {bad!r} entry is missing or malformed")
    return {**payload, "extra": payload.get("extra") or {}}


def check_vocab(payload: Mapping[str, Any], vocab: Sequence[str] | None, path: Any) -> None:
    """Refuse a checkpoint whose vocabulary differs from the data's."""
    saved = payload.get("vocab")
    if vocab is None or saved is None:
        return
    if list(saved) != list(vocab):
        diff = next(
            (i for i, (a, b) in enumerate(zip(saved, vocab, strict=False)) if a != b),
            min(len(saved), len(vocab)),
        )
        raise DataError(
            f"{path}: checkpoint vocabulary ({len(saved)} tokens) does not match the data's "
            f"({len(vocab)} tokens); first difference at id {diff}"
        )


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch: same seed, same weights, same samples."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def as_context_array(contexts: Any) -> np.ndarray:
    """Validate a batch of contexts: a 2-D integer array of shape (B, T)."""
    arr = np.asarray(contexts)
    if arr.ndim != 2:
        raise DataError(f"contexts must be a 2-D array (batch, time), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"contexts must hold integer token ids, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def detach_state(state: State) -> State:
    """Cut a carried state from the graph (truncated BPTT), whatever its nesting."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple | list):
        return type(state)(detach_state(s) for s in state)
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    raise PluginError(f"a carried state must be tensors, tuples or dicts (got {type(state)})")


class TorchSequenceModel(torch.nn.Module, SequenceModel):
    """Base of neural plugins: define ``forward`` and the one Trainer does the rest.

    Stateless (the default): ``forward(x)`` takes token ids (B, T) and returns logits
    (B, T, V); position t predicts token t+1 (teacher forcing). With ``stateful = True``:
    ``forward(x, state=None)`` returns ``(logits, state)``, where ``state=None`` means a
    fresh start and the returned state continues the sequence exactly. ``log_proba``
    reads the last position of a fresh pass over each context.
    """

    #: True when ``forward(x, state=None) -> (logits, state)`` carries a state.
    stateful: ClassVar[bool] = False
    #: a sequence-level task's head over :meth:`summary` (:meth:`attach_head`), or None
    task_head: torch.nn.Linear | None
    #: float features -> the model's input width, for ``regress`` (:meth:`attach_value_input`)
    value_input: torch.nn.Linear | None

    def fill_blank_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Neural ``fill-blank`` plugins: logits (B, T, V) where position t predicts
        ``x[:, t]`` from ``x[:, :t]`` and ``x[:, t+1:]``, never from ``x[:, t]`` itself
        (the fill-blank task trains on it)."""
        raise PluginError(f"{type(self).__name__} does not support the fill-blank task")

    def pair_logits(
        self, source: torch.Tensor, target_in: torch.Tensor, progress: float = 1.0
    ) -> torch.Tensor:
        """Neural ``transduce`` plugins: logits (B, T, V + 1) for each target position
        (class V is the end of the sequence), given the padded ``source`` (B, S) and the
        decoder's inputs ``target_in`` (B, T); ``progress`` in [0, 1] is how far training
        has gone, for a teacher-forcing schedule (the transduce task trains on it)."""
        raise PluginError(f"{type(self).__name__} does not support the transduce task")

    def hidden_sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """For gradient diagnostics: ``(logits (B, T, V), hidden (B, T, H))`` from one
        fresh pass, where ``hidden[:, t]`` is the state h_t the logits at t are computed
        from, and a gradient taken on ``hidden[:, t]`` includes the paths through every
        later step (a fused layer's output tensor does not: see
        ``plugins.recurrent.hidden_through_time``). None: no such state exposed."""
        return None

    def states_through_time(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """For the gradient diagnostics of sequence-level tasks (classify, regress):
        ``(states, hidden)``, both (B, T, H), of one fresh pass over ids ``x`` (B, T) or
        float rows (B, T, F) (through :meth:`attach_value_input`'s layer). ``states[:, -1]``
        is what :meth:`summary` / :meth:`summary_values` return for full-length rows (a
        loss is computed from it); ``hidden`` holds the same values, and the gradient of
        that loss on ``hidden[:, t]`` includes the paths through every later step (as in
        :meth:`hidden_sequence`). None: no such state exposed."""
        return None

    def summary(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Sequence-level tasks (``classify``): one vector (B, H) per sequence of ids
        ``x`` (B, T), right-padded after ``lengths[b]`` >= 1 tokens (the padding must not
        change the result). Recurrent plugins return their final state; the task's head
        (:meth:`attach_head`) reads it, so a plugin writes no per-task code."""
        raise PluginError(f"{type(self).__name__} gives no sequence summary (classify task)")

    def summary_values(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Float inputs (``regress``): one vector (B, H) per sequence of feature rows
        ``values`` (B, T, F), right-padded after ``lengths[b]`` >= 1 rows (the padding
        must not change the result), read through :meth:`attach_value_input`'s layer.
        Token ids are what most plugins embed, so this is a separate, optional path."""
        raise PluginError(f"{type(self).__name__} takes no float inputs (regress task)")

    def attach_value_input(self, n_features: int) -> torch.nn.Linear:
        """Register the layer that brings ``n_features`` floats per step into the model as
        ``value_input`` (in ``state_dict`` and checkpoints like ``task_head``; its weight
        shape records its size so :meth:`set_state` rebuilds it)."""
        raise PluginError(f"{type(self).__name__} takes no float inputs (regress task)")

    def attach_head(self, n_out: int, features: int | None = None) -> torch.nn.Linear:
        """Register ``Linear(H, n_out)`` over :meth:`summary` (over :meth:`summary_values`
        of ``features`` floats per step when given) as ``task_head``: it is then trained,
        in ``state_dict`` and in checkpoints, whose weight shape records its size so
        :meth:`set_state` rebuilds it. Kept when one of that size is attached."""
        head = self.task_head
        if head is not None and head.out_features == n_out:
            return head
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                one = torch.ones(1, dtype=torch.long)
                if features is None:
                    probe = torch.zeros(1, 1, dtype=torch.long, device=self.device)
                    width = self.summary(probe, one).shape[-1]
                else:
                    rows = torch.zeros(1, 1, features, device=self.device)
                    width = self.summary_values(rows, one).shape[-1]
        finally:
            self.train(was_training)
        head = torch.nn.Linear(int(width), n_out).to(self.device)
        self.task_head = head
        return head

    def __init__(self, vocab_size: int, config: PluginConfig | Mapping[str, Any] | None = None):
        torch.nn.Module.__init__(self)
        SequenceModel.__init__(self, vocab_size, config)
        self._fitted = False
        self.task_head = None
        self.value_input = None

    @abstractmethod
    def forward(self, x: torch.Tensor, *args: Any) -> Any:
        """Logits (B, T, V) for ids (B, T); stateful: ``(logits, state)``."""

    def fit(self, data: FitData, on_epoch: EpochCallback | None = None) -> list[EpochRecord]:
        raise PluginError(
            f"{type(self).__name__} is a neural plugin: seqlab's Trainer fits it "
            "(seqlab.api.train(model, data, TrainConfig(...)))"
        )

    def step(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        """One pass that every caller uses: ``(logits, state)`` for either kind of plugin."""
        if self.stateful:
            out = self(x, state)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise PluginError(
                    f"{type(self).__name__} is stateful: forward(x, state) must return "
                    "(logits, state)"
                )
            return out[0], out[1]
        if state is not None:
            raise PluginError(f"{type(self).__name__} carries no state")
        return self(x), None

    @property
    def device(self) -> torch.device:
        first = next(self.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def check_ids(self, ctx: np.ndarray) -> None:
        if ctx.shape[1] == 0:
            raise DataError("a neural plugin needs a context of at least one token")
        if ctx.size and (ctx.min() < 0 or ctx.max() >= self.vocab_size):
            raise DataError(f"token ids must lie in [0, {self.vocab_size})")

    @torch.no_grad()
    def log_proba(self, contexts: np.ndarray) -> np.ndarray:
        ctx = as_context_array(contexts)
        self.check_ids(ctx)
        was_training = self.training
        self.eval()
        try:
            logits, _ = self.step(torch.from_numpy(ctx).to(self.device))
            out = torch.log_softmax(logits[:, -1, :].double(), dim=-1)
        finally:
            self.train(was_training)
        return out.cpu().numpy()

    @property
    def can_stream(self) -> bool:
        return bool(self.stateful)

    @classmethod
    def scores_streaming(cls, config: Mapping[str, Any], train: TrainConfig) -> bool:
        """Stateful plugins trained by stateful BPTT: scored as they were trained."""
        return bool(cls.stateful) and train.bptt == "stateful"

    @torch.no_grad()
    def stream_log_proba(
        self, ids: np.ndarray, state: State = None, chunk: int = 512
    ) -> tuple[np.ndarray, State]:
        """Stateful plugins: log p(ids[t+1] | ids[..t]) for every t, (len(ids), V), in one
        O(N) pass, in chunks, carrying the state; row t predicts the token after ids[t]."""
        if not self.stateful:
            raise PluginError(f"{type(self).__name__} carries no state")
        seq = as_context_array(np.asarray(ids).reshape(1, -1))
        self.check_ids(seq)
        was_training = self.training
        self.eval()
        rows = []
        try:
            for start in range(0, seq.shape[1], chunk):
                x = torch.from_numpy(seq[:, start : start + chunk]).to(self.device)
                logits, state = self.step(x, state)
                rows.append(torch.log_softmax(logits[0].double(), dim=-1).cpu().numpy())
        finally:
            self.train(was_training)
        return np.concatenate(rows), state

    def mark_fitted(self) -> None:
        """Called by the Trainer once training ends."""
        self._fitted = True

    @property
    def is_fitted(self) -> bool:
        return self._fitted

    def get_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        weight = state.get("task_head.weight")
        if weight is not None and weight.ndim == 2:  # a sequence-level task's head
            self.task_head = torch.nn.Linear(int(weight.shape[1]), int(weight.shape[0]))
        weight = state.get("value_input.weight")
        if weight is not None and weight.ndim == 2:  # regress's float input layer
            self.value_input = torch.nn.Linear(int(weight.shape[1]), int(weight.shape[0]))
        try:
            self.load_state_dict(dict(state), strict=True)
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise DataError(f"checkpoint does not fit {type(self).__name__}: {first}") from None
        self._fitted = True
