"""The one trainer: clipping equations by hand, optimizers, loss positions, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline_core.config import TrainConfig
from pipeline_core.contract import FitData
from pipeline_core.metrics import stream_nll
from pipeline_core.training import clip_gradients, make_optimizer, sequence_loss
from plugins.lstm import LSTMModel


def _with_grads(grads: list[list[float]]) -> torch.nn.Module:
    module = torch.nn.Module()
    for i, g in enumerate(grads):
        p = torch.nn.Parameter(torch.zeros(len(g)))
        p.grad = torch.tensor(g)
        module.register_parameter(f"p{i}", p)
    return module


def test_clip_by_norm_rescales_to_c_over_norm() -> None:
    module = _with_grads([[3.0, 0.0], [0.0, 4.0]])  # ||g|| = 5
    norm = clip_gradients(module, TrainConfig(clip_norm=1.0))
    assert norm == pytest.approx(5.0)
    assert module.p0.grad.tolist() == pytest.approx([0.6, 0.0])
    assert module.p1.grad.tolist() == pytest.approx([0.0, 0.8])


def test_clip_by_norm_leaves_small_gradients_alone() -> None:
    module = _with_grads([[0.3, 0.4]])
    clip_gradients(module, TrainConfig(clip_norm=1.0))
    assert module.p0.grad.tolist() == pytest.approx([0.3, 0.4])


def test_clip_by_value_then_norm() -> None:
    module = _with_grads([[10.0, -0.5, -7.0]])
    clip_gradients(module, TrainConfig(clip_value=1.0, clip_norm=None))
    assert module.p0.grad.tolist() == pytest.approx([1.0, -0.5, -1.0])


def test_optimizers() -> None:
    model = torch.nn.Linear(2, 2)
    assert isinstance(make_optimizer(model, TrainConfig(optimizer="rmsprop")), torch.optim.RMSprop)
    assert isinstance(make_optimizer(model, TrainConfig(optimizer="adam")), torch.optim.Adam)


def test_last_position_loss_is_cross_entropy_of_the_last_step() -> None:
    logits = torch.randn(3, 5, 7)
    targets = torch.randint(0, 7, (3, 5))
    last = sequence_loss(logits, targets, "last")
    assert last == pytest.approx(
        torch.nn.functional.cross_entropy(logits[:, -1], targets[:, -1]).item()
    )
    every = sequence_loss(logits, targets, "all")
    manual = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).mean()
    assert every.item() == pytest.approx(manual.item(), rel=1e-6)


def _periodic(n: int) -> np.ndarray:
    return np.tile(np.array([1, 2, 3, 1, 2, 4], dtype=np.uint8), n // 6)


def _fit(seed: int, positions: str = "all") -> LSTMModel:
    data = FitData(train=_periodic(1200), val=_periodic(120), vocab_size=5, context_len=6)
    model = LSTMModel.create(5, {"embedding_dim": 8, "hidden_size": 16}, seed=seed)
    settings = TrainConfig(
        epochs=3, batch_size=32, lr=0.02, seed=seed, progress=False, loss_positions=positions
    )
    history = model.fit(data, settings)
    assert [r.epoch for r in history] == [1, 2, 3]
    assert all(np.isfinite(r.grad_norm) and r.tokens_per_s > 0 for r in history)
    return model


def test_lstm_learns_a_periodic_sequence_and_is_deterministic() -> None:
    model = _fit(seed=3)
    nll = stream_nll(model, _periodic(60), context_len=6)
    assert nll < 0.1  # uniform would be log(5) = 1.61 nats
    again = _fit(seed=3)
    ctx = _periodic(12)[None, :6].astype(np.int64)
    assert np.array_equal(model.log_proba(ctx), again.log_proba(ctx))


def test_last_position_training_also_learns() -> None:
    model = _fit(seed=0, positions="last")
    assert stream_nll(model, _periodic(60), context_len=6) < 0.5
