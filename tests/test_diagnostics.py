"""Vanishing and exploding gradients, measured on Alice in Wonderland.

``gradient_flow`` takes the tutorial's loss (cross-entropy at the window's last step
only) and reports ‖∂L/∂h_t‖ for every step t, so the gradient reaches an early state
only through the recurrence. The vanilla RNN's must vanish far faster than the LSTM's
and GRU's; the Trainer must stop an exploding RNN with a hint to clip.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline_core import plots
from pipeline_core.config import TrainConfig
from pipeline_core.contract import FitData, PluginConfig, TorchSequenceModel
from pipeline_core.diagnostics import (
    GradientFlow,
    gradient_flow,
    log_gradient_flow,
    sample_windows,
)
from pipeline_core.errors import DataError, PluginError
from pipeline_core.training import TrainingDiverged, fit_model
from pipeline_core.vectorize import Vocabulary
from plugins.gru import GRUModel
from plugins.lstm import LSTMModel
from plugins.ngram import NGramModel
from plugins.recurrent import RecurrentLM, _with_top_h
from plugins.rnn import RNNModel
from tests.conftest import WONDERLAND

T = 50  # the tutorial's window
SMALL = {"hidden_size": 64}  # embedding_dim 64 by default
CELLS: dict[str, type[RecurrentLM]] = {"rnn": RNNModel, "lstm": LSTMModel, "gru": GRUModel}

pytestmark = [
    pytest.mark.skipif(not WONDERLAND.is_file(), reason=f"{WONDERLAND} not present"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def corpus() -> tuple[int, np.ndarray, np.ndarray]:
    """Characters of the first 30k characters of the book: (V, train 90%, val 10%)."""
    tokens = list(WONDERLAND.read_text(encoding="utf-8")[:30_000])
    vocab = Vocabulary.build(tokens, "char")
    ids = vocab.encode(tokens).astype(np.int64)
    cut = int(0.9 * len(ids))
    return len(vocab), ids[:cut], ids[cut:]


@pytest.fixture(scope="module")
def windows(corpus: tuple[int, np.ndarray, np.ndarray]) -> np.ndarray:
    return sample_windows(corpus[2], T, 64, seed=0)


def flows(vocab: int, seed: int, windows: np.ndarray, fit: Any = None) -> dict[str, float]:
    ratios = {}
    for name, cls in CELLS.items():
        model = cls.create(vocab, SMALL, seed=seed)
        if fit is not None:
            fit(model)
        flow = gradient_flow(model, windows)
        assert flow is not None and flow.steps == T
        ratios[name] = flow.ratio
    print(f"seed {seed}: " + ", ".join(f"{k} {v:.2e}" for k, v in ratios.items()))
    return ratios


# Measured ‖∂L/∂h_1‖/‖∂L/∂h_T‖ at T = 50, hidden 64, on these windows:
#   untrained, seeds 0-2:  rnn 9e-18 3e-17 2e-17 | lstm 4e-11 1e-09 6e-11 | gru 2e-10 6e-08 7e-10
#     (seeds 0-9: rnn/lstm at most 1.0e-5, rnn/gru at most 2e-6)
#   100 batches, last-step loss (the tutorial's), seeds 0-2: rnn 3e-21..5e-21, lstm
#     5e-08..5e-07, gru 4e-05..1e-03
#   300 batches, loss at every step: rnn 8e-12..2e-11, lstm 9e-07..2e-05, gru 4e-07..8e-06;
#     1000 batches: rnn 3e-10, lstm 3e-05 (the RNN learns larger recurrent weights: the gap
#     narrows with that objective, yet stays above 5e4)
# The effect is robust at init, so the 3-seed test does not train (under a second); one
# briefly trained seed checks that it holds, indeed grows, once the gates have learned.
# FACTOR is 1e3: at least 100x below every gap measured, 3000x below the 3 seeds' at init.
FACTOR = 1e3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_vanilla_rnn_gradient_vanishes_far_faster(
    corpus: tuple[int, np.ndarray, np.ndarray], windows: np.ndarray, seed: int
) -> None:
    ratios = flows(corpus[0], seed, windows)
    assert ratios["rnn"] * FACTOR < ratios["lstm"]
    assert ratios["rnn"] * FACTOR < ratios["gru"]
    assert all(0 < r < 1 for r in ratios.values())  # all vanish somewhat over 50 steps


def test_the_gap_holds_after_brief_training(
    corpus: tuple[int, np.ndarray, np.ndarray], windows: np.ndarray
) -> None:
    vocab, train, _ = corpus
    settings = TrainConfig(
        epochs=1,
        lr=5e-3,
        objective="last",
        max_batches_per_epoch=100,
        progress=False,
        device="cpu",
        num_threads=1,
    )

    def fit(model: RecurrentLM) -> None:
        fit_model(model, FitData(train, None, vocab, T), settings)

    ratios = flows(vocab, 0, windows, fit)
    assert ratios["rnn"] * FACTOR < ratios["lstm"]
    assert ratios["rnn"] * FACTOR < ratios["gru"]


def suffix_norms(model: RecurrentLM, win: np.ndarray) -> np.ndarray:
    """‖∂L/∂h_t‖ computed independently: for each t, run the fused layer on x[:t+1]
    without gradients, make the top layer's h_t a leaf, run the rest on from it."""
    x = torch.from_numpy(win[:, :-1])
    target = torch.from_numpy(win[:, -1])
    inputs = model.encode(x).detach()
    norms = []
    for t in range(x.shape[1]):
        with torch.no_grad():
            _, state = model.rnn(inputs[:, : t + 1])
        top = (state[0] if isinstance(state, tuple) else state)[-1].clone().requires_grad_()
        if t == x.shape[1] - 1:
            last = top
        else:
            out, _ = model.rnn(inputs[:, t + 1 :], _with_top_h(state, top))
            last = out[:, -1]
        loss = torch.nn.functional.cross_entropy(model.head(last), target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, top)
        norms.append(grad.double().norm(dim=1).mean().item())
    return np.array(norms)


