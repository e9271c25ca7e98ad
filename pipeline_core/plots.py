"""Figures people would rather see than read: learning curves and the leaderboard."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline_core.contract import EpochRecord


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve(history: Sequence[EpochRecord], title: str) -> Any:
    """Train and validation nll per epoch, with the gradient norm on a second axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = [r.epoch for r in history]
    ax.plot(epochs, [r.train_nll for r in history], marker="o", label="train nll")
    ax.plot(epochs, [r.val_nll for r in history], marker="s", label="val nll")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats / token")
    ax.set_title(title)
    norms = [r.grad_norm for r in history]
    if any(n == n for n in norms):  # not all nan
        twin = ax.twinx()
        twin.plot(epochs, norms, color="grey", linestyle=":", label="grad norm")
        twin.set_ylabel("mean gradient norm (before clipping)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def leaderboard_chart(
    labels: Sequence[str],
    bpc: Sequence[float],
    title: str,
    xlabel: str = "test bits per character (lower is better)",
) -> Any:
    """Horizontal bars of the ranking figure (test bpc unless told), best at the top."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.5 * len(labels)))
    order = sorted(range(len(labels)), key=lambda i: -bpc[i])
    ax.barh([labels[i] for i in order], [bpc[i] for i in order], color="tab:blue")
    for y, i in enumerate(order):
        ax.text(bpc[i], y, f" {bpc[i]:.3f}", va="center")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def gradient_flow(curves: Mapping[str, np.ndarray], title: str) -> Any:
    """‖∂L/∂h_t‖ per time step t = 1..T of one or more models, on a log y-axis (the loss
    is at t = T: a curve falling to the left is a vanishing gradient)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, norms in curves.items():
        values = np.asarray(norms, dtype=np.float64)
        shown = np.where(values > 0, values, np.nan)  # a log axis has no place for 0
        ax.plot(np.arange(1, len(values) + 1), shown, marker=".", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("time step t (loss at the last step T)")
    ax.set_ylabel("‖∂L/∂h_t‖ (mean over windows)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if curves:
        ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def learning_curves(
    curves: Mapping[str, Sequence[tuple[int, float]]],
    title: str,
    ylabel: str = "validation bits per character",
) -> Any:
    """Several models' (epoch, value) curves overlaid. A model with one point (a
    count-based model fits in one pass) is a dashed level across the epochs shown."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    last = max((e for points in curves.values() for e, _ in points), default=1)
    for label, points in curves.items():
        epochs = [e for e, _ in points]
        values = [v for _, v in points]
        if len(points) == 1:
            (line,) = ax.plot(epochs, values, marker="s", linestyle="none", label=label)
            end = max(last, epochs[0])
            ax.hlines(values[0], epochs[0], end, colors=line.get_color(), linestyles="--")
        else:
            ax.plot(epochs, values, marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def close(fig: Any) -> None:
    _pyplot().close(fig)
