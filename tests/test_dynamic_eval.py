"""Dynamic evaluation (``train.dynamic_eval``): causal, effective on repeated text,
reported apart, and harmless to the static model and its figures."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline_core.config import DataConfig, TrackingConfig, TrainConfig, load_run_config
from pipeline_core.contract import FitData, SequenceModel, TorchSequenceModel
from pipeline_core.dynamic import DynamicSettings, evaluate_dynamic, score_dynamic
from pipeline_core.errors import ConfigError
from pipeline_core.experiment import DYNAMIC_COLUMN, ModelResult, leaderboard
from pipeline_core.metrics import score_stream, score_targets
from pipeline_core.report import ModelReport, score_model
from pipeline_core.training import train
from pipeline_core.vectorize import EncodedCorpus, sliding_windows, vectorize
from plugins.lstm import LSTMModel
from plugins.mixture import MixtureModel
from plugins.ngram import NGramModel
from tests.conftest import assert_one_line_error, run_cli

V, CTX = 30, 8
TRAIN = np.random.default_rng(0).integers(0, V, 3000)


def fitted_ngram() -> NGramModel:
    model = NGramModel(V, {"order": 4})
    model.fit(FitData(TRAIN, None, V, CTX))
    return model


def fitted_lstm() -> LSTMModel:
    model = LSTMModel.create(V, {"embedding_dim": 16, "hidden_size": 64})
    settings = TrainConfig(
        epochs=1,
        batch_size=32,
        progress=False,
        num_threads=1,
        bptt="stateful",
        max_batches_per_epoch=40,
    )
    train(model, FitData(TRAIN, None, V, CTX), settings)
    return model


STATEFUL_LSTM: dict[str, object] = {
    "plugin": "lstm",
    "params": {"embedding_dim": 8, "hidden_size": 16},
    "train": {"epochs": 1, "batch_size": 16, "lr": 0.01, "num_threads": 1, "bptt": "stateful"},
}


def fitted_mixture(components: list[dict[str, object]]) -> MixtureModel:
    """A mixture holding a stateful LSTM trained statefully: scored with carried state."""
    model = MixtureModel.create(V, {"components": components})
    model.fit(FitData(TRAIN[:2700], TRAIN[2700:], V, CTX))
    assert model.can_stream
    return model


@pytest.fixture(scope="module")
def models() -> dict[str, SequenceModel]:
    torch.set_num_threads(1)
    mixture = fitted_mixture([{"plugin": "ngram", "params": {"order": 3}}, STATEFUL_LSTM])
    return {"ngram": fitted_ngram(), "lstm": fitted_lstm(), "mixture": mixture}


def bits(logp: np.ndarray) -> float:
    return float(-logp.mean() / np.log(2))


@pytest.mark.parametrize(
    ("name", "carry"),
    [("ngram", False), ("lstm", False), ("lstm", True), ("mixture", True), ("mixture", False)],
)
def test_a_token_never_depends_on_itself_or_later_tokens(
    models: dict[str, SequenceModel], name: str, carry: bool
) -> None:
    model, rng = models[name], np.random.default_rng(1)
    ids = rng.integers(0, V, CTX + 120)
    settings = DynamicSettings(lr=0.03, segment=7)
    base = score_dynamic(model, ids, CTX, CTX, settings, carry).logp
    for t in (CTX, CTX + 6, CTX + 7, CTX + 50):  # segment starts, ends and middles
        changed = ids.copy()
        changed[t:] = (changed[t:] + 1 + rng.integers(0, V - 1, len(ids) - t)) % V
        logp = score_dynamic(model, changed, CTX, CTX, settings, carry).logp
        n = t - CTX  # scored positions strictly before t
        np.testing.assert_array_equal(logp[:n], base[:n])
        assert not np.array_equal(logp[n:], base[n:])  # the later ones do change


@pytest.mark.parametrize(
    ("name", "carry"), [("ngram", False), ("lstm", False), ("lstm", True), ("mixture", True)]
)
def test_the_first_segment_is_scored_as_the_static_model_scores_it(
    models: dict[str, SequenceModel], name: str, carry: bool
) -> None:
    model = models[name]
    ids = np.random.default_rng(2).integers(0, V, CTX + 40)
    if carry:
        static = score_stream(model, ids, CTX).logp
    else:
        windows = sliding_windows(ids, CTX)[: len(ids) - CTX].astype(np.int64)
        static = score_targets(model, windows, ids[CTX:]).logp
    dynamic = score_dynamic(model, ids, CTX, CTX, DynamicSettings(lr=0.03, segment=10), carry)
    assert len(dynamic.logp) == len(static)
    np.testing.assert_allclose(dynamic.logp[:10], static[:10], atol=1e-5)
    assert np.abs(dynamic.logp[10:] - static[10:]).max() > 1e-4  # then it has learned


@pytest.mark.parametrize("name", ["ngram", "lstm"])
def test_repeated_text_costs_far_less_dynamically(
    models: dict[str, SequenceModel], name: str
) -> None:
    model = models[name]
    # one SGD pass over a 150-token random block barely moves an LSTM (4.9 -> 4.5 bits
    # measured), so its first half is a short random cycle; the n-gram's is not
    block = np.random.default_rng(3).integers(0, V, 20 if name == "lstm" else 150)
    first = np.tile(block, 8) if name == "lstm" else block
    ids = np.concatenate([TRAIN[-CTX:], first, first])  # the second half repeats the first
    half = len(first)
    if isinstance(model, TorchSequenceModel):
        static = score_stream(model, ids, CTX).logp
        dynamic = score_dynamic(model, ids, CTX, CTX, DynamicSettings(lr=0.03, segment=5), True)
    else:
        windows = sliding_windows(ids, CTX)[: len(ids) - CTX].astype(np.int64)
        static = score_targets(model, windows, ids[CTX:]).logp
        dynamic = score_dynamic(model, ids, CTX, CTX, DynamicSettings(segment=10))
    assert bits(static[half:]) > 4.0  # the model could not learn the block from train
    assert bits(dynamic.logp[half:]) < 0.5 * bits(static[half:])


def test_a_streamed_component_adapts_as_it_does_alone(models: dict[str, SequenceModel]) -> None:
    """A mixture of one stateful LSTM, scored dynamically with carried state, is that
    LSTM scored dynamically alone with carried state (the same segments, the same SGD
    step on each, the same state carried), to 1e-9; it learns from the repeats; and a
    mixture scored so (beside an n-gram) leaves the static model's state untouched."""
    lone = fitted_mixture([STATEFUL_LSTM])
    lstm = lone.components[0]
    assert isinstance(lstm, TorchSequenceModel) and lone.can_stream
    ids = np.concatenate([TRAIN[-CTX:], np.tile(np.random.default_rng(4).integers(0, V, 20), 6)])
    settings = DynamicSettings(lr=0.03, segment=9)
    alone = score_dynamic(lstm, ids, CTX, CTX, settings, carry_state=True).logp
    mixed = score_dynamic(lone, ids, CTX, CTX, settings, carry_state=True).logp
    np.testing.assert_allclose(mixed, alone, rtol=0, atol=1e-9)
    assert bits(alone[-40:]) < bits(score_stream(lstm, ids, CTX).logp[-40:]) - 0.1  # it learnt
    mixture = models["mixture"]
    before = {k: v.clone() for k, v in mixture.get_state().items()}
    score_dynamic(mixture, ids, CTX, CTX, settings, carry_state=True)
    for key, value in mixture.get_state().items():
        assert torch.equal(value, before[key]), key


