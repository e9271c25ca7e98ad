"""The ``mixture`` plugin: EM weights, per-context weights, config errors, end to end.

The conformance kit checks the contract (tests/test_conformance.py, over every built-in);
here: the weights EM learns are a convex combination at least as good on val as any
component and as equal weights (recomputed from the components' own ``log_proba``), per
context weights win where components are good in different places, bad configs are one
line naming the field, and in a ``seqlab run`` the mixture beats its components on test.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from pipeline_core.contract import FitData
from pipeline_core.errors import ConfigError, DataError
from pipeline_core.registry import load_checkpoint
from plugins.mixture import MixtureModel, mixture_log_likelihood
from tests.conftest import WONDERLAND, assert_one_line_error, run_cli

CONTEXT_LEN = 8


def split(ids: np.ndarray) -> FitData:
    """80/10 train/val of ``ids`` (the last 10% left out, as a test split would be)."""
    n = len(ids)
    a, b = int(0.8 * n), int(0.9 * n)
    return FitData(
        train=ids[:a], val=ids[a:b], vocab_size=int(ids.max()) + 1, context_len=CONTEXT_LEN
    )


def val_component_logp(model: MixtureModel, data: FitData) -> np.ndarray:
    """log p_k(val token | its context_len predecessors) per component, (N, K), straight
    from each component's log_proba (the train tail is the first tokens' context)."""
    assert data.val is not None
    stream = np.concatenate([data.train, data.val]).astype(np.int64)
    first = len(data.train)
    windows = np.lib.stride_tricks.sliding_window_view(stream, CONTEXT_LEN + 1)[
        first - CONTEXT_LEN :
    ]
    contexts, targets = np.ascontiguousarray(windows[:, :-1]), windows[:, -1]
    rows = np.arange(len(targets))
    return np.stack([c.log_proba(contexts)[rows, targets] for c in model.components], axis=1)


def loglik(logp: np.ndarray, weights: np.ndarray) -> float:
    """Mean validation log-likelihood of the mixture with ``weights`` (K,) or (N, K)."""
    return float(np.mean(np.log(np.sum(np.exp(logp) * weights, axis=1))))


def markov_text(n: int, seed: int) -> np.ndarray:
    """An order-2 Markov chain over ids 1..6 with peaked but not deterministic rows."""
    rng = np.random.default_rng(seed)
    table = rng.dirichlet(np.full(6, 0.3), size=(6, 6))
    ids = [1, 2]
    for _ in range(n - 2):
        ids.append(1 + int(rng.choice(6, p=table[ids[-2] - 1, ids[-1] - 1])))
    return np.array(ids, dtype=np.int64)


def test_em_weights_are_convex_and_beat_every_component_and_equal_weights() -> None:
    data = split(markov_text(6000, seed=1))
    params = {
        "components": [
            {"plugin": "ngram", "params": {"order": 1}},
            {"plugin": "ngram", "params": {"order": 3}},
            {"plugin": "ngram", "params": {"order": 6, "smoothing": "witten_bell"}},
        ],
        "weights": "global",
    }
    model = MixtureModel.create(7, params)
    model.fit(data)
    assert model.weights is not None and model.weights.shape == (1, 3)
    w = model.weights[0]
    assert np.all(w > 0) and w.sum() == pytest.approx(1.0, abs=1e-12)

    logp = val_component_logp(model, data)
    learned = loglik(logp, w)
    singles = [float(logp[:, k].mean()) for k in range(3)]
    assert all(learned >= s for s in singles), (learned, singles)
    assert learned > loglik(logp, np.full(3, 1 / 3))
    # EM converged to the MAP optimum: no step away from it improves the objective
    # (the val log-likelihood plus the Dirichlet prior's `prior` pseudo-tokens per weight)
    prior = model.config.prior

    def objective(weights: np.ndarray) -> float:
        return len(logp) * loglik(logp, weights) + prior * float(np.log(weights).sum())

    for k in range(3):
        nudged = w + 0.02 * (np.eye(3)[k] - w)
        assert objective(w) >= objective(nudged) - 1e-9
    # log_proba is that mixture: rows normalised, and its val targets score `learned`
    stream = np.concatenate([data.train, data.val])
    ctx = np.lib.stride_tricks.sliding_window_view(stream, CONTEXT_LEN)[
        len(data.train) - CONTEXT_LEN : -1
    ]
    rows = model.log_proba(np.ascontiguousarray(ctx))
    assert np.allclose(np.exp(rows).sum(axis=1), 1.0, atol=1e-12)
    got = rows[np.arange(len(ctx)), data.val]
    assert float(got.mean()) == pytest.approx(learned, abs=1e-9)


def two_regime_text(blocks: int, seed: int) -> np.ndarray:
    """Alternating blocks: a fixed period-10 pattern over ids 1..5 (a sharp order-6
    n-gram predicts it exactly) and i.i.d. uniform ids 6..10 (its sparse counts
    overfit there, a unigram is right)."""
    rng = np.random.default_rng(seed)
    pattern = np.array([1, 2, 3, 1, 4, 5, 2, 1, 3, 5])
    parts = []
    for b in range(blocks):
        if b % 2 == 0:
            parts.append(np.tile(pattern, 10))
        else:
            parts.append(rng.integers(6, 11, size=100))
    return np.concatenate(parts).astype(np.int64)


def test_per_context_weights_beat_global_where_components_differ_by_context() -> None:
    data = split(two_regime_text(200, seed=2))
    components = [
        {"plugin": "ngram", "params": {"order": 1}},
        {"plugin": "ngram", "params": {"order": 6, "smoothing": "lidstone", "k": 0.001}},
    ]
    fitted = {}
    for mode in ("global", "per_context"):
        model = MixtureModel.create(11, {"components": components, "weights": mode})
        model.fit(data)
        fitted[mode] = model
    logp = val_component_logp(fitted["global"], data)
    assert np.allclose(logp, val_component_logp(fitted["per_context"], data))

    per_context = fitted["per_context"]
    assert per_context.weights is not None
    stream = np.concatenate([data.train, data.val])
    ctx = np.ascontiguousarray(
        np.lib.stride_tricks.sliding_window_view(stream, CONTEXT_LEN)[
            len(data.train) - CONTEXT_LEN : -1
        ]
    )
    rows = per_context.bucket_of(ctx)
    assert len(set(rows.tolist())) >= 2  # the regimes fall in different buckets
    assert fitted["global"].weights is not None
    global_ll = loglik(logp, fitted["global"].weights[0])
    context_ll = loglik(logp, per_context.weights[rows])
    assert context_ll > global_ll + 0.1, (context_ll, global_ll)
    # and each bucket leans to the component that is right there
    sharp = per_context.weights[rows, 1]
    periodic = np.isin(data.val, [1, 2, 3, 4, 5])
    assert sharp[periodic].mean() > 0.9 > sharp[~periodic].mean()


def test_checkpoint_round_trips_through_the_registry(tmp_path: Path) -> None:
    """Saved under its plugin name, a per-context mixture comes back from
    ``load_checkpoint`` with the same weights, count tables and probabilities; a
    checkpoint of a mixture with other components is refused with a DataError."""
    data = split(markov_text(3000, seed=4))
    params = {"components": [{"plugin": "ngram", "params": {"order": 2}}, {"plugin": "ngram"}]}
    model = MixtureModel.create(7, params)
    model.fit(data)
    vocab = [f"t{i}" for i in range(7)]
    path = model.save(tmp_path / "mix.pt", vocab=vocab, plugin="mixture")
    loaded = load_checkpoint(path, vocab=vocab)
    assert isinstance(loaded, MixtureModel) and loaded.weights is not None
    assert np.array_equal(loaded.weights, model.weights)
    probe = np.random.default_rng(0).integers(0, 7, size=(64, 12))
    assert np.array_equal(loaded.log_proba(probe), model.log_proba(probe))
    other = MixtureModel(7, {**params, "weights": "global"})
    with pytest.raises(DataError, match="weights"):
        other.set_state(model.get_state())


@pytest.mark.parametrize(
    ("components", "fragments"),
    [
        ([{"plugin": "no-such-model"}], ["components.0", "plugin", "no-such-model"]),
        (
            [{"plugin": "ngram"}, {"plugin": "mixture"}],
            ["components.1", "plugin", "mixtures do not nest"],
        ),
        ([], ["components", "at least 1"]),
        ([{"plugin": "ngram", "params": {"order": 0}}], ["components.0", "params", "order"]),
        ([{"plugin": "lstm", "train": {"epochs": 0}}], ["components.0", "train", "epochs"]),
        ([{"plugin": "ngram", "paramz": {}}], ["components.0", "paramz"]),
    ],
)
def test_bad_config_is_one_line_naming_the_field(
    components: list[dict[str, object]], fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        MixtureModel(5, {"components": components})
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_no_val_split_gives_equal_weights_with_a_warning() -> None:
    ids = markov_text(2000, seed=3)
    data = FitData(train=ids, val=None, vocab_size=7, context_len=CONTEXT_LEN)
    model = MixtureModel.create(
        7, {"components": [{"plugin": "ngram", "params": {"order": 1}}, {"plugin": "ngram"}]}
    )
    with pytest.warns(UserWarning, match="equal weights"):
        model.fit(data)
    assert model.weights is not None and np.allclose(model.weights, 0.5)


@pytest.mark.slow
def test_bad_component_in_a_run_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "models:\n"
        "  - {plugin: mixture, params: {components: [{plugin: ngram}, {plugin: mixture}]}}\n"
    )
    result = run_cli("run", "--config", str(config), "--data", "synthetic:markov", cwd=tmp_path)
    assert_one_line_error(result, "components.1", "mixtures do not nest")


@pytest.mark.slow
def test_run_mixture_beats_its_components_on_test(
    prefect_server: str, tracking_uri: str, tmp_path: Path
) -> None:
    text = WONDERLAND.read_text(encoding="utf-8")[:50_000]
    source = tmp_path / "wonderland-50k.txt"
    source.write_text(text, encoding="utf-8")
    config = tmp_path / "mixture.yaml"
    config.write_text(
        "data: {context_len: 16}\n"
        "models:\n"
        "  - {plugin: ngram, name: ng3, params: {order: 3}}\n"
        "  - {plugin: ngram, name: ng6, params: {order: 6}}\n"
        "  - plugin: mixture\n"
        "    params:\n"
        "      components:\n"
        "        - {plugin: ngram, params: {order: 3}}\n"
        "        - {plugin: ngram, params: {order: 6}}\n"
    )
    result = run_cli(
        "run",
        "--config",
        str(config),
        "--data",
        str(source),
        "--clean",
        "seed",
        "--tracking-uri",
        tracking_uri,
        "--no-register",
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parent_id = re.search(r"MLflow parent run: ([0-9a-f]{32})", result.stdout).group(1)  # type: ignore[union-attr]
    client = MlflowClient(tracking_uri)
    exp_id = client.get_run(parent_id).info.experiment_id
    children = client.search_runs(
        [exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    bpc = {c.info.run_name: c.data.metrics["test_bpc"] for c in children}
    assert set(bpc) == {"ng3", "ng6", "mixture"}, bpc
    assert bpc["mixture"] < min(bpc["ng3"], bpc["ng6"]), bpc


def test_dynamic_evaluation_adapts_every_component_that_can() -> None:
    """Under dynamic evaluation the n-gram components learn the scored text: a block the
    training text never showed costs less the second time; the weights stay fixed."""
    from pipeline_core.contract import AdaptNotSupported
    from pipeline_core.dynamic import DynamicSettings, score_dynamic
    from pipeline_core.metrics import score_targets
    from pipeline_core.vectorize import sliding_windows

    vocab = 20
    train = np.random.default_rng(0).integers(1, vocab, 4000)
    data = FitData(train[:3600], train[3600:], vocab, CONTEXT_LEN)
    mixture = MixtureModel(
        vocab,
        {"components": [{"plugin": "ngram", "params": {"order": 3}}, {"plugin": "ngram"}]},
    )
    mixture.fit(data)
    weights = mixture.weights.copy()
    block = np.random.default_rng(7).integers(1, vocab, 200)
    ids = np.concatenate([train[-CONTEXT_LEN:], block, block])
    windows = sliding_windows(ids, CONTEXT_LEN)[: len(ids) - CONTEXT_LEN].astype(np.int64)
    static = score_targets(mixture, windows, ids[CONTEXT_LEN:]).logp
    dynamic = score_dynamic(mixture, ids, CONTEXT_LEN, CONTEXT_LEN, DynamicSettings(segment=10))
    second = slice(len(block), None)
    # mixed with validation's weights, the adapted n-grams win back over half a nat a token
    assert -dynamic.logp[second].mean() < -static[second].mean() - 0.5
    # the first segment is scored before anything is learnt
    np.testing.assert_allclose(dynamic.logp[:10], static[:10])
    np.testing.assert_array_equal(mixture.weights, weights)  # the static model untouched

    neural_only = MixtureModel(
        vocab, {"components": [{"plugin": "lstm", "params": {"hidden_size": 8}}]}
    )
    with pytest.raises(AdaptNotSupported, match="none of its components"):
        neural_only.adapt(ids, 10)


def test_dynamic_evaluation_adapts_neural_components_causally() -> None:
    """Inside a dynamic evaluation a neural component learns too (the SGD step seqlab
    gives a neural plugin on windows, with the run's settings): a repeated block costs
    less the second time; no token's score depends on itself or later tokens; the static
    model's weights are untouched. Outside one, a neural-only mixture cannot adapt."""
    from pipeline_core.contract import AdaptNotSupported
    from pipeline_core.dynamic import DynamicSettings, score_dynamic
    from pipeline_core.metrics import score_targets
    from pipeline_core.vectorize import sliding_windows

    vocab = 12
    text = markov_text(3000, seed=3)
    lstm = {
        "plugin": "lstm",
        "params": {"embedding_dim": 8, "hidden_size": 32},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.01, "num_threads": 1},
    }
    mixture = MixtureModel(vocab, {"components": [lstm]})
    mixture.fit(FitData(text[:2700], text[2700:], vocab, CONTEXT_LEN))
    before = {k: v.clone() for k, v in mixture.get_state().items()}
    block = np.random.default_rng(5).integers(7, vocab, 150)  # ids the chain never emits
    ids = np.concatenate([text[-CONTEXT_LEN:], block, block])
    settings = DynamicSettings(lr=0.01, decay=0.0, segment=10)
    windows = sliding_windows(ids, CONTEXT_LEN)[: len(ids) - CONTEXT_LEN].astype(np.int64)
    static = score_targets(mixture, windows, ids[CONTEXT_LEN:]).logp
    dynamic = score_dynamic(mixture, ids, CONTEXT_LEN, CONTEXT_LEN, settings)
    first, second = slice(None, len(block)), slice(len(block), None)
    assert -dynamic.logp[second].mean() < -static[second].mean() - 0.5
    np.testing.assert_allclose(dynamic.logp[:10], static[:10], atol=1e-9)
    changed = ids.copy()
    changed[CONTEXT_LEN + 100 :] = 1
    again = score_dynamic(mixture, changed, CONTEXT_LEN, CONTEXT_LEN, settings)
    np.testing.assert_allclose(again.logp[:100], dynamic.logp[:100], atol=1e-9)
    assert not np.allclose(again.logp[first][100:], dynamic.logp[first][100:])
    for key, value in mixture.get_state().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    with pytest.raises(AdaptNotSupported, match="none of its components"):
        mixture.adapt(ids, 10)


