"""Gradient norm per time step: the tutorial's vanishing (and exploding) gradients, measured.

The tutorial trains its RNN on a loss at the window's last position only (Keras'
``return_sequences=False``) and explains why the vanilla RNN cannot learn long lags: in
backpropagation through time the gradient reaching the state h_t from the loss at step T
is a product of T - t Jacobians ``diag(tanh') W_h``, which shrinks (or grows)
geometrically, while the LSTM's and GRU's gated, additive paths keep it alive.
:func:`gradient_flow` measures exactly that quantity, ‖∂L/∂h_t‖ for t = 1..T, on real
windows, for any plugin that exposes its states through
:meth:`~pipeline_core.contract.TorchSequenceModel.hidden_sequence`; plugins that do not
(count-based models, most third-party ones) give None and callers skip them.

Exploding gradients need no diagnostic of their own: the Trainer stops a run whose loss
becomes NaN or infinite with :class:`~pipeline_core.training.TrainingDiverged`, whose
message suggests ``train.clip_norm``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pipeline_core.contract import SequenceModel, TorchSequenceModel, as_context_array
from pipeline_core.errors import DataError, PluginError

if TYPE_CHECKING:
    from pipeline_core.tracking import RunRef, Tracker

JSON_ARTIFACT = "gradient_flow.json"
PNG_ARTIFACT = "gradient_flow.png"
RATIO_METRIC = "grad_flow_ratio"


@dataclass(frozen=True)
class GradientFlow:
    """``norms[t-1]`` = mean over windows of ‖∂L/∂h_t‖ for t = 1..T (L: one window's
    cross-entropy at step T); ``ratio`` = ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ (tiny: vanishing)."""

    norms: np.ndarray
    ratio: float

    @property
    def steps(self) -> int:
        """T, the window length."""
        return len(self.norms)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (plain floats; a non-finite number becomes None)."""
        return {
            "T": self.steps,
            "t": list(range(1, self.steps + 1)),
            "grad_norm": [_finite_or_none(v) for v in self.norms],
            "ratio": _finite_or_none(self.ratio),
            "log10_ratio": _finite_or_none(
                math.log10(self.ratio) if self.ratio > 0 else float("nan")
            ),
        }


