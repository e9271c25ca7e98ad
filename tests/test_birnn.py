"""The bidirectional RNN: next-token use is causal (a bidirectional encoding of each
prefix), fill-blank never reads the blank itself but does read both sides, the O(T)
paths equal the O(T^2) / window ones, bad sizes are one-line errors, and the kit passes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from pipeline_core.errors import ConfigError, DataError
from plugins.birnn import BiRNNModel
from seqlab.testing import KitCase, parametrize_with_checks

V = 7
CELLS = ("lstm", "gru", "rnn")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(cell: str, **extra: Any) -> BiRNNModel:
    params = {"embedding_dim": 4, "hidden_size": 6, "cell": cell, **extra}
    model = BiRNNModel.create(V, params, seed=3)
    model.eval()
    return model


def random_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, V, size=(batch, length)))


@parametrize_with_checks(
    [
        BiRNNModel,
        KitCase(
            BiRNNModel, {"cell": "gru", "num_layers": 2, "embedding_dim": 8, "hidden_size": 16}
        ),
    ]
)
def test_birnn_conforms(plugin: KitCase, check: Any) -> None:
    check(plugin)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("extra", [{}, {"num_layers": 2, "input": "onehot"}])
def test_next_token_forward_is_causal(cell: str, extra: dict[str, Any]) -> None:
    model = tiny(cell, **extra)
    x = random_ids(3, 9)
    with torch.no_grad():
        ref = model(x)
        for t in range(8):
            other = x.clone()
            other[:, t + 1 :] = (other[:, t + 1 :] + 1) % V
            got = model(other)
            assert (got[:, : t + 1] - ref[:, : t + 1]).abs().max() <= 1e-6
            assert (got[:, t + 1 :] - ref[:, t + 1 :]).abs().max() > 1e-4  # later ones move


@pytest.mark.parametrize("cell", CELLS)
def test_next_token_reads_the_prefix_both_ways(cell: str) -> None:
    """Position t equals log_proba of the prefix x[..t] (its O(T) path), and the
    backward direction matters: the same prefix through the forward stack alone differs."""
    model = tiny(cell)
    x = random_ids(2, 8, seed=1)
    with torch.no_grad():
        full = torch.log_softmax(model(x).double(), dim=-1).numpy()
        ahead, _ = model.fwd(model.encode(x))
        zeros = torch.zeros_like(ahead)
        forward_only = torch.log_softmax(model._logits(ahead, zeros).double(), dim=-1).numpy()
    for t in range(8):
        prefix = model.log_proba(x[:, : t + 1].numpy())
        assert np.abs(prefix - full[:, t]).max() < 1e-5
    assert np.abs(full[:, 1:] - forward_only[:, 1:]).max() > 1e-3


@pytest.mark.parametrize("cell", CELLS)
def test_fill_blank_never_reads_the_blank_but_reads_both_sides(cell: str) -> None:
    model = tiny(cell, num_layers=2)
    x = random_ids(2, 9, seed=2)
    with torch.no_grad():
        ref = model.fill_blank_logits(x)
        assert ref.shape == (2, 9, V)
        for t in range(9):
            blank = x.clone()
            blank[:, t] = (blank[:, t] + 1) % V
            assert torch.equal(model.fill_blank_logits(blank)[:, t], ref[:, t])
            if t + 1 < 9:  # the right context moves position t
                later = x.clone()
                later[:, t + 1] = (later[:, t + 1] + 2) % V
                assert (model.fill_blank_logits(later)[:, t] - ref[:, t]).abs().max() > 1e-4
            if t > 0:  # and so does the left one
                earlier = x.clone()
                earlier[:, t - 1] = (earlier[:, t - 1] + 2) % V
                assert (model.fill_blank_logits(earlier)[:, t] - ref[:, t]).abs().max() > 1e-4


@pytest.mark.parametrize("cell", CELLS)
def test_fill_blank_log_proba_equals_the_window_logits(cell: str) -> None:
    """fill_blank_log_proba(x[:t], x[t+1:]) is row t of fill_blank_logits(x), the empty
    sides at either end included."""
    model = tiny(cell)
    x = random_ids(3, 7, seed=4)
    with torch.no_grad():
        window = torch.log_softmax(model.fill_blank_logits(x).double(), dim=-1).numpy()
    ids = x.numpy()
    for t in range(7):
        lp = model.fill_blank_log_proba(ids[:, :t], ids[:, t + 1 :])
        assert lp.dtype == np.float64 and lp.shape == (3, V)
        assert np.allclose(np.exp(lp).sum(axis=1), 1.0)
        assert np.abs(lp - window[:, t]).max() < 1e-5


def test_fill_blank_log_proba_refuses_bad_input() -> None:
    model = tiny("lstm")
    left = np.array([[1, 2], [3, 4]])
    with pytest.raises(DataError, match="as many rows"):
        model.fill_blank_log_proba(left, np.array([[1, 2]]))
    with pytest.raises(DataError, match=r"\[0, 7\)"):
        model.fill_blank_log_proba(left, np.array([[1, 7], [0, 0]]))
    with pytest.raises(DataError, match="2-D"):
        model.fill_blank_log_proba(left, np.array([1, 2]))


def test_fill_blank_leaves_the_training_mode_alone() -> None:
    model = BiRNNModel.create(V, {"embedding_dim": 4, "hidden_size": 6, "dropout": 0.5}, seed=0)
    model.train()
    ids = random_ids(2, 5).numpy()
    first = model.fill_blank_log_proba(ids[:, :2], ids[:, 3:])
    assert model.training
    assert np.array_equal(first, model.fill_blank_log_proba(ids[:, :2], ids[:, 3:]))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_layers": 0}, "num_layers"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"cell": "tcn"}, "cell"),
    ],
)
def test_bad_sizes_are_one_line_config_errors(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        BiRNNModel(V, params)
    assert field in str(err.value) and "\n" not in str(err.value)