# ---- carried state: a mixture holding a stateful component trained statefully ----------
LSTM_TRAIN: dict[str, Any] = {"epochs": 1, "batch_size": 8, "lr": 0.01, "num_threads": 1}
LSTM_PARAMS: dict[str, Any] = {"embedding_dim": 8, "hidden_size": 16}
STATEFUL_LSTM = {
    "plugin": "lstm",
    "params": LSTM_PARAMS,
    "train": {**LSTM_TRAIN, "bptt": "stateful"},
}
WINDOWED_LSTM = {
    "plugin": "lstm",
    "params": LSTM_PARAMS,
    "train": {**LSTM_TRAIN, "bptt": "windows"},
}


@pytest.fixture(scope="module")
def streamed() -> tuple[MixtureModel, FitData]:
    """ngram 3 + a stateful LSTM trained by stateful BPTT, per-context weights."""
    torch.set_num_threads(1)
    data = split(markov_text(4000, seed=5))
    components = [{"plugin": "ngram", "params": {"order": 3}}, STATEFUL_LSTM]
    model = MixtureModel.create(7, {"components": components, "context_order": 2})
    model.fit(data)
    return model, data


def unseen() -> np.ndarray:
    """Text the fit never saw (to follow the train split's last CONTEXT_LEN tokens)."""
    return markov_text(700, seed=6)


