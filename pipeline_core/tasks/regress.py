"""``regress``: numeric sequences to a number, or the next value of a time series.

**Data**, read from ``data.source`` again (the corpus vocabulary is not used):

* a ``.csv`` file or URL (:mod:`pipeline_core.numeric_series`): a time series of one or
  more numeric columns; the task predicts the next value of the first column (or
  ``task_options.target``) from the ``data.context_len`` previous rows of every column.
  Rows are cut contiguously by ``data.splits`` (the tail is the test set); a val/test
  target's window may reach back into the previous split (past observations, never a
  later one). Inputs and target are standardised with the train rows' mean and std;
  metrics are in the original units.
* anything else (a file, ``synthetic:adding``...): one example per line,
  ``v,v;v,v;...<TAB>target`` (:mod:`pipeline_core.numeric_examples`), shuffled with
  ``task_options.seed`` and cut by ``data.splits``; values used as they are.

**Model** (the contract): :meth:`TorchSequenceModel.attach_value_input` projects the F
features into the model's input width and :meth:`TorchSequenceModel.summary_values`
runs its recurrent stack over them; ``attach_head(1)`` reads that summary. Both layers
are in the state dict, so checkpoints carry them. Training minimises the MSE.

**Scoring** with scikit-learn: ``mse`` (``mean_squared_error``, also ``nll`` so per-epoch
validation and early stopping work) and ``mae`` (``mean_absolute_error``); ranked by mse.
The ``persistence`` baseline predicts the last observed value of the target column; on a
source that declares a constant answer (``synthetic:adding``: 1.0, MSE 1/6) it predicts
that constant, and on other example files the last step's first feature.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from pipeline_core.errors import ConfigError, DataError, PluginError
from pipeline_core.tasks import (
    Baseline,
    Batch,
    ExampleTask,
    TaskOptions,
    epoch_picks,
    full_length_sample,
    register_task,
)
from pipeline_core.vectorize import SPLIT_NAMES, split_bounds

if TYPE_CHECKING:
    from pipeline_core.config import DataConfig, TrainConfig
    from pipeline_core.contract import SequenceModel, TorchSequenceModel
    from pipeline_core.diagnostics import GradientFlow
    from pipeline_core.metrics import Scores
    from pipeline_core.vectorize import EncodedCorpus


class RegressOptions(TaskOptions):
    """``task_options`` of the regress task."""

    seed: int = Field(
        default=0,
        ge=0,
        description="Seed of the shuffle that splits example lines (a CSV series is split "
        "contiguously).",
    )
    target: str | None = Field(
        default=None,
        description="CSV series: the column whose next value is predicted (default: the first).",
    )


@dataclass(frozen=True)
class NumericSplits:
    """Per split: right-padded model inputs (N, T, F), their lengths (N,), targets and the
    persistence baseline's predictions (N,) in original units; the target's scale."""

    values: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    persistence: dict[str, np.ndarray]
    mean: float
    std: float
    baseline: str  # how the persistence row predicts (its scoring label)
    #: a CSV series: each column's train mean and std (inputs are standardised by them),
    #: the rows per input window, the column names and the target column
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()
    window: int | None = None
    columns: tuple[str, ...] = ()
    target: str | None = None
    #: the first train example's steps (T, F) in original units (an input example)
    example: tuple[tuple[float, ...], ...] = ()

    @property
    def n_features(self) -> int:
        return int(self.values["train"].shape[2])


def is_series(source: str) -> bool:
    """A ``.csv`` path or URL is a time series; anything else holds example lines."""
    return source.split("?", 1)[0].lower().endswith(".csv")


def series_splits(
    frame: pd.DataFrame, data: DataConfig, target: str | None, name: str
) -> NumericSplits:
    """Windows of ``data.context_len`` rows before each target row, standardised by the
    train rows; contiguous splits."""
    columns = [str(c) for c in frame.columns]
    column = target if target is not None else columns[0]
    if column not in columns:
        raise ConfigError(
            f"task_options.target: no column {column!r} in {name} (columns: {', '.join(columns)})"
        )
    col = columns.index(column)
    raw = frame.to_numpy(np.float64)
    n, width = len(raw), data.context_len
    b0, b1 = split_bounds(n, data.splits)
    ranges = dict(
        zip(SPLIT_NAMES, ((width, b0), (max(b0, width), b1), (max(b1, width), n)), strict=True)
    )
    empty = [s for s, (lo, hi) in ranges.items() if hi <= lo]
    if empty:
        raise DataError(
            f"{name}: {n:,} rows split {tuple(data.splits)} leave the {empty[0]} split no "
            f"target after a window of data.context_len={width} rows; give more rows or "
            "lower data.context_len"
        )
    mean = raw[:b0].mean(axis=0)
    std = raw[:b0].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    z = standardised(raw, mean, std)
    windows = np.lib.stride_tricks.sliding_window_view(z, width, axis=0).transpose(0, 2, 1)
    values, lengths, targets, persistence = {}, {}, {}, {}
    for split, (lo, hi) in ranges.items():
        rows = np.arange(lo, hi)
        values[split] = np.ascontiguousarray(windows[rows - width])
        lengths[split] = np.full(len(rows), width, np.int64)
        targets[split] = raw[rows, col]
        persistence[split] = raw[rows - 1, col]
    return NumericSplits(
        values,
        lengths,
        targets,
        persistence,
        float(mean[col]),
        float(std[col]),
        "last value",
        input_mean=tuple(float(v) for v in mean),
        input_std=tuple(float(v) for v in std),
        window=width,
        columns=tuple(columns),
        target=column,
        example=tuple(tuple(float(v) for v in r) for r in raw[:width]),
    )


def standardised(
    raw: np.ndarray, mean: Sequence[float] | np.ndarray, std: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Rows of a series (..., F) as the model reads them: ``(raw - mean) / std`` per
    column, float32 (as :func:`series_splits` computes them)."""
    return ((raw - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)).astype(np.float32)