@pytest.mark.parametrize("cls", list(CELLS.values()))
def test_norms_equal_backpropagation_from_each_state(
    cls: type[RecurrentLM], corpus: tuple[int, np.ndarray, np.ndarray]
) -> None:
    model = cls.create(corpus[0], {"hidden_size": 16, "num_layers": 2}, seed=3).eval()
    win = sample_windows(corpus[2], 12, 5, seed=1)
    flow = gradient_flow(model, win)
    assert flow is not None
    expected = suffix_norms(model, win)
    np.testing.assert_allclose(flow.norms, expected, rtol=1e-4)
    assert flow.ratio == pytest.approx(expected[0] / expected[-1], rel=1e-4)


@pytest.mark.parametrize("cls", list(CELLS.values()))
def test_hidden_sequence_is_the_forward_pass(
    cls: type[RecurrentLM], corpus: tuple[int, np.ndarray, np.ndarray]
) -> None:
    model = cls.create(corpus[0], {"hidden_size": 16, "num_layers": 2}, seed=0).eval()
    x = torch.from_numpy(sample_windows(corpus[1], 20, 4, seed=0))
    ref_logits, _ = model(x)
    ref_hidden, _ = model.rnn(model.encode(x))
    out = model.hidden_sequence(x)
    assert out is not None
    logits, hidden = out
    assert hidden.shape == (4, 21, 16) and hidden.requires_grad
    torch.testing.assert_close(hidden, ref_hidden, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        plain = model.hidden_sequence(x)
    assert plain is not None and not plain[1].requires_grad
    torch.testing.assert_close(plain[0], ref_logits)


def test_the_model_is_left_as_found(
    corpus: tuple[int, np.ndarray, np.ndarray], windows: np.ndarray
) -> None:
    model = LSTMModel.create(corpus[0], {"hidden_size": 32, "num_layers": 2, "dropout": 0.3})
    assert model.embedding is not None
    model.embedding.weight.requires_grad_(False)
    loss = model(torch.from_numpy(windows[:4]))[0].logsumexp(-1).mean()
    loss.backward()  # gradients left by some training step
    model.train()
    model.head.eval()  # mixed modes are restored module by module
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    needs = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}

    first = gradient_flow(model, windows)
    second = gradient_flow(model, windows)

    assert first is not None and second is not None
    np.testing.assert_array_equal(first.norms, second.norms)  # eval mode: no dropout
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    for name, param in model.named_parameters():
        before = grads[name]
        if before is None:
            assert param.grad is None, name
        else:
            assert param.grad is not None and torch.equal(param.grad, before), name
        assert param.requires_grad == needs[name], name
    assert {n: m.training for n, m in model.named_modules()} == modes
    evaluated = gradient_flow(model.eval(), windows)
    assert evaluated is not None
    np.testing.assert_array_equal(evaluated.norms, first.norms)


