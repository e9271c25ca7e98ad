"""The one Trainer: clipping equations by hand, optimizers, objectives and target masks,
stateful BPTT, exact resume, early stopping, schedules, and the contract's independence."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline_core.config import TrainConfig
from pipeline_core.contract import FitData
from pipeline_core.errors import ConfigError
from pipeline_core.metrics import score_stream, score_targets, stream_nll
from pipeline_core.tasks import IGNORE, get_task
from pipeline_core.training import (
    Callback,
    Trainer,
    clip_gradients,
    default_validator,
    fit_model,
    make_optimizer,
    masked_loss,
    resolve_device,
)
from plugins.lstm import LSTMModel
from tests.helpers import StatelessGRU


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


def test_masked_loss_ignores_positions_like_ignore_index() -> None:
    logits = torch.randn(3, 5, 7)
    targets = torch.randint(0, 7, (3, 5))
    last_only = torch.full_like(targets, IGNORE)
    last_only[:, -1] = targets[:, -1]
    expected = torch.nn.functional.cross_entropy(logits[:, -1], targets[:, -1])
    assert masked_loss(logits, last_only).item() == pytest.approx(expected.item(), rel=1e-6)
    manual = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).mean()
    assert masked_loss(logits, targets).item() == pytest.approx(manual.item(), rel=1e-6)


def test_next_token_objectives_build_the_target_mask() -> None:
    task = get_task("next-token")
    ids = np.arange(40, dtype=np.uint8) % 7
    last = next(task.batches(ids, 5, 1, TrainConfig(objective="last", batch_size=4), epoch=1))
    assert (last.targets[:, :-1] == IGNORE).all() and (last.targets[:, -1] >= 0).all()
    assert last.n_targets == 4
    every = next(task.batches(ids, 5, 1, TrainConfig(objective="all", batch_size=4), epoch=1))
    assert (every.targets >= 0).all()
    # each target is the input shifted by one: teacher forcing
    assert np.array_equal(every.inputs[:, 1:], every.targets[:, :-1])


def test_stateful_batches_are_contiguous_streams_in_order() -> None:
    task = get_task("next-token")
    ids = np.arange(101, dtype=np.int64)
    cfg = TrainConfig(bptt="stateful", batch_size=4)
    batches = list(task.batches(ids, 10, 1, cfg, epoch=1))
    assert task.n_batches(ids, 10, 1, cfg) == len(batches) == 3  # 4 streams of 25
    assert [b.carry for b in batches] == [False, True, True]
    stream0 = np.concatenate([b.inputs[0] for b in batches])
    assert np.array_equal(stream0, np.arange(25))
    stream3 = np.concatenate([b.targets[3] for b in batches])
    assert np.array_equal(stream3, np.arange(76, 101))


def test_unknown_task_lists_the_known_ones() -> None:
    known = "known tasks: classify, fill-blank, next-token, regress, transduce"
    with pytest.raises(ConfigError, match=known):
        get_task("translate")


def _periodic(n: int) -> np.ndarray:
    return np.tile(np.array([1, 2, 3, 1, 2, 4], dtype=np.uint8), n // 6)


DATA = FitData(train=_periodic(1200), val=_periodic(120), vocab_size=5, context_len=6)
SMALL = {"embedding_dim": 8, "hidden_size": 16}


def _settings(seed: int, **kw: object) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 32, "lr": 0.02, "seed": seed, "progress": False}
    return TrainConfig(**{**base, **kw})


def _fit(seed: int, **kw: object) -> LSTMModel:
    model = LSTMModel.create(5, SMALL, seed=seed)
    history = fit_model(model, DATA, _settings(seed, **kw))
    assert [r.epoch for r in history] == list(range(1, len(history) + 1))
    assert all(np.isfinite(r.grad_norm) and r.tokens_per_s > 0 for r in history)
    assert model.is_fitted
    return model


def test_lstm_learns_a_periodic_sequence_and_is_deterministic() -> None:
    model = _fit(seed=3)
    nll = stream_nll(model, _periodic(60), context_len=6)
    assert nll < 0.1  # uniform would be log(5) = 1.61 nats
    again = _fit(seed=3)
    ctx = _periodic(12)[None, :6].astype(np.int64)
    assert np.array_equal(model.log_proba(ctx), again.log_proba(ctx))


def test_last_position_training_also_learns() -> None:
    model = _fit(seed=0, objective="last")
    assert stream_nll(model, _periodic(60), context_len=6) < 0.5


def test_stateful_bptt_learns() -> None:
    model = _fit(seed=1, bptt="stateful", batch_size=8)
    assert stream_nll(model, _periodic(60), context_len=6) < 0.2


def test_stateful_training_is_refused_for_a_plugin_without_state() -> None:
    model = StatelessGRU.create(5, {}, seed=0)
    with pytest.raises(ConfigError, match=r"bptt: stateful.*has none"):
        fit_model(model, DATA, _settings(0, bptt="stateful"))


def test_carried_state_scores_equal_full_prefix_scores() -> None:
    model = _fit(seed=2, bptt="stateful", batch_size=8, epochs=1)
    ids = np.random.default_rng(0).integers(0, 5, size=300).astype(np.int64)
    first = 7
    carried = score_stream(model, ids, first, chunk=64)  # chunks: the state crosses them
    prefixes = np.array([model.log_proba(ids[None, :t])[0, ids[t]] for t in range(first, len(ids))])
    assert len(carried.logp) == len(ids) - first
    assert np.abs(carried.logp - prefixes).max() < 1e-6


class _Kill(Callback):
    """Simulates a process killed right after epoch ``at`` was checkpointed."""

    def __init__(self, at: int, store: dict[str, object]) -> None:
        self.at, self.store = at, store

    def on_epoch_end(self, trainer: Trainer | None, record: object) -> None:
        assert trainer is not None
        if trainer.epoch == self.at:
            self.store["saved"] = trainer.checkpoint_state()
            raise KeyboardInterrupt


@pytest.mark.parametrize("schedule", ["none", "cosine", "plateau"])
def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(schedule: str) -> None:
    settings = _settings(5, epochs=3, lr_schedule=schedule, patience=2)
    whole = LSTMModel.create(5, {**SMALL, "dropout": 0.2, "num_layers": 2}, seed=5)
    full_history = Trainer(whole, DATA, settings).fit()

    store: dict[str, object] = {}
    killed = LSTMModel.create(5, {**SMALL, "dropout": 0.2, "num_layers": 2}, seed=5)
    with pytest.raises(KeyboardInterrupt):
        Trainer(killed, DATA, settings, callbacks=[_Kill(1, store)]).fit()
    fresh = LSTMModel.create(5, {**SMALL, "dropout": 0.2, "num_layers": 2}, seed=99)
    trainer = Trainer(fresh, DATA, settings)
    trainer.restore(store["saved"])  # type: ignore[arg-type]
    resumed_history = trainer.fit()
    assert [r.epoch for r in resumed_history] == [1, 2, 3]
    for a, b in zip(full_history, resumed_history, strict=True):
        assert a.val_nll == pytest.approx(b.val_nll, abs=1e-9)
        assert a.lr == b.lr
    ctx = _periodic(12)[None, :6].astype(np.int64)
    assert np.abs(whole.log_proba(ctx) - fresh.log_proba(ctx)).max() < 1e-9


def test_early_stopping_restores_the_best_weights() -> None:
    seen: list[float] = []

    class Watch(Callback):
        def on_epoch_end(self, trainer: Trainer | None, record: object) -> None:
            seen.append(record.val_nll)  # type: ignore[attr-defined]

    model = LSTMModel.create(5, SMALL, seed=0)
    # lr so high that validation worsens after the first epochs
    trainer = Trainer(model, DATA, _settings(0, epochs=12, lr=0.9, patience=1), callbacks=[Watch()])
    history = trainer.fit()
    assert len(history) < 12  # stopped early
    best = min(seen)
    assert trainer.state.best_val == best
    val = score_targets(
        model,
        np.lib.stride_tricks.sliding_window_view(DATA.val, 7)[:, :-1].astype(np.int64),
        np.lib.stride_tricks.sliding_window_view(DATA.val, 7)[:, -1],
    )
    assert float(-val.logp.mean()) == pytest.approx(best, rel=1e-6)


def test_device_cuda_without_one_is_a_config_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match=r"train\.device: cuda"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_neural_plugins_do_not_fit_themselves() -> None:
    from pipeline_core.errors import PluginError

    with pytest.raises(PluginError, match="Trainer"):
        LSTMModel(5).fit(DATA)


def test_contract_imports_neither_trainer_nor_metrics() -> None:
    code = (
        "import sys, pipeline_core.contract; "
        "mods = ('pipeline_core.training', 'pipeline_core.metrics'); "
        "bad = [m for m in mods if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_default_validator_scores_stateful_training_with_the_state_carried() -> None:
    """Without a task's scorer (``seqlab.api.train``, a mixture's component), a stateful
    plugin trained by stateful BPTT is validated as seqlab scores it: one pass over val,
    state carried from the train split's last ``context_len`` tokens; windows otherwise."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 7, 600)
    data = FitData(train=ids[:500], val=ids[500:], vocab_size=7, context_len=20)
    torch.manual_seed(0)
    model = LSTMModel(7, {"embedding_dim": 4, "hidden_size": 8})
    model.eval()
    carried = default_validator(data, TrainConfig(bptt="stateful"))(model)
    stream = torch.from_numpy(ids[480:].astype(np.int64))
    with torch.no_grad():
        logits, _ = model.step(stream[None, :-1], None)
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    by_hand = -logp[19:].gather(1, stream[20:, None]).mean().item()  # every val token
    assert carried == pytest.approx(by_hand, rel=1e-6)
    windows = default_validator(data, TrainConfig(bptt="windows"))(model)
    assert windows == pytest.approx(stream_nll(model, data.val, 20), rel=1e-12)
    assert windows != pytest.approx(carried, rel=1e-6)