def example_splits(source: str, data: DataConfig, seed: int) -> NumericSplits:
    """Example lines shuffled and cut by ``data.splits``; unscaled."""
    from pipeline_core.labelled import split_examples
    from pipeline_core.numeric_examples import parse_examples
    from pipeline_core.sources import load_documents, synthetic_metadata

    docs = load_documents(source, errors=data.errors)
    parsed = [
        parse_examples(str(text), str(doc_id))
        for doc_id, text in zip(docs["doc_id"], docs["text"], strict=True)
    ]
    rows = [v for p in parsed for v in p.values]
    ys = np.concatenate([p.targets for p in parsed])
    if len({r.shape[1] for r in rows}) != 1:
        raise DataError(f"{source}: documents with different numbers of features per step")
    constant = (synthetic_metadata(source) or {}).get("constant")
    parts = split_examples(len(rows), data.splits, seed)
    values, lengths, targets, persistence = {}, {}, {}, {}
    for split in SPLIT_NAMES:
        pick = [rows[int(i)] for i in parts[split]]
        values[split], lengths[split] = padded_values(pick)
        targets[split] = ys[parts[split]]
        last = np.array([r[-1, 0] for r in pick], np.float64)
        persistence[split] = last if constant is None else np.full(len(pick), float(constant))
    label = "last value" if constant is None else f"constant {float(constant):g}"
    first = rows[int(parts["train"][0])] if len(parts["train"]) else np.empty((0, 0))
    example = tuple(tuple(float(v) for v in step) for step in first)
    return NumericSplits(values, lengths, targets, persistence, 0.0, 1.0, label, example=example)