def test_streamed_mixture_gives_each_component_what_it_gets_alone(
    streamed: tuple[MixtureModel, FitData],
) -> None:
    """In the mixture's one carried-state pass the stateful LSTM's log-probabilities are
    those score_stream gives it alone, the n-gram's those of its windows, and the
    mixture's rows mix exactly those with its bucket's weights."""
    from pipeline_core.metrics import score_stream, score_targets

    model, data = streamed
    assert model.streamed == (1,) and model.can_stream and model.window == CONTEXT_LEN
    ids = np.concatenate([data.train[-CONTEXT_LEN:], unseen()]).astype(np.int64)
    logp, rows = model.stream_component_logp(ids, CONTEXT_LEN)
    ngram, lstm = model.components
    alone = score_stream(lstm, ids, CONTEXT_LEN).logp
    np.testing.assert_allclose(logp[:, 1], alone, rtol=0, atol=1e-9)
    windows = np.ascontiguousarray(
        np.lib.stride_tricks.sliding_window_view(ids, CONTEXT_LEN)[:-1], dtype=np.int64
    )
    targets = ids[CONTEXT_LEN:]
    np.testing.assert_allclose(
        logp[:, 0], score_targets(ngram, windows, targets).logp, rtol=0, atol=1e-9
    )
    np.testing.assert_array_equal(rows, model.bucket_of(windows))
    assert len(set(rows.tolist())) >= 2  # the per-context weights are really in play
    # the LSTM really carries its state: on windows of CONTEXT_LEN it scores otherwise
    windowed = score_targets(lstm, windows, targets).logp
    assert np.abs(windowed - alone).max() > 1e-4
    assert model.weights is not None
    mixed = score_stream(model, ids, CONTEXT_LEN).logp
    np.testing.assert_allclose(
        mixed, mixture_log_likelihood(logp, model.weights[rows]), rtol=0, atol=1e-9
    )


