"""Regularisers for small corpora: decoupled weight decay (the hand-computed AdamW step),
DropConnect on the recurrent weights and input dropout (active only while training, a
real mask on W_hh whose gradient reaches the kept entries, the state still carried)."""

from __future__ import annotations

import pytest
import torch

from pipeline_core.config import TrainConfig
from pipeline_core.training import make_optimizer
from plugins.gru import GRUModel
from plugins.lstm import LSTMModel
from plugins.rnn import RNNModel

CELLS = [LSTMModel, GRUModel, RNNModel]


def test_weight_decay_is_decoupled_from_the_adaptive_step() -> None:
    """AdamW: w <- w - lr * wd * w - lr * m_hat / (sqrt(v_hat) + eps); with a zero
    gradient only the decay moves w, by exactly lr * wd * w (Adam's L2 would move it by
    about lr, whatever w is)."""
    layer = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 4.0]]))
    before = layer.weight.detach().clone()
    optimizer = make_optimizer(layer, TrainConfig(lr=0.01, weight_decay=0.5))
    assert isinstance(optimizer, torch.optim.AdamW)
    layer.weight.grad = torch.zeros_like(layer.weight)
    optimizer.step()
    torch.testing.assert_close(layer.weight.detach(), before * (1 - 0.01 * 0.5))
    rms = make_optimizer(layer, TrainConfig(optimizer="rmsprop", weight_decay=0.5))
    assert rms.param_groups[0]["weight_decay"] == 0.5
    plain = make_optimizer(layer, TrainConfig())
    assert type(plain) is torch.optim.Adam


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
def test_weight_dropout_masks_the_recurrent_weights_only_while_training(cls: type) -> None:
    torch.manual_seed(0)
    params = {"embedding_dim": 4, "hidden_size": 16, "num_layers": 2, "weight_dropout": 0.5}
    model = cls(10, params)
    plain = cls(10, {k: v for k, v in params.items() if k != "weight_dropout"})
    plain.load_state_dict(model.state_dict())
    x = torch.randint(0, 10, (3, 12))
    model.eval()
    plain.eval()
    # evaluation: the full weights, the same function as the plain model
    torch.testing.assert_close(model(x)[0], plain(x)[0])
    model.train()
    first, state = model(x)
    second, _ = model(x)
    assert not torch.allclose(first, second)  # a fresh mask per call
    first.square().sum().backward()
    for name, weight in model.rnn.named_parameters():
        assert weight.grad is not None, name
        zeros = float((weight.grad == 0).float().mean())
        if name.startswith("weight_hh"):
            assert 0.3 < zeros < 0.7, (name, zeros)  # the dropped half gets no gradient
        else:
            assert zeros < 0.1, (name, zeros)
    # the carried state still flows through the dropped-out recurrence
    with torch.no_grad():
        carried, _ = model(x[:, :1], state)
    assert carried.shape == (3, 1, 10)


def test_input_dropout_only_while_training() -> None:
    torch.manual_seed(0)
    model = LSTMModel(10, {"embedding_dim": 64, "hidden_size": 8, "input_dropout": 0.5})
    x = torch.randint(0, 10, (2, 5))
    model.train()
    dropped = model.encode(x)
    assert 0.3 < float((dropped == 0).float().mean()) < 0.7
    model.eval()
    torch.testing.assert_close(model.encode(x), model.embedding(x))