def padded_values(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows (T_i, F) right-padded with 0 into float32 (N, T, F), and their lengths."""
    lengths = np.array([len(r) for r in rows], np.int64)
    width = rows[0].shape[1] if rows else 1
    out = np.zeros((len(rows), int(lengths.max(initial=1)), width), np.float32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out, lengths


def value_predictions(
    model: TorchSequenceModel, x: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """(B,) standardised predictions of the head over :meth:`summary_values`."""
    head = model.task_head
    if head is None:
        raise PluginError(f"{type(model).__name__} has no task head: call attach_head first")
    return head(model.summary_values(x, lengths))[:, 0]


def predict(
    model: TorchSequenceModel, data: NumericSplits, split: str, batch: int = 512
) -> np.ndarray:
    """Predictions (N,) for ``split`` in original units, in eval mode."""
    return predict_values(
        model, data.values[split], data.lengths[split], data.mean, data.std, batch
    )


def predict_values(
    model: TorchSequenceModel,
    values: np.ndarray,
    lengths: np.ndarray,
    mean: float,
    std: float,
    batch: int = 512,
) -> np.ndarray:
    """Predictions (N,) in original units (``z * std + mean``) for right-padded float32
    inputs (N, T, F) of ``lengths`` (N,), in eval mode."""
    parts = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for lo in range(0, len(values), batch):
                x = torch.from_numpy(values[lo : lo + batch]).to(model.device)
                n = torch.from_numpy(lengths[lo : lo + batch])
                parts.append(value_predictions(model, x, n).double().cpu().numpy())
    finally:
        model.train(was_training)
    z = np.concatenate(parts) if parts else np.empty(0)
    return z * std + mean


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> Scores:
    """MSE and MAE (scikit-learn) of ``y_pred`` against ``y_true``; ``nll`` carries the MSE."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    from pipeline_core.metrics import Scores

    if not len(y_true):
        raise DataError("no examples to score")
    if not np.isfinite(y_pred).all():
        raise PluginError("the model predicted NaN or inf")
    mse = float(mean_squared_error(y_true, y_pred))
    mae = float(mean_absolute_error(y_true, y_pred))
    nan = math.nan
    return Scores(
        nll=mse, bpc=nan, ppl=nan, acc1=nan, acc5=nan, n_tokens=len(y_true), n_chars=0,
        mse=mse, mae=mae,
    )  # fmt: skip


@register_task
class RegressTask(ExampleTask):
    name = "regress"
    method = "summary_values"
    options_class = RegressOptions
    rank_metric = "mse"
    options: RegressOptions

    def __init__(self, options: RegressOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._data: NumericSplits | None = None
        self._key: tuple[Any, ...] | None = None

    # ---- binding to a corpus -------------------------------------------------------
    def prepare(self, corpus: EncodedCorpus) -> None:
        """Read and split the numeric data of ``corpus.config.source``. Idempotent."""
        cfg = corpus.config
        key = (corpus.text_sha256, cfg.source, cfg.splits, cfg.context_len, cfg.errors)
        if key == self._key:
            return
        if is_series(cfg.source):
            from pipeline_core.numeric_series import read_series

            frame = read_series(cfg.source, cfg.errors)
            self._data = series_splits(frame, cfg, self.options.target, cfg.source)
        else:
            self._data = example_splits(cfg.source, cfg, self.options.seed)
        self._key = key

    @property
    def data(self) -> NumericSplits:
        if self._data is None:
            raise RuntimeError("call RegressTask.prepare(corpus) first")
        return self._data

    def setup_model(self, model: TorchSequenceModel) -> None:
        model.attach_value_input(self.data.n_features)
        model.attach_head(1, features=self.data.n_features)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(outputs, targets.to(outputs.dtype))

    # ---- training --------------------------------------------------------------------
    def n_train_examples(self) -> int:
        return len(self.data.targets["train"])

    def batches(
        self,
        train: np.ndarray,
        context_len: int,
        step: int,
        train_cfg: TrainConfig,
        epoch: int,
    ) -> Iterator[Batch]:
        data = self.data
        z = ((data.targets["train"] - data.mean) / data.std).astype(np.float32)
        for pick in epoch_picks(len(z), train_cfg, epoch):
            lengths = data.lengths["train"][pick]
            x = data.values["train"][pick, : int(lengths.max())]
            yield Batch(inputs=x, targets=z[pick], lengths=lengths)

    def summary_outputs(
        self, model: TorchSequenceModel, x: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        return value_predictions(model, x, lengths)

    # ---- scoring ---------------------------------------------------------------------
    def score(
        self, model: SequenceModel, corpus: EncodedCorpus, split: str, carry_state: bool
    ) -> Scores:
        from pipeline_core.contract import TorchSequenceModel

        self.prepare(corpus)
        if not isinstance(model, TorchSequenceModel):
            raise PluginError(f"{type(model).__name__} cannot regress (no summary_values)")
        value_input = model.value_input
        if value_input is None or value_input.in_features != self.data.n_features:
            raise DataError(
                f"the model's value input does not take the data's {self.data.n_features} features"
            )
        return regression_scores(self.data.targets[split], predict(model, self.data, split))

    def gradient_flow(
        self, model: SequenceModel, corpus: EncodedCorpus, n: int, seed: int
    ) -> GradientFlow | None:
        """The squared error of the prediction (in the units the model is trained in),
        per step of ``n`` val examples of one length: on the adding problem, how much of
        the error reaches the marked steps far from the end."""
        from pipeline_core.contract import TorchSequenceModel
        from pipeline_core.diagnostics import summary_gradient_flow

        self.prepare(corpus)
        data = self.data
        head = model.task_head if isinstance(model, TorchSequenceModel) else None
        pick = full_length_sample(data.lengths["val"], n, seed)
        if head is None or not len(pick):
            return None
        width = int(data.lengths["val"][pick[0]])
        x = torch.from_numpy(np.ascontiguousarray(data.values["val"][pick, :width]))
        z = torch.from_numpy((data.targets["val"][pick] - data.mean) / data.std).float()
        return summary_gradient_flow(
            model,
            x,
            lambda last: ((head(last)[:, 0].float() - z.to(last.device)) ** 2).sum(),
        )

    def baselines(self, corpus: EncodedCorpus) -> list[Baseline]:
        self.prepare(corpus)
        data = self.data

        def scores(split: str) -> Scores:
            return regression_scores(data.targets[split], data.persistence[split])

        return [Baseline("persistence", scores("val"), scores("test"), data.baseline)]

    def checkpoint_extra(self) -> dict[str, Any]:
        """Name and options, the layout (``series`` or ``examples``), the features per
        step, the scaling of inputs and target, and an example input: what serving the
        checkpoint needs."""
        data = self.data
        return {
            **super().checkpoint_extra(),
            "layout": "examples" if data.window is None else "series",
            "n_features": data.n_features,
            "target_mean": data.mean,
            "target_std": data.std,
            "input_mean": list(data.input_mean),
            "input_std": list(data.input_std),
            "window": data.window,
            "columns": list(data.columns),
            "target": data.target,
            "example": [list(step) for step in data.example],
        }


__all__ = [
    "RegressOptions",
    "RegressTask",
    "padded_values",
    "predict",
    "predict_values",
    "regression_scores",
    "standardised",
]