def test_streamed_weights_are_fitted_on_carried_state_from_the_train_tail(
    streamed: tuple[MixtureModel, FitData],
) -> None:
    """The val fit reads val as evaluate(carry_state=True) does: one pass from the
    CONTEXT_LEN train tokens before the first val token; the weights are EM's on those."""
    from pipeline_core.metrics import score_stream

    model, data = streamed
    assert data.val is not None
    logp, rows = model.val_logp(data)
    assert len(logp) == len(data.val)
    ids = np.concatenate([data.train[-CONTEXT_LEN:], data.val]).astype(np.int64)
    np.testing.assert_array_equal(
        logp[:, 1], score_stream(model.components[1], ids, CONTEXT_LEN).logp
    )
    np.testing.assert_array_equal(logp[:, 0], val_component_logp(model, data)[:, 0])
    np.testing.assert_array_equal(model.weights, model.fit_weights(logp, rows))


def test_window_only_mixture_is_scored_as_before() -> None:
    """Without a component trained statefully (a stateful LSTM trained on windows, an
    n-gram) the mixture does not stream, and its weights are those of the window path."""
    from pipeline_core.config import TrainConfig
    from pipeline_core.errors import PluginError

    params = {"components": [{"plugin": "ngram", "params": {"order": 3}}, WINDOWED_LSTM]}
    assert not MixtureModel.scores_streaming(params, TrainConfig(bptt="stateful"))
    data = split(markov_text(3000, seed=7))
    model = MixtureModel.create(7, params)
    model.fit(data)
    assert model.streamed == () and not model.can_stream
    contexts, targets = model.val_positions(data)
    old = model.fit_weights(
        model.component_target_logp(contexts, targets), model.bucket_of(contexts)
    )
    np.testing.assert_array_equal(model.weights, old)
    with pytest.raises(PluginError, match="no component carries state"):
        model.stream_log_proba(targets[:5])
    stateful = {"components": [{"plugin": "ngram"}, STATEFUL_LSTM]}
    assert MixtureModel.scores_streaming(stateful, TrainConfig())


