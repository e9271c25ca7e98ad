"""The convolutional-recurrent network: causal (left padding only), exactly stateful
(chunks carrying the conv inputs and the recurrent state equal one full pass), bad sizes
are one-line errors, the kit passes, and it learns real text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline_core.cleaning import seed_clean
from pipeline_core.config import DataConfig, TrainConfig
from pipeline_core.errors import ConfigError
from pipeline_core.metrics import evaluate
from pipeline_core.training import fit_model
from pipeline_core.vectorize import vectorize
from plugins.crnn import CRNNModel, causal_conv
from seqlab.api import FitData
from seqlab.testing import KitCase, parametrize_with_checks
from tests.conftest_data import data_file

V = 7
CONFIGS = [
    {"kernel_size": 1},
    {"kernel_size": 3},
    {"kernel_size": 5, "conv_layers": 3, "cell": "lstm", "num_layers": 2},
    {"kernel_size": 2, "input": "onehot", "cell": "rnn"},
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**params: Any) -> CRNNModel:
    model = CRNNModel.create(
        V, {"embedding_dim": 4, "conv_channels": 5, "hidden_size": 6, **params}, seed=2
    )
    model.eval()
    return model


def random_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, V, size=(batch, length)))


@parametrize_with_checks(
    [
        CRNNModel,
        KitCase(CRNNModel, train={"bptt": "stateful"}),
        KitCase(CRNNModel, {"kernel_size": 4, "conv_layers": 2, "cell": "lstm", "hidden_size": 16}),
    ]
)
def test_crnn_conforms(plugin: KitCase, check: Any) -> None:
    check(plugin)


@pytest.mark.parametrize("params", CONFIGS)
def test_causal_left_padding_only(params: dict[str, Any]) -> None:
    model = tiny(**params)
    x = random_ids(3, 10)
    with torch.no_grad():
        ref, _ = model(x)
        for t in range(9):
            other = x.clone()
            other[:, t + 1 :] = (other[:, t + 1 :] + 1) % V
            got, _ = model(other)
            assert (got[:, : t + 1] - ref[:, : t + 1]).abs().max() <= 1e-6
            assert (got[:, t + 1 :] - ref[:, t + 1 :]).abs().max() > 1e-5


@pytest.mark.parametrize("params", CONFIGS)
def test_carried_state_equals_one_pass(params: dict[str, Any]) -> None:
    """Chunks of 1, 2 and 3 tokens (shorter than the kernel's k-1 carried inputs
    included) continue the sequence exactly."""
    model = tiny(**params)
    x = random_ids(2, 12, seed=1)
    with torch.no_grad():
        ref, _ = model(x)
        pieces, state, start = [], None, 0
        for size in (1, 2, 3, 1, 5):
            logits, state = model(x[:, start : start + size], state)
            pieces.append(logits)
            start += size
    assert (torch.cat(pieces, dim=1) - ref).abs().max() <= 1e-6
    convs, _ = state
    assert [c.shape[2] for c in convs] == [model.config.kernel_size - 1] * len(model.convs)
    rows, _ = model.stream_log_proba(x[0].numpy(), chunk=4)
    prefixes = np.concatenate([model.log_proba(x[:1, : i + 1].numpy()) for i in range(12)])
    assert np.abs(rows - prefixes).max() <= 1e-6


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"kernel_size": 0}, "kernel_size"),
        ({"conv_layers": 0}, "conv_layers"),
        ({"conv_channels": 0}, "conv_channels"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_layers": 0}, "num_layers"),
        ({"dropout": 1.0}, "dropout"),
        ({"cell": "tcn"}, "cell"),
    ],
)
def test_bad_sizes_are_one_line_config_errors(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        CRNNModel(V, params)
    assert field in str(err.value) and "\n" not in str(err.value)


def test_learns_wonderland_and_scores_the_same_with_carried_state() -> None:
    """A tiny CRNN trained statefully for a few batches on real text beats the uniform
    guess by far, and carried-state scoring is no worse than windows (it sees more)."""
    text = seed_clean(Path(data_file("wonderland.txt")).read_text(encoding="utf-8")[:12000])
    corpus = vectorize(text, DataConfig(context_len=16))
    data = FitData(corpus.train, corpus.val, len(corpus.vocab), 16)
    model = CRNNModel.create(len(corpus.vocab), {"embedding_dim": 16, "hidden_size": 48}, seed=0)
    settings = TrainConfig(
        epochs=2, batch_size=16, lr=1e-2, bptt="stateful", progress=False, num_threads=1
    )
    fit_model(model, data, settings, validate=lambda m: float("nan"))
    windows = evaluate(model, corpus, "val")
    carried = evaluate(model, corpus, "val", carry_state=True)
    uniform_bpc = float(np.log2(len(corpus.vocab)))
    assert windows.bpc < uniform_bpc - 1.5
    assert windows.n_tokens == carried.n_tokens
    assert carried.bpc < windows.bpc + 0.05


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_causal_conv_is_torchs_convolution(kernel_size: int) -> None:
    conv = torch.nn.Conv1d(4, 5, kernel_size)
    full = torch.randn(2, 4, 9)
    with torch.no_grad():
        assert (causal_conv(conv, full) - conv(full)).abs().max() < 1e-5