def small_corpus() -> EncodedCorpus:
    rng = np.random.default_rng(1)
    letters = np.array(list("abcdefghij "))
    block = "".join(rng.choice(letters, 300))
    text = "".join(rng.choice(letters, 3000)) + block * 3
    return vectorize(text, DataConfig(context_len=CTX, splits=(0.6, 0.1, 0.3), clean="none"))


def fit_on(corpus: EncodedCorpus, name: str) -> SequenceModel:
    data = FitData(corpus.train, corpus.val, len(corpus.vocab), CTX)
    if name == "ngram":
        model: SequenceModel = NGramModel(len(corpus.vocab), {"order": 4})
        model.fit(data)
        return model
    lstm = LSTMModel.create(len(corpus.vocab), {"embedding_dim": 8, "hidden_size": 32})
    train(
        lstm, data, TrainConfig(epochs=1, progress=False, num_threads=1, max_batches_per_epoch=20)
    )
    return lstm


@pytest.mark.parametrize("name", ["ngram", "lstm"])
def test_static_figures_and_weights_are_untouched(name: str) -> None:
    corpus = small_corpus()
    model = fit_on(corpus, name)
    before = model.get_state()
    carry = isinstance(model, TorchSequenceModel)

    def report(dynamic: DynamicSettings | None) -> ModelReport:
        return score_model(
            model,
            corpus,
            "next-token",
            carry,
            label=name,
            plugin=name,
            config={},
            history=[],
            tracking=TrackingConfig(samples=0),
            dynamic=dynamic,
        )

    plain = report(None)
    dyn = report(DynamicSettings(lr=0.01, segment=CTX))
    assert dyn.test_scores == plain.test_scores and dyn.val_scores == plain.val_scores
    assert plain.dynamic_scores is None and dyn.dynamic_scores is not None
    assert dyn.dynamic_scores.n_tokens == plain.test_scores.n_tokens
    assert dyn.dynamic_scores.n_chars == plain.test_scores.n_chars
    assert dyn.dynamic_scores.bpc < plain.test_scores.bpc  # the test split repeats itself
    after = model.get_state()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    # the leaderboard: its own column, the static ranking and figures unchanged
    rows = [
        ModelResult(name, name, "", scores=plain.test_scores, val_scores=plain.val_scores),
        ModelResult("other", "x", "", scores=dyn.test_scores, val_scores=dyn.val_scores),
    ]
    without = leaderboard(rows)
    for r in rows:
        r.dynamic_enabled, r.dynamic_scores = True, dyn.dynamic_scores
    with_dynamic = leaderboard(rows)
    assert DYNAMIC_COLUMN not in without and DYNAMIC_COLUMN in with_dynamic
    assert with_dynamic.drop(columns=DYNAMIC_COLUMN).equals(without)


