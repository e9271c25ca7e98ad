"""``classify``: a whole sequence to one label (sequence-level, through the contract).

**Data** (:mod:`pipeline_core.labelled`): ``data.source`` is read again as labelled
examples, a directory of one folder per label or ``text<TAB>label`` lines (a TSV file,
``synthetic:parity``...); the examples are shuffled with ``task_options.seed`` and cut
by ``data.splits``. Labels are the sorted distinct labels of all examples; class ids
follow that order. Characters: the corpus vocabulary's ids, but a character that no
*training* example holds becomes ``<unk>`` (id 0), so val/test see only what training
saw. Level ``char`` only.

**Model** (the contract, no per-plugin code): :meth:`TorchSequenceModel.summary` gives
one vector per right-padded sequence and :meth:`TorchSequenceModel.attach_head` adds a
``Linear(H, n_labels)`` (:meth:`ClassifyTask.setup_model`, before the optimizer);
training minimises cross-entropy of the head's logits. The head is in the state dict,
so checkpoints carry it and ``load`` rebuilds it from its weight's shape.

**Scoring** (val / test examples), with scikit-learn: ``accuracy`` (``accuracy_score``),
``macro_f1`` (``f1_score(average="macro")`` over every label) and ``log_loss``
(``log_loss`` with the explicit label list; nats per example, also ``nll``). The
leaderboard ranks by ``log_loss``, lower first. The ``majority`` baseline predicts the
train split's most frequent label, with the train label frequencies (add-one smoothed,
so its log-loss is finite) as its probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import Field

from pipeline_core.errors import ConfigError, DataError, PluginError
from pipeline_core.labelled import Example, read_examples, split_examples
from pipeline_core.tasks import (
    Baseline,
    Batch,
    ExampleTask,
    TaskOptions,
    epoch_picks,
    full_length_sample,
    register_task,
)
from pipeline_core.vectorize import SPLIT_NAMES

if TYPE_CHECKING:
    from pipeline_core.config import TrainConfig
    from pipeline_core.contract import SequenceModel, TorchSequenceModel
    from pipeline_core.diagnostics import GradientFlow
    from pipeline_core.metrics import Scores
    from pipeline_core.vectorize import EncodedCorpus, Vocabulary


class ClassifyOptions(TaskOptions):
    """``task_options`` of the classify task."""

    seed: int = Field(
        default=0, ge=0, description="Seed of the shuffle that splits the labelled examples."
    )


@dataclass(frozen=True)
class LabelledSplits:
    """Encoded examples per split and the label names (class id = index)."""

    ids: dict[str, list[np.ndarray]]
    labels: dict[str, np.ndarray]
    names: tuple[str, ...]
    #: the characters of the train examples (any other reads as ``<unk>``), sorted
    chars: tuple[str, ...] = ()
    #: the first train example's text (a served model's input example)
    example: str = ""


def text_ids(text: str, chars: Mapping[str, int]) -> np.ndarray:
    """``text``'s ids: ``chars`` maps each train character to its vocabulary id; any
    other character is ``<unk>`` (id 0)."""
    return np.array([chars.get(c, 0) for c in text], np.int64)


def char_ids(chars: Iterable[str], vocab: Vocabulary) -> dict[str, int]:
    """The vocabulary id of each train character."""
    return {ch: vocab.id_of(ch) for ch in chars}


def encode_examples(
    examples: Sequence[Example], parts: dict[str, np.ndarray], corpus: EncodedCorpus
) -> LabelledSplits:
    """Ids of every example (characters outside the train examples -> ``<unk>``) and
    class ids in the sorted label order."""
    names = tuple(sorted({ex.label for ex in examples}))
    label_id = {name: i for i, name in enumerate(names)}
    seen = {ch for i in parts["train"] for ch in examples[int(i)].text}
    char_id = char_ids(seen, corpus.vocab)
    ids, labels = {}, {}
    for split in SPLIT_NAMES:
        rows = [examples[int(i)] for i in parts[split]]
        ids[split] = [text_ids(ex.text, char_id) for ex in rows]
        labels[split] = np.array([label_id[ex.label] for ex in rows], np.int64)
    first = examples[int(parts["train"][0])].text if len(parts["train"]) else ""
    return LabelledSplits(ids, labels, names, tuple(sorted(seen)), first)


def padded(rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows right-padded with id 0 into (B, L), and their lengths (B,)."""
    lengths = np.array([len(r) for r in rows], np.int64)
    out = np.zeros((len(rows), int(lengths.max(initial=1))), np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out, lengths


def classify_logits(
    model: TorchSequenceModel, x: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """(B, n_labels) logits of the attached head over the model's summary."""
    head = model.task_head
    if head is None:
        raise PluginError(f"{type(model).__name__} has no task head: call attach_head first")
    return head(model.summary(x, lengths))


def predict_proba(
    model: TorchSequenceModel, rows: Sequence[np.ndarray], batch_size: int = 256
) -> np.ndarray:
    """Class probabilities (N, n_labels), float64, in eval mode."""
    parts = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for lo in range(0, len(rows), batch_size):
                x, lengths = padded(rows[lo : lo + batch_size])
                logits = classify_logits(
                    model, torch.from_numpy(x).to(model.device), torch.from_numpy(lengths)
                )
                parts.append(torch.softmax(logits.double(), dim=-1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(parts) if parts else np.empty((0, 0))


def label_scores(y_true: np.ndarray, proba: np.ndarray, n_chars: int = 0) -> Scores:
    """accuracy, macro-F1 and log-loss (scikit-learn) of ``proba`` (N, C) against class
    ids ``y_true``; the argmax is the prediction (ties to the lower id)."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    from pipeline_core.metrics import Scores

    if not len(y_true):
        raise DataError("no examples to score")
    labels = list(range(proba.shape[1]))
    pred = proba.argmax(axis=1)
    acc = float(accuracy_score(y_true, pred))
    f1 = float(f1_score(y_true, pred, labels=labels, average="macro", zero_division=0))
    loss = float(log_loss(y_true, proba, labels=labels))
    nan = math.nan
    return Scores(
        nll=loss,
        bpc=nan,
        ppl=math.exp(min(loss, 700.0)),
        acc1=acc,
        acc5=nan,
        n_tokens=len(y_true),
        n_chars=n_chars,
        accuracy=acc,
        macro_f1=f1,
        log_loss=loss,
    )


def majority_proba(train_labels: np.ndarray, n_labels: int, n: int) -> np.ndarray:
    """The majority baseline's rows: add-one smoothed train label frequencies."""
    counts = np.bincount(train_labels, minlength=n_labels).astype(np.float64) + 1.0
    return np.tile(counts / counts.sum(), (n, 1))


@register_task
class ClassifyTask(ExampleTask):
    name = "classify"
    method = "summary"
    options_class = ClassifyOptions
    rank_metric = "log_loss"
    options: ClassifyOptions

    def __init__(self, options: ClassifyOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._data: LabelledSplits | None = None
        self._key: tuple[Any, ...] | None = None

    # ---- binding to a corpus -------------------------------------------------------
    def prepare(self, corpus: EncodedCorpus) -> None:
        """Read and split the labelled examples of ``corpus.config.source``. Idempotent."""
        cfg = corpus.config
        key = (corpus.text_sha256, cfg.source, cfg.splits, corpus.vocab.tokens)
        if key == self._key:
            return
        if corpus.level != "char":
            raise ConfigError("data.level: the classify task reads characters (use char)")
        examples = read_examples(cfg.source, cfg.errors)
        parts = split_examples(len(examples), cfg.splits, self.options.seed)
        self._data = encode_examples(examples, parts, corpus)
        self._key = key

    @property
    def data(self) -> LabelledSplits:
        if self._data is None:
            raise RuntimeError("call ClassifyTask.prepare(corpus) first")
        return self._data

    @property
    def n_labels(self) -> int:
        return len(self.data.names)

    def setup_model(self, model: TorchSequenceModel) -> None:
        model.attach_head(self.n_labels)

    # ---- training --------------------------------------------------------------------
    def n_train_examples(self) -> int:
        return len(self.data.ids["train"])

    def batches(
        self,
        train: np.ndarray,
        context_len: int,
        step: int,
        train_cfg: TrainConfig,
        epoch: int,
    ) -> Iterator[Batch]:
        rows, labels = self.data.ids["train"], self.data.labels["train"]
        for pick in epoch_picks(len(rows), train_cfg, epoch):
            x, lengths = padded([rows[j] for j in pick])
            yield Batch(inputs=x, targets=labels[pick][:, None], lengths=lengths)

    def summary_outputs(
        self, model: TorchSequenceModel, x: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        return classify_logits(model, x, lengths)[:, None, :]  # (B, 1, n_labels)

    # ---- scoring ---------------------------------------------------------------------
    def score(
        self, model: SequenceModel, corpus: EncodedCorpus, split: str, carry_state: bool
    ) -> Scores:
        from pipeline_core.contract import TorchSequenceModel

        self.prepare(corpus)
        if not isinstance(model, TorchSequenceModel):
            raise PluginError(f"{type(model).__name__} cannot classify (no summary)")
        if model.task_head is None or model.task_head.out_features != self.n_labels:
            raise DataError(f"the model's head does not have the data's {self.n_labels} labels")
        rows = self.data.ids[split]
        proba = predict_proba(model, rows)
        return label_scores(self.data.labels[split], proba, sum(len(r) for r in rows))

    def gradient_flow(
        self, model: SequenceModel, corpus: EncodedCorpus, n: int, seed: int
    ) -> GradientFlow | None:
        """The label's cross-entropy through the head, per step of ``n`` val examples of
        one length: how much of the classification error reaches each character."""
        from pipeline_core.contract import TorchSequenceModel
        from pipeline_core.diagnostics import summary_gradient_flow

        self.prepare(corpus)
        head = model.task_head if isinstance(model, TorchSequenceModel) else None
        rows = self.data.ids["val"]
        pick = full_length_sample(np.array([len(r) for r in rows]), n, seed)
        if head is None or not len(pick):
            return None
        x = torch.from_numpy(np.stack([rows[int(i)] for i in pick]).astype(np.int64))
        y = torch.from_numpy(self.data.labels["val"][pick].astype(np.int64))
        return summary_gradient_flow(
            model,
            x,
            lambda last: torch.nn.functional.cross_entropy(
                head(last).float(), y.to(last.device), reduction="sum"
            ),
        )

    def baselines(self, corpus: EncodedCorpus) -> list[Baseline]:
        self.prepare(corpus)
        data = self.data

        def scores(split: str) -> Scores:
            y = data.labels[split]
            proba = majority_proba(data.labels["train"], self.n_labels, len(y))
            return label_scores(y, proba, sum(len(r) for r in data.ids[split]))

        return [Baseline("majority", scores("val"), scores("test"), "majority")]

    def checkpoint_extra(self) -> dict[str, Any]:
        """Name and options, the label names (class id = index), the train characters
        and an example text: what serving the checkpoint needs."""
        data = self.data
        return {
            **super().checkpoint_extra(),
            "labels": list(data.names),
            "chars": list(data.chars),
            "example": data.example,
        }


__all__ = [
    "ClassifyOptions",
    "ClassifyTask",
    "char_ids",
    "label_scores",
    "padded",
    "predict_proba",
    "text_ids",
]