class _Bag(TorchSequenceModel):
    """A torch plugin without states to expose (hidden_sequence: the contract's None)."""

    config_class = PluginConfig

    def __init__(self, vocab_size: int, config: Any = None) -> None:
        super().__init__(vocab_size, config)
        self.table = torch.nn.Embedding(vocab_size, vocab_size)

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        return self.table(x)


def test_none_for_models_without_states(
    corpus: tuple[int, np.ndarray, np.ndarray], windows: np.ndarray
) -> None:
    vocab, train, val = corpus
    ngram = NGramModel.create(vocab, {"order": 3})
    ngram.fit(FitData(train, val, vocab, T))
    assert gradient_flow(ngram, windows) is None
    assert gradient_flow(_Bag.create(vocab), windows) is None


class _FusedOutput(RNNModel):
    """The natural mistake: the fused layer's output, whose step t feeds no later step."""

    def hidden_sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        hidden, _ = self.rnn(self.encode(x))
        return self.head(hidden), hidden


def test_a_hidden_that_does_not_feed_later_steps_is_refused(
    corpus: tuple[int, np.ndarray, np.ndarray], windows: np.ndarray
) -> None:
    model = _FusedOutput.create(corpus[0], {"hidden_size": 8})
    with pytest.raises(PluginError, match="does not feed the later steps"):
        gradient_flow(model, windows)


def test_bad_windows_are_one_line_errors(corpus: tuple[int, np.ndarray, np.ndarray]) -> None:
    model = RNNModel.create(corpus[0], {"hidden_size": 8})
    with pytest.raises(DataError, match="T \\+ 1 >= 2"):
        gradient_flow(model, np.zeros((3, 1), dtype=np.int64))
    with pytest.raises(DataError, match="token ids must lie"):
        gradient_flow(model, np.full((2, 5), corpus[0]))


def test_sample_windows_is_deterministic(corpus: tuple[int, np.ndarray, np.ndarray]) -> None:
    val = corpus[2]
    a = sample_windows(val, T, 16, seed=4)
    assert a.shape == (16, T + 1) and a.dtype == np.int64
    np.testing.assert_array_equal(a, sample_windows(val, T, 16, seed=4))
    assert not np.array_equal(a, sample_windows(val, T, 16, seed=5))
    for row in a:  # each row is a real stretch of the split
        start = int(
            np.flatnonzero(
                np.all(np.lib.stride_tricks.sliding_window_view(val, T + 1) == row, axis=1)
            )[0]
        )
        np.testing.assert_array_equal(val[start : start + T + 1], row)
    assert len(sample_windows(np.arange(10), 4, 100, seed=0)) == 6  # every start, once
    with pytest.raises(DataError, match="no window of 11 tokens"):
        sample_windows(np.arange(10), 10, 1)


