"""The recurrent family: the vanilla RNN's equations by hand, one-hot input, and the
family sharing one body (every member stateful, refusing bad sizes in one line)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline_core.errors import ConfigError
from plugins.gru import GRUModel
from plugins.lstm import LSTMModel
from plugins.rnn import RNNModel


def test_two_rnn_steps_by_hand_equal_the_plugin() -> None:
    """h_t = tanh(W_x x_t + W_h h_{t-1} + b), y_t = softmax(W_y h_t + c), from h_0 = 0."""
    vocab = 4
    model = RNNModel.create(vocab, {"input": "onehot", "hidden_size": 3}, seed=7)
    sd = {k: v.double().numpy() for k, v in model.state_dict().items()}
    w_x, w_h = sd["rnn.weight_ih_l0"], sd["rnn.weight_hh_l0"]
    b = sd["rnn.bias_ih_l0"] + sd["rnn.bias_hh_l0"]
    w_y, c = sd["head.weight"], sd["head.bias"]
    tokens = [2, 1]
    h = np.zeros(3)
    expected = []
    for tok in tokens:
        x = np.eye(vocab)[tok]
        h = np.tanh(w_x @ x + w_h @ h + b)
        logits = w_y @ h + c
        expected.append(logits - np.log(np.exp(logits).sum()))
    for t in (1, 2):
        got = model.log_proba(np.array([tokens[:t]]))[0]
        assert np.abs(got - expected[t - 1]).max() < 1e-6


@pytest.mark.parametrize("cls", [RNNModel, GRUModel, LSTMModel])
def test_one_hot_and_embedding_inputs(cls: type) -> None:
    onehot = cls.create(5, {"input": "onehot", "hidden_size": 8}, seed=0)
    assert onehot.embedding is None and onehot.rnn.input_size == 5
    embedded = cls.create(5, {"embedding_dim": 6, "hidden_size": 8, "num_layers": 2}, seed=0)
    assert embedded.rnn.input_size == 6 and embedded.rnn.num_layers == 2
    for model in (onehot, embedded):
        assert model.stateful
        lp = model.log_proba(np.array([[1, 2, 3], [0, 4, 1]]))
        assert lp.shape == (2, 5) and np.allclose(np.exp(lp).sum(axis=1), 1.0)
        _, state = model.step(torch.tensor([[1, 2]]))
        assert state is not None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_layers": 0}, "num_layers"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"input": "bits"}, "input"),
    ],
)
def test_bad_sizes_are_one_line_config_errors(params: dict, field: str) -> None:
    for cls in (RNNModel, GRUModel, LSTMModel):
        with pytest.raises(ConfigError, match=field):
            cls(5, params)


def test_lstm_forget_bias_sets_each_forget_gate_and_leaves_the_rest() -> None:
    """torch orders an LSTM's gates i, f, g, o: only the f slice moves, by exactly the
    value, in every layer and bias vector; 0 (the default) is torch's own init."""
    plain = LSTMModel.create(5, {"embedding_dim": 4, "hidden_size": 3, "num_layers": 2}, seed=1)
    primed = LSTMModel.create(
        5, {"embedding_dim": 4, "hidden_size": 3, "num_layers": 2, "forget_bias": 1.5}, seed=1
    )
    before, after = plain.state_dict(), primed.state_dict()
    for name, value in after.items():
        if not name.startswith("rnn.bias_"):
            assert torch.equal(value, before[name]), name  # weights: the same draw
            continue
        if "_ih_" in name:  # the gate's whole bias: b_ih + b_hh
            total = value[3:6] + after[name.replace("_ih_", "_hh_")][3:6]
            assert torch.equal(total, torch.full((3,), 1.5)), name
        assert torch.equal(value[:3], before[name][:3]) and torch.equal(value[6:], before[name][6:])
    with pytest.raises(ConfigError, match="forget_bias"):
        LSTMModel(5, {"forget_bias": 11.0})