def _finite_or_none(value: float) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def sample_windows(ids: np.ndarray, T: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` windows (n, T + 1) of consecutive ids from ``ids`` (a split), at distinct
    starts drawn by ``seed`` and sorted: the same arguments give the same windows. A
    split with fewer than ``n`` starts gives all of them."""
    if T < 1 or n < 1:
        raise DataError(f"sample_windows: T and n must be >= 1 (got T={T}, n={n})")
    flat = np.asarray(ids).reshape(-1)
    n_starts = len(flat) - T
    if n_starts < 1:
        raise DataError(
            f"sample_windows: a split of {len(flat)} tokens holds no window of {T + 1} tokens"
        )
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.choice(n_starts, size=min(n, n_starts), replace=False))
    return flat[starts[:, None] + np.arange(T + 1)].astype(np.int64)


def gradient_flow(model: SequenceModel, windows: np.ndarray) -> GradientFlow | None:
    """‖∂L/∂h_t‖ per time step on ``windows`` (B, T + 1): inputs ``windows[:, :-1]``,
    target the token after them, ``windows[:, -1]``.

    The loss is the cross-entropy of the LAST position only (the tutorial's setup), so
    for t < T the gradient reaches h_t only through the recurrence h_t -> h_{t+1} ->
    ... -> h_T: a short ratio means the model cannot learn from that far back. Norms are
    per window (each window's own loss, so they do not depend on the batch size), then
    averaged over windows.

    The model runs in eval mode (no dropout) and is left as found: weights, ``.grad``
    of every parameter (only the states are differentiated), ``requires_grad`` and the
    train/eval mode of every module. None when the model exposes no hidden states
    (``hidden_sequence`` returns None, or it is not a torch plugin).
    """
    if not isinstance(model, TorchSequenceModel):
        return None
    ctx = as_context_array(windows)
    if ctx.shape[0] < 1 or ctx.shape[1] < 2:
        raise DataError(f"gradient_flow: windows must be (B >= 1, T + 1 >= 2) ids, got {ctx.shape}")
    model.check_ids(ctx)
    batch = torch.from_numpy(ctx).to(model.device)
    inputs, target = batch[:, :-1], batch[:, -1]

    def last_step_loss() -> tuple[torch.Tensor, torch.Tensor] | None:
        out = model.hidden_sequence(inputs)
        if out is None:
            return None
        logits, hidden = out
        _check_shapes(model, logits, hidden, inputs)
        loss = torch.nn.functional.cross_entropy(logits[:, -1].float(), target, reduction="sum")
        return loss, hidden

    return _measured(model, last_step_loss, "hidden_sequence")


def summary_gradient_flow(
    model: SequenceModel,
    inputs: torch.Tensor,
    loss_of_summary: Callable[[torch.Tensor], torch.Tensor],
) -> GradientFlow | None:
    """‖∂L/∂h_t‖ per step for a sequence-level task (classify, regress): ``inputs`` are
    full-length rows (ids (B, T) or floats (B, T, F)), ``loss_of_summary`` maps the final
    states (B, H) to the sum of the rows' task losses (the task's head and loss), so
    the figure shows how much of the task's error signal reaches each step. None when
    the model exposes no states (:meth:`TorchSequenceModel.states_through_time`)."""
    if not isinstance(model, TorchSequenceModel):
        return None
    if inputs.dim() < 2 or inputs.shape[0] < 1 or inputs.shape[1] < 1:
        raise DataError(
            "summary_gradient_flow: inputs must be (B >= 1, T >= 1, ...), got "
            f"{tuple(inputs.shape)}"
        )

    def summary_loss() -> tuple[torch.Tensor, torch.Tensor] | None:
        out = model.states_through_time(inputs.to(model.device))
        if out is None:
            return None
        states, hidden = out
        return loss_of_summary(states[:, -1]), hidden

    return _measured(model, summary_loss, "states_through_time")


def _measured(
    model: TorchSequenceModel,
    loss_and_hidden: Callable[[], tuple[torch.Tensor, torch.Tensor] | None],
    method: str,
) -> GradientFlow | None:
    """Per-row ‖∂L/∂h_t‖ averaged over rows, in eval mode, leaving the model's modes as
    found (only the states are differentiated, so no parameter's ``.grad`` changes)."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.enable_grad():
            out = loss_and_hidden()
            if out is None:
                return None
            loss, hidden = out
            (grad,) = torch.autograd.grad(loss, hidden)
    finally:
        for module, training in modes.items():
            module.training = training
    per_window = grad.detach().double().flatten(2).norm(dim=2)  # (B, T)
    norms = per_window.mean(dim=0).cpu().numpy()
    if norms.shape[0] > 1 and not np.any(norms[:-1]):
        raise PluginError(
            f"{type(model).__name__}.{method}: the gradient of the last step's loss "
            "is exactly 0 at every earlier state, so hidden[:, t] does not feed the later "
            "steps in the autograd graph (a fused torch RNN/GRU/LSTM's output tensor does "
            "not: see plugins.recurrent.hidden_through_time)"
        )
    last = float(norms[-1])
    ratio = float(norms[0]) / last if last > 0 else float("nan")
    return GradientFlow(norms=norms, ratio=ratio)


def _check_shapes(
    model: SequenceModel, logits: torch.Tensor, hidden: torch.Tensor, inputs: torch.Tensor
) -> None:
    b, t = inputs.shape
    name = type(model).__name__
    if logits.dim() != 3 or tuple(logits.shape[:2]) != (b, t):
        raise PluginError(
            f"{name}.hidden_sequence: logits must be (B, T, V) = ({b}, {t}, V), "
            f"got {tuple(logits.shape)}"
        )
    if hidden.dim() < 3 or tuple(hidden.shape[:2]) != (b, t):
        raise PluginError(
            f"{name}.hidden_sequence: hidden must be (B, T, H) = ({b}, {t}, H), "
            f"got {tuple(hidden.shape)}"
        )
    if not hidden.requires_grad:
        raise PluginError(
            f"{name}.hidden_sequence: hidden is not in the autograd graph (requires_grad is False)"
        )


def log_gradient_flow(tracker: Tracker, run: RunRef, label: str, flow: GradientFlow) -> None:
    """Record ``flow`` in an MLflow run: ``gradient_flow.json`` (the numbers),
    ``gradient_flow.png`` (the curve on a log axis) and the metric ``grad_flow_ratio``."""
    from pipeline_core import plots

    tracker.log_dict(run, {"model": label, **flow.to_dict()}, JSON_ARTIFACT)
    fig = plots.gradient_flow({label: flow.norms}, f"gradient per time step: {label}")
    try:
        tracker.log_figure(run, fig, PNG_ARTIFACT)
    finally:
        plots.close(fig)
    tracker.log_metrics(run, {RATIO_METRIC: flow.ratio})