def test_streamed_checkpoint_round_trip_streams_the_same_numbers(
    streamed: tuple[MixtureModel, FitData], tmp_path: Path
) -> None:
    """Saved and loaded, the streamed mixture scores the same numbers; a checkpoint
    from before carried-state scoring (no window) loads and scores on windows."""
    from pipeline_core.metrics import score_stream

    model, data = streamed
    vocab = [f"t{i}" for i in range(7)]
    path = model.save(tmp_path / "mix.pt", vocab=vocab, plugin="mixture")
    loaded = load_checkpoint(path, vocab=vocab)
    assert isinstance(loaded, MixtureModel) and loaded.can_stream
    ids = np.concatenate([data.train[-CONTEXT_LEN:], unseen()]).astype(np.int64)
    np.testing.assert_array_equal(
        score_stream(loaded, ids, CONTEXT_LEN).logp, score_stream(model, ids, CONTEXT_LEN).logp
    )
    old = {k: v for k, v in model.get_state().items() if k != "window"}
    before = MixtureModel(7, model.config)
    before.set_state(old)
    assert not before.can_stream and before.window is None


def test_run_labels_a_mixture_carried_state_only_with_a_statefully_trained_component() -> None:
    """``seqlab run``'s decision (carries_state of the resolved config) and the report's
    scoring label: carried state with a stateful LSTM trained statefully, windows
    without one; the carried scores are evaluate's carried-state figures."""
    from pipeline_core.config import DataConfig, ModelSpec, TrackingConfig, TrainConfig
    from pipeline_core.experiment import carries_state, fit_data, resolve_models
    from pipeline_core.metrics import evaluate
    from pipeline_core.report import score_model
    from pipeline_core.vectorize import vectorize

    text = WONDERLAND.read_text(encoding="utf-8")[:12_000]
    corpus = vectorize(text, DataConfig(context_len=CONTEXT_LEN, clean="none"))
    specs = [
        ModelSpec(
            plugin="mixture",
            name="carried",
            params={"components": [{"plugin": "ngram"}, STATEFUL_LSTM]},
        ),
        ModelSpec(
            plugin="mixture",
            name="windowed",
            params={"components": [{"plugin": "ngram"}, WINDOWED_LSTM]},
        ),
        ModelSpec(plugin="mixture", name="ngrams"),
    ]
    resolved = resolve_models(specs, "next-token", TrainConfig(bptt="stateful"))
    assert [carries_state(r) for r in resolved] == [True, False, False]
    labels = {}
    for item in resolved[:2]:
        model = item.plugin_cls.create(len(corpus.vocab), item.config)
        model.fit(fit_data(corpus))
        report = score_model(
            model,
            corpus,
            "next-token",
            carries_state(item),
            label=item.label,
            plugin="mixture",
            config=item.config,
            history=[],
            tracking=TrackingConfig(samples=0),
        )
        labels[item.label] = report.scoring
        carry = carries_state(item)
        assert report.test_scores == evaluate(model, corpus, "test", carry_state=carry)
    assert labels == {"carried": "carried state", "windowed": "windows"}