class Frozen(NGramModel):
    """A plugin that does not implement ``adapt``: dynamic figures are n/a."""

    adapt = SequenceModel.adapt


def test_a_plugin_that_cannot_adapt_has_no_dynamic_figure() -> None:
    corpus = small_corpus()
    model = Frozen(len(corpus.vocab), {"order": 3})
    model.fit(FitData(corpus.train, None, len(corpus.vocab), CTX))
    assert evaluate_dynamic(model, corpus, DynamicSettings()) is None


@pytest.mark.parametrize(
    ("key", "value"),
    [("train.dynamic_lr", -1), ("train.dynamic_segment", 0), ("train.dynamic_decay", 2)],
)
def test_bad_settings_name_the_key(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_run_config(overrides={"train.dynamic_eval": True, key: value})


def test_bad_setting_on_the_command_line_is_one_line() -> None:
    result = run_cli("run", "--set", "train.dynamic_segment=0", "--models", "ngram")
    assert_one_line_error(result, "train.dynamic_segment")


@pytest.mark.slow
def test_run_reports_the_dynamic_column_and_metric(
    prefect_server: str, tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the whole leaderboard on one line per row
    config = tmp_path / "dyn.yaml"
    config.write_text(
        "data: {context_len: 8, clean: none, source: 'synthetic:markov?length=6000'}\n"
        "models:\n"
        "  - {plugin: ngram, params: {order: 3}}\n"
        "  - {plugin: lstm, params: {embedding_dim: 8, hidden_size: 16}}\n"
        "train: {epochs: 1, batch_size: 64, max_batches_per_epoch: 10, num_threads: 1,\n"
        "        dynamic_eval: true, dynamic_segment: 20}\n"
        "tracking: {samples: 0, gradient_flow: false}\n"
        "registry: {enabled: false}\n"
    )
    result = run_cli("run", "--config", str(config), "--tracking-uri", tracking_uri, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dyn bpc" in result.stdout and "test bpc" in result.stdout
    parent_id = re.search(r"MLflow parent run: ([0-9a-f]{32})", result.stdout).group(1)  # type: ignore[union-attr]
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["lstm", "ngram"]
    board = pd.read_csv(client.download_artifacts(parent_id, "leaderboard.csv", str(tmp_path)))
    assert list(board.columns[3:5]) == ["test_bpc", DYNAMIC_COLUMN]
    for child in children:
        metrics = child.data.metrics
        assert np.isfinite(metrics["test_bpc_dynamic"]) and np.isfinite(metrics["test_bpc"])
        assert metrics["test_bpc_dynamic"] != metrics["test_bpc"]