def test_to_dict_is_strict_json() -> None:
    flow = GradientFlow(norms=np.array([1e-20, 0.5, 2.0]), ratio=5e-21)
    data = json.loads(json.dumps(flow.to_dict(), allow_nan=False))
    assert data["T"] == 3 and data["t"] == [1, 2, 3] and data["grad_norm"][2] == 2.0
    assert data["log10_ratio"] == pytest.approx(math.log10(5e-21))
    empty = GradientFlow(norms=np.array([0.0, 0.0]), ratio=float("nan")).to_dict()
    assert json.dumps(empty, allow_nan=False) and empty["ratio"] is None


def test_the_plot_writes_a_png(tmp_path: Path) -> None:
    curves = {"rnn": np.geomspace(1e-17, 1.0, T), "lstm": np.geomspace(1e-9, 1.0, T)}
    curves["zeros"] = np.r_[np.zeros(T - 1), 1.0]  # nothing to draw on a log axis but 1
    fig = plots.gradient_flow(curves, "gradient per time step")
    try:
        assert fig.axes[0].get_yscale() == "log"
        assert len(fig.axes[0].get_lines()) == 3
        fig.savefig(tmp_path / "flow.png")
    finally:
        plots.close(fig)
    assert (tmp_path / "flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_log_gradient_flow_records_numbers_figure_and_metric(
    tmp_path: Path, corpus: tuple[int, np.ndarray, np.ndarray], windows: np.ndarray
) -> None:
    from pipeline_core.tracking import Tracker

    flow = gradient_flow(RNNModel.create(corpus[0], SMALL), windows)
    assert flow is not None
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlruns.db'}")
    run = tracker.start_run("rnn", experiment="diagnostics")
    log_gradient_flow(tracker, run, "rnn", flow)
    folder = tracker.local_artifact_dir(run)
    assert folder is not None
    saved = json.loads((folder / "gradient_flow.json").read_text())
    assert saved["model"] == "rnn" and saved["T"] == T
    np.testing.assert_allclose(saved["grad_norm"], flow.norms)
    assert (folder / "gradient_flow.png").read_bytes()[:4] == b"\x89PNG"
    metrics = tracker.client.get_run(run.run_id).data.metrics
    assert metrics["grad_flow_ratio"] == pytest.approx(flow.ratio, rel=1e-12)


def exploding_rnn(vocab: int, seed: int) -> RNNModel:
    model = RNNModel.create(vocab, SMALL, seed=seed)
    state = model.get_state()
    state["rnn.weight_hh_l0"] = state["rnn.weight_hh_l0"] * 50.0
    model.set_state(state)
    return model


# A huge lr alone does not diverge (measured: lr 10, Adam or RMSprop, 30 batches): the
# optimiser's steps are normalised and tanh bounds the states, so the loss grows to a few
# hundred nats but stays finite. NaN needs the BPTT gradient itself to overflow float32:
# with W_h scaled x50 it does on the first batch, Adam's update turns it into NaN
# weights, and batch 2's loss is NaN (seeds 0-4; x30 too; x20 gives ‖g‖ ~ 2e15, still
# finite; x1000 saturates tanh and the gradient dies instead).
@pytest.mark.parametrize("seed", [0, 1])
def test_an_exploding_rnn_diverges_with_a_hint_to_clip(
    corpus: tuple[int, np.ndarray, np.ndarray], seed: int
) -> None:
    vocab, train, _ = corpus
    data = FitData(train, None, vocab, T)

    def settings(clip_norm: float | None) -> TrainConfig:
        return TrainConfig(
            epochs=1,
            lr=10.0,
            clip_norm=clip_norm,
            max_batches_per_epoch=10,
            progress=False,
            device="cpu",
            num_threads=1,
            seed=seed,
        )

    with pytest.raises(TrainingDiverged, match=r"loss nan.*clip_norm"):
        fit_model(exploding_rnn(vocab, seed), data, settings(None))
    # the same start with clipping by norm trains on (an overflowing norm zeroes the step)
    history = fit_model(exploding_rnn(vocab, seed), data, settings(5.0))
    assert math.isfinite(history[-1].train_nll)
