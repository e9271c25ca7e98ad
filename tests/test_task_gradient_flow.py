"""Gradient flow of the sequence-level tasks, with the task's own loss.

For classify and regress the loss is on the head over the final state, so ‖∂L/∂h_t‖
must equal what backpropagation through an unfused, step-by-step copy of the network
delivers to each h_t, and at the last step what the head's own derivative gives by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline_core.config import DataConfig
from pipeline_core.diagnostics import summary_gradient_flow
from pipeline_core.sources import load_documents
from pipeline_core.tasks import full_length_sample, get_task
from pipeline_core.vectorize import EncodedCorpus, corpus_text, vectorize
from plugins.gru import GRUModel
from plugins.lstm import LSTMModel
from plugins.ngram import NGramModel
from plugins.rnn import RNNModel

CELLS = {"rnn": (RNNModel, torch.nn.RNNCell), "gru": (GRUModel, torch.nn.GRUCell)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def corpus_of(source: str, **data: object) -> EncodedCorpus:
    docs = load_documents(source)
    cfg = DataConfig(source=source, clean="none", **data)  # type: ignore[arg-type]
    return vectorize(corpus_text(docs["text"].tolist()), cfg)


def unfused_norms(
    model: LSTMModel | RNNModel | GRUModel, inputs: torch.Tensor, loss_of_last: object
) -> np.ndarray:
    """‖∂L/∂h_t‖ averaged over rows, by a hand-written loop of torch's cells with the
    model's weights: the reference the fused diagnostics must match."""
    layer = model.rnn
    hidden = layer.hidden_size
    if isinstance(model, LSTMModel):
        cell: torch.nn.Module = torch.nn.LSTMCell(layer.input_size, hidden)
    else:
        cell = CELLS["gru" if isinstance(model, GRUModel) else "rnn"][1](layer.input_size, hidden)
    with torch.no_grad():
        cell.weight_ih.copy_(layer.weight_ih_l0)
        cell.weight_hh.copy_(layer.weight_hh_l0)
        cell.bias_ih.copy_(layer.bias_ih_l0)
        cell.bias_hh.copy_(layer.bias_hh_l0)
    b = inputs.shape[0]
    h = torch.zeros(b, hidden)
    c = torch.zeros(b, hidden)
    states = []
    for t in range(inputs.shape[1]):
        if isinstance(model, LSTMModel):
            h, c = cell(inputs[:, t], (h, c))
        else:
            h = cell(inputs[:, t], h)
        h.retain_grad()
        states.append(h)
    loss = loss_of_last(states[-1])  # type: ignore[operator]
    loss.backward()
    return np.array([s.grad.norm(dim=1).mean().item() for s in states])  # type: ignore[union-attr]


@pytest.mark.parametrize("plugin", [LSTMModel, GRUModel, RNNModel])
def test_regress_flow_equals_step_by_step_backpropagation(plugin: type) -> None:
    corpus = corpus_of("synthetic:adding?length=12&examples=200&seed=3")
    task = get_task("regress")
    task.prepare(corpus)
    model = plugin.create(len(corpus.vocab), {"embedding_dim": 8, "hidden_size": 16}, seed=1)
    task.setup_model(model)
    flow = task.gradient_flow(model, corpus, 16, seed=0)
    assert flow is not None and flow.steps == 12
    data = task.data  # type: ignore[attr-defined]
    pick = full_length_sample(data.lengths["val"], 16, 0)
    x = torch.from_numpy(data.values["val"][pick]).float()
    z = torch.from_numpy((data.targets["val"][pick] - data.mean) / data.std).float()
    head = model.task_head
    assert head is not None
    with torch.no_grad():
        projected = model.value_input(x)  # type: ignore[misc]
    reference = unfused_norms(model, projected, lambda h: ((head(h)[:, 0] - z) ** 2).sum())
    np.testing.assert_allclose(flow.norms, reference, rtol=1e-4, atol=1e-9)
    # the last step by hand: d/dh (w.h + b - z)^2 = 2 (pred - z) w
    with torch.no_grad():
        states = model.states_through_time(x)
        assert states is not None
        pred = head(states[0][:, -1])[:, 0]
        by_hand = (2 * (pred - z).abs() * head.weight.norm()).mean().item()
    assert flow.norms[-1] == pytest.approx(by_hand, rel=1e-4)


def test_classify_flow_equals_step_by_step_backpropagation() -> None:
    corpus = corpus_of("synthetic:parity?length=10&examples=300&seed=2")
    task = get_task("classify")
    task.prepare(corpus)
    model = LSTMModel.create(len(corpus.vocab), {"embedding_dim": 8, "hidden_size": 16}, seed=2)
    task.setup_model(model)
    flow = task.gradient_flow(model, corpus, 32, seed=1)
    assert flow is not None
    data = task.data  # type: ignore[attr-defined]
    lengths = np.array([len(r) for r in data.ids["val"]])
    pick = full_length_sample(lengths, 32, 1)
    ids = torch.from_numpy(np.stack([data.ids["val"][int(i)] for i in pick]).astype(np.int64))
    y = torch.from_numpy(data.labels["val"][pick].astype(np.int64))
    head = model.task_head
    assert head is not None
    with torch.no_grad():
        embedded = model.encode(ids)
    reference = unfused_norms(
        model,
        embedded,
        lambda h: torch.nn.functional.cross_entropy(head(h), y, reduction="sum"),
    )
    assert flow.steps == ids.shape[1]
    np.testing.assert_allclose(flow.norms, reference, rtol=1e-4, atol=1e-9)


def test_the_flow_is_none_without_states_and_leaves_the_model_as_found() -> None:
    corpus = corpus_of("synthetic:adding?length=8&examples=100&seed=1")
    task = get_task("regress")
    task.prepare(corpus)
    assert task.gradient_flow(NGramModel(len(corpus.vocab), {"order": 2}), corpus, 8, 0) is None
    model = LSTMModel.create(len(corpus.vocab), {"embedding_dim": 8, "hidden_size": 16})
    task.setup_model(model)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert task.gradient_flow(model, corpus, 8, 0) is not None
    assert model.training and all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_full_length_sample_keeps_one_length_and_is_reproducible() -> None:
    lengths = np.array([5, 7, 7, 5, 7, 3, 7])
    pick = full_length_sample(lengths, 3, seed=4)
    assert len(pick) == 3 and set(lengths[pick]) == {7}
    np.testing.assert_array_equal(pick, full_length_sample(lengths, 3, seed=4))
    assert list(full_length_sample(lengths, 10, seed=0)) == [1, 2, 4, 6]
    assert len(full_length_sample(np.array([], np.int64), 3, 0)) == 0


def test_bad_inputs_are_one_line() -> None:
    model = LSTMModel.create(5, {"embedding_dim": 4, "hidden_size": 4})
    with pytest.raises(Exception, match="inputs must be") as info:
        summary_gradient_flow(model, torch.zeros(0, 3, dtype=torch.long), lambda h: h.sum())
    assert "\n" not in str(info.value)
