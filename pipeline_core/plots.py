"""Figures people would rather see than read: learning curves and the leaderboard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def leaderboard_chart(labels: Sequence[str], bpc: Sequence[float], title: str) -> Any:
    """Horizontal bars of test bits per character, best at the top."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.5 * len(labels)))
    order = sorted(range(len(labels)), key=lambda i: -bpc[i])
    ax.barh([labels[i] for i in order], [bpc[i] for i in order], color="tab:blue")
    for y, i in enumerate(order):
        ax.text(bpc[i], y, f" {bpc[i]:.3f}", va="center")
    ax.set_xlabel("test bits per character (lower is better)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def close(fig: Any) -> None:
    _pyplot().close(fig)