# ---- neural components are checked before a run, like a neural plugin ----------------
def test_trained_parts_are_the_neural_components_with_their_settings() -> None:
    """Each neural component, named by its place, under the settings fit trains it with
    (its own ``train`` over a quiet default seeded seed + i); n-grams train no net."""
    params = {"components": [{"plugin": "ngram"}, STATEFUL_LSTM], "seed": 3}
    (part,) = MixtureModel.trained_parts(params)
    name, plugin_cls, settings = part
    assert name == "component 2 (lstm)" and plugin_cls.__name__ == "LSTMModel"
    assert (settings.seed, settings.bptt, settings.batch_size) == (4, "stateful", 8)
    assert MixtureModel.trained_parts({}) == []  # the default n-grams


def test_a_component_whose_batches_cannot_fill_is_refused_before_any_run() -> None:
    """seqlab run's pre-flight (check_fits) names the model and the component; before,
    the mixture's run started and failed in its fit."""
    from pipeline_core.config import DataConfig, ModelSpec, TrainConfig
    from pipeline_core.experiment import check_fits, resolve_models
    from pipeline_core.vectorize import vectorize

    corpus = vectorize(
        WONDERLAND.read_text(encoding="utf-8")[:3000],
        DataConfig(context_len=CONTEXT_LEN, clean="none"),
    )
    greedy = {**STATEFUL_LSTM, "train": {**STATEFUL_LSTM["train"], "batch_size": 5000}}
    spec = ModelSpec(plugin="mixture", params={"components": [{"plugin": "ngram"}, greedy]})
    resolved = resolve_models([spec], "next-token", TrainConfig())
    with pytest.raises(DataError) as err:
        check_fits(resolved, corpus, "next-token")
    message = str(err.value)
    assert message.startswith("model 'mixture', component 2 (lstm): ")
    assert "batch_size 5000" in message and "\n" not in message
    ok = ModelSpec(plugin="mixture", params={"components": [{"plugin": "ngram"}, STATEFUL_LSTM]})
    check_fits(resolve_models([ok], "next-token", TrainConfig()), corpus, "next-token")
