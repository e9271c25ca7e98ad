"""Every built-in plugin passes every check; and the kit catches what it claims to.

The first test is what a plugin author writes (``parametrize_with_checks``), run over
each plugin that seqlab's own distribution registers, then over every n-gram smoothing
(with its documented deviations declared as expected failures) and over the LSTM trained
statefully. The rest test the kit itself: a small, correct count-based model defined here
passes every check, and each deliberately broken variant of it (or a small neural one)
fails the check for the rule it breaks, with a message stating it.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from pydantic import Field
from typer.testing import CliRunner

from pipeline_core import registry
from pipeline_core.contract import (
    EpochCallback,
    EpochRecord,
    FitData,
    NotFittedError,
    PluginConfig,
    SequenceModel,
    State,
    TaskKind,
    TorchSequenceModel,
    as_context_array,
)
from pipeline_core.errors import ConfigError, DataError
from pipeline_core.testing import (
    CheckFailure,
    KitCase,
    all_checks,
    as_case,
    check_plugin,
    parametrize_with_checks,
    run_check,
)
from pipeline_core.testing import checks as kit
from plugins.lstm import LSTMModel
from plugins.ngram import NGramModel, Smoothing

pytest_plugins = ["pytester"]

BUILTINS = sorted(i.name for i in registry.discover() if i.distribution == "seqlab")

# ---- the built-ins under every configuration worth checking ----------------------------
SMOOTHINGS: tuple[str, ...] = typing.get_args(Smoothing)
#: nltk_compat is valid with every smoothing but modified Kneser-Ney (NLTK has none)
NGRAM_CASES = [(NGramModel, {"smoothing": s}) for s in SMOOTHINGS] + [
    (NGramModel, {"smoothing": s, "nltk_compat": True})
    for s in SMOOTHINGS
    if s != "modified_kneser_ney"
]
LSTM_CASES = [KitCase(LSTMModel, train={"bptt": "stateful"})]  # "lstm" itself: bptt windows

#: the checks that validate whole rows (finite, summing to 1): a p = 0 fails them all
ROW_CHECKS = (
    "log_proba_normalised",
    "batch_of_one",
    "short_context",
    "long_context",
    "fill_blank",
)
#: nltk_compat smoothings whose unigram level is not smoothed (see plugins/ngram.py)
NLTK_ZEROS = frozenset({"absolute", "witten_bell", "kneser_ney", "stupid_backoff"})


def ngram_deviations(case: KitCase) -> dict[str, str]:
    """The n-gram's documented deviations from the contract, per configuration."""
    if case.plugin is not NGramModel:
        return {}
    config = case.config
    smoothing, compat = config.smoothing, config.nltk_compat  # type: ignore[attr-defined]
    if smoothing == "mle":
        reason = "mle gives p = 0 (log_proba -inf) to unseen events and contexts, by design"
    elif compat and smoothing in NLTK_ZEROS:
        reason = (
            f"{smoothing} with nltk_compat reproduces nltk.lm's p = 0 for ids unseen in "
            "training (<unk> included): its unigram level is not smoothed"
        )
    else:
        return {}
    return dict.fromkeys(ROW_CHECKS, reason)


@parametrize_with_checks(
    [*BUILTINS, *NGRAM_CASES, *LSTM_CASES], expected_failed_checks=ngram_deviations
)
def test_builtin_plugin_conforms(plugin: KitCase, check: Any) -> None:
    check(plugin)


# ---- a correct reference plugin, count-based, defined here ----------------------------
class BigramConfig(PluginConfig):
    alpha: float = Field(default=0.1, gt=0)


class Bigram(SequenceModel):
    """Add-alpha smoothed bigram counts: the smallest model that obeys every rule."""

    config_class: ClassVar[type[PluginConfig]] = BigramConfig
    task_kinds: ClassVar[frozenset[TaskKind]] = frozenset({"next-token"})
    test_params: ClassVar[dict[str, Any]] = {"alpha": 0.05}
    config: BigramConfig

    def __init__(self, vocab_size: int, config: Any = None) -> None:
        super().__init__(vocab_size, config)
        self.counts: np.ndarray | None = None

    def fit(self, data: FitData, on_epoch: EpochCallback | None = None) -> list[EpochRecord]:
        counts = np.zeros((self.vocab_size, self.vocab_size))
        np.add.at(counts, (data.train[:-1], data.train[1:]), 1.0)
        self.counts = self.adjust(counts)
        record = EpochRecord(epoch=1, train_nll=1.0, val_nll=float("nan"))
        if on_epoch is not None:
            on_epoch(record)
        return [record]

    def adjust(self, counts: np.ndarray) -> np.ndarray:
        return counts

    def rows(self, last: np.ndarray) -> np.ndarray:
        assert self.counts is not None
        rows = self.counts[last] + self.config.alpha
        return np.asarray(np.log(rows / rows.sum(axis=1, keepdims=True)))

    def log_proba(self, contexts: np.ndarray) -> np.ndarray:
        if self.counts is None:
            raise NotFittedError("Bigram: fit or load before asking for probabilities")
        ctx = as_context_array(contexts)
        if ctx.shape[1] == 0 or ctx.min() < 0 or ctx.max() >= self.vocab_size:
            raise DataError(f"token ids must lie in [0, {self.vocab_size})")
        return self.rows(ctx[:, -1])

    @property
    def is_fitted(self) -> bool:
        return self.counts is not None

    def get_state(self) -> dict[str, torch.Tensor]:
        return {} if self.counts is None else {"counts": torch.from_numpy(self.counts.copy())}

    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self.counts = state["counts"].numpy().copy()


# ---- broken variants: each breaks one rule ---------------------------------------------
class Unnormalised(Bigram):
    def rows(self, last: np.ndarray) -> np.ndarray:
        assert self.counts is not None
        return np.asarray(np.log(self.counts[last] + self.config.alpha))


class Unsmoothed(Bigram):
    def rows(self, last: np.ndarray) -> np.ndarray:
        assert self.counts is not None
        rows = self.counts[last] + 0.0
        rows[rows.sum(axis=1) == 0] = 1.0
        with np.errstate(divide="ignore"):
            return np.asarray(np.log(rows / rows.sum(axis=1, keepdims=True)))


class Float32(Bigram):
    def rows(self, last: np.ndarray) -> np.ndarray:
        return super().rows(last).astype(np.float32)


class Nondeterministic(Bigram):
    def adjust(self, counts: np.ndarray) -> np.ndarray:
        return counts + np.random.default_rng().random(counts.shape)  # unseeded


class NoisyInference(Bigram):
    def rows(self, last: np.ndarray) -> np.ndarray:
        out = super().rows(last)
        noise = np.random.default_rng().normal(0, 1e-3, out.shape)
        return np.asarray(out + noise - np.log(np.exp(out + noise).sum(1, keepdims=True)))


class NoRangeCheck(Bigram):
    def log_proba(self, contexts: np.ndarray) -> np.ndarray:
        if self.counts is None:
            raise NotFittedError("not fitted")
        return self.rows(np.asarray(contexts)[:, -1])


class AnswersBeforeFit(Bigram):
    def __init__(self, vocab_size: int, config: Any = None) -> None:
        super().__init__(vocab_size, config)
        self.counts = np.zeros((vocab_size, vocab_size))


class RandomAtConstruction(Bigram):
    def __init__(self, vocab_size: int, config: Any = None) -> None:
        super().__init__(vocab_size, config)
        self.counts = np.random.default_rng().random((vocab_size, vocab_size))

    @property
    def is_fitted(self) -> bool:
        return False


class ForgetsOnLoad(Bigram):
    def set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self.counts = np.zeros((self.vocab_size, self.vocab_size))


class Uniform(Bigram):
    def adjust(self, counts: np.ndarray) -> np.ndarray:
        return np.zeros_like(counts)


class RequiredConfig(PluginConfig):
    alpha: float


class RequiredField(Bigram):
    config_class: ClassVar[type[PluginConfig]] = RequiredConfig


class PydanticErrors(Bigram):
    @classmethod
    def make_config(cls, values: Any) -> PluginConfig:
        return cls.config_class(**dict(values or {}))  # ValidationError escapes


class TakesData(Bigram):
    def __init__(self, vocab_size: int, config: Any = None, corpus: Any = None) -> None:
        super().__init__(vocab_size, config)


class EmptyHistory(Bigram):
    def fit(self, data: FitData, on_epoch: Any = None) -> Any:
        super().fit(data)
        return []


class BadKinds(Bigram):
    task_kinds: ClassVar[Any] = frozenset()


class LeakyDropout(TorchSequenceModel):
    """A neural plugin whose dropout stays on at inference."""

    config_class: ClassVar[type[PluginConfig]] = BigramConfig
    test_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, vocab_size: int, config: Any = None) -> None:
        super().__init__(vocab_size, config)
        self.embedding = torch.nn.Embedding(vocab_size, 8)
        self.head = torch.nn.Linear(8, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.nn.functional.dropout(self.embedding(x), p=0.5, training=True)
        return self.head(hidden)


class Transducer(Bigram):
    """Declares the transduce task without implementing it."""

    task_kinds: ClassVar[Any] = frozenset({"next-token", "transduce"})


# ---- small neural plugins: correct ones, and each breaking one rule of contract v2 ------
class TinyConfig(PluginConfig):
    width: int = Field(default=16, ge=1)


class CausalConv(TorchSequenceModel):
    """Embedding -> convolution over positions t-2..t (left padding only) -> linear."""

    config_class: ClassVar[type[PluginConfig]] = TinyConfig
    padding: ClassVar[tuple[int, int]] = (2, 0)

    def __init__(self, vocab_size: int, config: Any = None) -> None:
        super().__init__(vocab_size, config)
        width = self.config.width  # type: ignore[attr-defined]
        self.embedding = torch.nn.Embedding(vocab_size, 8)
        self.conv = torch.nn.Conv1d(8, width, kernel_size=3)
        self.head = torch.nn.Linear(width, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.pad(self.embedding(x).transpose(1, 2), self.padding)
        return self.head(torch.relu(self.conv(h)).transpose(1, 2))


class LeakyConv(CausalConv):
    """Pads both sides, so position t sees t+1: every rule holds but causality."""

    padding: ClassVar[tuple[int, int]] = (1, 1)


class TinyLSTM(TorchSequenceModel):
    """Embedding -> LSTM -> linear, carrying (h, c): correct."""

    config_class: ClassVar[type[PluginConfig]] = TinyConfig
    stateful: ClassVar[bool] = True

    def __init__(self, vocab_size: int, config: Any = None) -> None:
        super().__init__(vocab_size, config)
        width = self.config.width  # type: ignore[attr-defined]
        self.embedding = torch.nn.Embedding(vocab_size, 8)
        self.lstm = torch.nn.LSTM(8, width, batch_first=True)
        self.head = torch.nn.Linear(width, vocab_size)

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        hidden, (h, c) = self.lstm(self.embedding(x), state)
        return self.head(hidden), self.carry(h, c)

    def carry(self, h: torch.Tensor, c: torch.Tensor) -> State:
        return (h, c)


class HalvedState(TinyLSTM):
    """Returns a damaged state: a fresh pass is right, a carried one is not."""

    def carry(self, h: torch.Tensor, c: torch.Tensor) -> State:
        return (h * 0.5, c)


class BatchFirstState(TinyLSTM):
    """Returns its state batch-first: right for one stream, wrong for several."""

    def carry(self, h: torch.Tensor, c: torch.Tensor) -> State:
        return (h.transpose(0, 1), c.transpose(0, 1))


BROKEN = [
    (Unnormalised, "log_proba_normalised", "sums to 1 within 1e-06"),
    (Unsmoothed, "log_proba_normalised", "every log-probability is finite"),
    (Float32, "log_proba_shape", "log_proba returns float64"),
    (Nondeterministic, "deterministic_fit", "fitting twice under the same seed"),
    (NoisyInference, "inference_is_pure", "log_proba is pure"),
    (NoRangeCheck, "rejects_bad_input", "raised IndexError instead of a SeqlabError"),
    (AnswersBeforeFit, "unfitted_log_proba", "raises NotFittedError"),
    (RandomAtConstruction, "no_state_before_fit", "identical get_state()"),
    (ForgetsOnLoad, "save_load_roundtrip", "log_proba after load differs"),
    (Uniform, "learns_periodic_sequence", "held-out nll 1.609"),
    (RequiredField, "config_defaults", "field(s) without a default: alpha"),
    (PydanticErrors, "config_rejects_unknown_key", "raised ValidationError instead of ConfigError"),
    (PydanticErrors, "config_rejects_invalid_value", "instead of ConfigError"),
    (TakesData, "construction", "parameters are ['vocab_size', 'config', 'corpus']"),
    (EmptyHistory, "fit_returns_epoch_records", "fit returned an empty list"),
    (BadKinds, "task_kinds", "task_kinds is empty"),
    (LeakyDropout, "inference_is_pure", "dropout left on?"),
    (LeakyConv, "causal", "tokens after position 0 moved the logits at position 0"),
    (HalvedState, "carried_state", "row 5 (after 6 ids, in chunks of 5) differs"),
    (BatchFirstState, "stateful_training", "Expected hidden[0] size (1, 2, 16)"),
    (Transducer, "task_kinds", "task_kinds has transduce but transduce is the base's"),
]
#: a correct plugin of the same kind, which must pass the check the broken one fails
REFERENCE: dict[type, type] = {
    LeakyDropout: CausalConv,
    LeakyConv: CausalConv,
    HalvedState: TinyLSTM,
    BatchFirstState: TinyLSTM,
}
#: the rules of contract v2, and which check each broken plugin alone fails
NEW_RULES = ("causal", "carried_state", "refuses_undeclared_task", "stateful_training")
CHECKS = {c.name: c for c in all_checks()}


def test_check_names_are_unique_and_state_their_rule() -> None:
    checks = all_checks()
    assert len(CHECKS) == len(checks) >= 20
    for check in checks:
        assert check.fn.__name__ == f"check_{check.name}"
        assert len(check.rule) > 20, check.name


#: rules of tasks the reference plugins do not declare
TRANSDUCE_RULES = {c.name for c in all_checks() if c.task_kind == "transduce"}
CLASSIFY_RULES = {c.name for c in all_checks() if c.task_kind == "classify"}
NOT_FOR_COUNT_BASED = {
    "fill_blank",
    "causal",
    "carried_state",
    "stateful_training",
    *TRANSDUCE_RULES,
    *CLASSIFY_RULES,
}


def test_reference_plugin_passes_every_check() -> None:
    results = check_plugin(Bigram, "bigram")
    failed = {r.check: r.message for r in results if r.status == "failed"}
    assert not failed
    assert {r.check for r in results} == set(CHECKS)
    assert {r.check for r in results if r.status == "skipped"} == NOT_FOR_COUNT_BASED
    assert all(r.seconds >= 0 for r in results)


@pytest.mark.parametrize("plugin_cls", [TinyLSTM, CausalConv], ids=lambda c: c.__name__)
def test_reference_neural_plugins_pass_every_check(plugin_cls: type[TorchSequenceModel]) -> None:
    results = check_plugin(plugin_cls)
    assert {r.check: r.message for r in results if r.status == "failed"} == {}
    skipped = {r.check for r in results if r.status == "skipped"}
    other_tasks = {"fill_blank", *TRANSDUCE_RULES, *CLASSIFY_RULES}
    assert skipped == (other_tasks if plugin_cls.stateful else {*other_tasks, "carried_state"})


@pytest.mark.parametrize(
    ("plugin_cls", "check_name", "fragment"),
    BROKEN,
    ids=[f"{cls.__name__}-{check}" for cls, check, _ in BROKEN],
)
def test_broken_plugin_fails_the_right_check(
    plugin_cls: type, check_name: str, fragment: str
) -> None:
    check = CHECKS[check_name]
    reference = REFERENCE.get(plugin_cls, Bigram)
    assert run_check(check, reference).status == "passed", "the reference must pass"
    result = run_check(check, plugin_cls, plugin_cls.__name__)
    assert result.status == "failed"
    assert result.message.startswith(f"{plugin_cls.__name__}: ")
    assert "; observed: " in result.message
    assert fragment in result.message
    assert "\n" not in result.message
    with pytest.raises(CheckFailure):  # direct calls raise an AssertionError subclass
        check(plugin_cls, plugin_cls.__name__)


@pytest.mark.parametrize(
    ("plugin_cls", "check_name"),
    [(cls, name) for cls, name, _ in BROKEN if name in NEW_RULES],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_new_rule_fails_alone_and_states_its_rule(plugin_cls: type, check_name: str) -> None:
    """Each broken plugin of contract v2 fails its one rule (the neural ones pass every
    older rule), and the message quotes that rule verbatim."""
    results = check_plugin(plugin_cls)
    failed = {r.check: r.message for r in results if r.status == "failed"}
    assert set(failed) == {check_name}
    assert CHECKS[check_name].rule in failed[check_name]


def test_rules_of_contract_v2_are_applicable_only_where_they_mean_something() -> None:
    assert set(NEW_RULES) <= set(CHECKS)
    for name in ("causal", "carried_state", "stateful_training"):
        assert not CHECKS[name].applies_to(Bigram)
        with pytest.raises(kit.CheckSkipped, match=r"count-based|carries no state"):
            CHECKS[name](Bigram)
    assert CHECKS["causal"].applies_to(CausalConv)
    assert not CHECKS["carried_state"].applies_to(CausalConv)
    assert CHECKS["carried_state"].applies_to(TinyLSTM)
    assert CHECKS["refuses_undeclared_task"].applies_to(Bigram)


def test_stateful_training_checks_that_seqlab_refuses_a_stateless_plugin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """For a neural plugin without state the rule is seqlab's: refuse bptt: stateful."""
    check = CHECKS["stateful_training"]
    assert run_check(check, CausalConv).status == "passed"
    import pipeline_core.training as training

    monkeypatch.setattr(training, "check_trainable", lambda *args: None)
    result = run_check(check, CausalConv, "causal-conv")
    assert result.status == "failed"
    assert "trained a plugin without state (stateful = False) statefully" in result.message


def test_message_states_the_rule_of_the_check() -> None:
    """The failure of the learning check quotes its rule verbatim, thresholds included."""
    result = run_check(CHECKS["learns_periodic_sequence"], Uniform, "uniform")
    assert result.status == "failed"
    assert CHECKS["learns_periodic_sequence"].rule in result.message
    assert f"0.5*ln(V) = {0.5 * math.log(5):.3f}" in result.message


def test_check_plugin_runs_every_check_after_failures() -> None:
    results = check_plugin(RequiredField, "required")
    assert len(results) == len(CHECKS)
    statuses = {r.check: r.status for r in results}
    assert statuses["config_defaults"] == "failed"
    assert statuses["construction"] == "failed"  # RequiredField(V) cannot be built
    assert statuses["log_proba_normalised"] == "passed"  # test_params supplies alpha


def test_parametrize_with_checks_ids_and_broken_names() -> None:
    mark = parametrize_with_checks(["lstm", "no-such-plugin", ("bigram", Bigram)])
    argnames, params = mark.args
    assert argnames == ("plugin", "check")
    ids = [p.id for p in params]
    assert f"lstm-{all_checks()[0].name}" in ids
    assert "lstm-save_load_roundtrip" in ids
    assert "lstm-causal" in ids and "lstm-carried_state" in ids
    assert "bigram-learns_periodic_sequence" in ids
    assert "bigram-refuses_undeclared_task" in ids
    assert "no-such-plugin-loads" in ids
    # rules that do not apply (another task; neural or stateful only) are not generated
    assert "lstm-fill_blank" not in ids and "bigram-fill_blank" not in ids
    assert "bigram-causal" not in ids and "bigram-carried_state" not in ids
    lstm_rules = len(CHECKS) - 1 - len(TRANSDUCE_RULES)
    assert len(ids) == lstm_rules + (len(CHECKS) - len(NOT_FOR_COUNT_BASED)) + 1
    assert len(set(ids)) == len(ids)
    broken = next(p for p in params if p.id == "no-such-plugin-loads")
    with pytest.raises(CheckFailure, match="unknown plugin 'no-such-plugin'"):
        broken.values[1](broken.values[0])


@parametrize_with_checks([("bigram", Bigram)])
def test_parametrize_with_checks_on_a_class(plugin: KitCase, check: Any) -> None:
    check(plugin)


# ---- configured plugins: instances, (class, params), KitCase ----------------------------
def test_instances_and_class_params_become_kit_cases() -> None:
    case = as_case(NGramModel(7, {"smoothing": "witten_bell"}))
    assert case == KitCase(NGramModel, {"smoothing": "witten_bell"})
    assert case.label == "ngram[smoothing=witten_bell]"  # the registered name, not the class
    pair = as_case((NGramModel, {"smoothing": "mle", "nltk_compat": True}))
    assert pair.label == "ngram[smoothing=mle,nltk_compat=true]"
    assert as_case(NGramModel(7)).label == "ngram[defaults]"  # all defaults, not test_params
    assert as_case(NGramModel).label == "ngram" and as_case(NGramModel).params is None
    assert as_case(("bi", Bigram)).label == "bi"
    assert as_case(("bi", (Bigram, {"alpha": 0.5}))).label == "bi[alpha=0.5]"
    stateful = KitCase(LSTMModel, {"hidden_size": 8}, train={"bptt": "stateful"})
    assert stateful.label == "lstm[hidden_size=8,train.bptt=stateful]"
    assert hash(stateful) == hash(KitCase(LSTMModel, {"hidden_size": 8}, {"bptt": "stateful"}))
    with pytest.raises(TypeError, match="a plugin for the kit is"):
        as_case(42)
    by_name = check_plugin("lstm")  # a registered name is loaded through its entry point
    assert {r.plugin for r in by_name} == {"lstm"}
    with pytest.raises(ConfigError, match="bptt"):  # a typo in the overrides fails at once
        KitCase(LSTMModel, train={"bptt": "statefull"})


def test_kit_builds_models_from_the_given_params() -> None:
    """The kit's models use the case's params (and its own V = 5), not test_params."""
    rule = kit._Rule("x", "r")
    model = kit.fitted_model(NGramModel(50, {"smoothing": "witten_bell", "order": 2}), rule)
    assert isinstance(model, NGramModel)
    assert model.vocab_size == kit.VOCAB_SIZE
    assert (model.config.smoothing, model.config.order) == ("witten_bell", 2)
    default = kit.fitted_model(NGramModel, rule)
    assert default.init_args()["config"]["order"] == NGramModel.test_params["order"]
    # alpha = 1e6 flattens every row: the same class now fails to learn
    flat = {r.check: r.status for r in check_plugin((Bigram, {"alpha": 1e6}))}
    assert flat["learns_periodic_sequence"] == "failed"
    assert {r.check: r.status for r in check_plugin(Bigram)}["learns_periodic_sequence"] == (
        "passed"
    )
    # the train overrides reach the trainer: 3 epochs instead of the kit's 2
    records = run_check(CHECKS["fit_returns_epoch_records"], KitCase(TinyLSTM, train={"epochs": 3}))
    assert records.status == "passed", records.message


def test_parametrize_with_checks_ids_of_configured_plugins() -> None:
    mark = parametrize_with_checks(
        [
            NGramModel(5, {"smoothing": "witten_bell"}),
            (NGramModel, {"smoothing": "mle"}),
            LSTMModel,
            KitCase(LSTMModel, train={"bptt": "stateful"}),
        ]
    )
    params = mark.args[1]
    ids = [p.id for p in params]
    assert "ngram[smoothing=witten_bell]-log_proba_normalised" in ids
    assert "ngram[smoothing=mle]-log_proba_normalised" in ids
    assert "lstm-carried_state" in ids
    assert "lstm[train.bptt=stateful]-stateful_training" in ids
    assert len(set(ids)) == len(ids)
    first = next(p for p in params if p.id == "ngram[smoothing=witten_bell]-log_proba_normalised")
    assert first.values[0] == KitCase(NGramModel, {"smoothing": "witten_bell"})
    with pytest.raises(ValueError, match="two plugins are labelled 'ngram\\[smoothing=mle\\]'"):
        parametrize_with_checks(
            [(NGramModel, {"smoothing": "mle"}), NGramModel(3, {"smoothing": "mle"})]
        )


def test_fitted_model_cache_is_per_case() -> None:
    rule = kit._Rule("x", "r")
    assert kit.fitted_model(Bigram, rule) is kit.fitted_model(Bigram, rule)
    assert kit.fitted_model(Uniform, rule) is not kit.fitted_model(Bigram, rule)
    other = kit.fitted_model((Bigram, {"alpha": 0.5}), rule)
    assert other is not kit.fitted_model(Bigram, rule)
    assert other is kit.fitted_model(Bigram(9, {"alpha": 0.5}), rule)


# ---- expected failures ------------------------------------------------------------------
#: exactly the checks Unnormalised fails (each validates whole rows)
#: the row checks that apply to a next-token plugin (fill_blank's is for fill-blank ones)
UNNORMALISED_FAILS = (
    *(c for c in ROW_CHECKS if c != "fill_blank"),
    "learns_periodic_sequence",
)


def test_expected_failed_checks_give_xfail_and_xpass_in_check_plugin() -> None:
    declared = dict.fromkeys(UNNORMALISED_FAILS, "rows are raw counts")
    results = {r.check: r for r in check_plugin(Unnormalised, expected_failed_checks=declared)}
    for name in UNNORMALISED_FAILS:
        assert results[name].status == "xfail"
        assert results[name].passed and results[name].reason == "rows are raw counts"
        assert "sums to" in results[name].message  # what failed is still reported
    assert all(r.passed for r in results.values())
    # declared, but the plugin passes: xpass, a failure (the declaration is stale)
    stale = {r.check: r for r in check_plugin(Bigram, expected_failed_checks=declared)}
    xpass = stale["log_proba_normalised"]
    assert xpass.status == "xpass" and not xpass.passed
    assert "was expected to fail (rows are raw counts) but passed" in xpass.message
    # a callable decides per plugin; a declared check that does not apply stays skipped
    by_case = check_plugin(
        (Unnormalised, {"alpha": 0.2}),
        expected_failed_checks=lambda case: (
            {"causal": "n/a", "log_proba_normalised": "raw"}
            if case.params == {"alpha": 0.2}
            else {}
        ),
    )
    statuses = {r.check: r.status for r in by_case}
    assert statuses["log_proba_normalised"] == "xfail" and statuses["causal"] == "skipped"
    assert statuses["batch_of_one"] == "failed"
    with pytest.raises(ValueError, match="unknown check\\(s\\): no_such_check"):
        check_plugin(Bigram, expected_failed_checks={"no_such_check": "typo"})


def test_expected_failed_checks_mark_strict_xfail() -> None:
    mark = parametrize_with_checks(
        [("unnormalised", Unnormalised)],
        expected_failed_checks={"log_proba_normalised": "rows are raw counts"},
    )
    params = {p.id: p for p in mark.args[1]}
    (xfail,) = params["unnormalised-log_proba_normalised"].marks
    assert xfail.name == "xfail"
    assert xfail.kwargs["strict"] is True and xfail.kwargs["reason"] == "rows are raw counts"
    assert not params["unnormalised-construction"].marks


@parametrize_with_checks(
    [("unnormalised", Unnormalised)],
    expected_failed_checks=dict.fromkeys(UNNORMALISED_FAILS, "rows are raw counts"),
)
def test_declared_failures_are_xfail_in_pytest(plugin: KitCase, check: Any) -> None:
    check(plugin)


def test_xpass_fails_the_pytest_run(pytester: pytest.Pytester) -> None:
    """A check declared to fail that passes makes the run fail (strict xfail)."""
    pytester.makepyfile(
        """
        from pipeline_core.testing import parametrize_with_checks
        from tests.test_conformance import Bigram, Unnormalised

        DECLARED = {"log_proba_normalised": "rows are raw counts"}

        @parametrize_with_checks(
            [("good", Bigram), ("bad", Unnormalised)], expected_failed_checks=DECLARED
        )
        def test_kit(plugin, check):
            check(plugin)
        """
    )
    result = pytester.runpytest("-k", "log_proba_normalised", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*XPASS(strict)*rows are raw counts*"])


def test_check_plugin_cli_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    from seqlab.cli import app

    runner = CliRunner()
    plugins = {"good": Bigram, "bad": Unnormalised}
    monkeypatch.setattr(registry, "load_plugin", plugins.__getitem__)
    ok = runner.invoke(app, ["check-plugin", "good"])
    assert ok.exit_code == 0, ok.output
    n_na = len(NOT_FOR_COUNT_BASED)
    assert f"no check failed: {len(CHECKS) - n_na} passed, {n_na} not applicable" in ok.output
    bad = runner.invoke(app, ["check-plugin", "bad"])
    assert bad.exit_code == 1
    assert "FAIL" in bad.output and "log_proba_normalised" in bad.output


def test_check_plugin_cli_exits_1_only_on_real_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """xfail rows do not fail the command; an xpass does."""
    import pipeline_core.testing as testing
    from seqlab.cli import app

    declared = dict.fromkeys(UNNORMALISED_FAILS, "raw counts")
    real = testing.check_plugin
    monkeypatch.setattr(registry, "load_plugin", {"bad": Unnormalised, "good": Bigram}.__getitem__)
    monkeypatch.setattr(
        testing,
        "check_plugin",
        lambda cls, name: real(cls, name, expected_failed_checks=declared),
    )
    runner = CliRunner()
    xfailed = runner.invoke(app, ["check-plugin", "bad"])
    assert xfailed.exit_code == 0, xfailed.output
    assert "xfail" in xfailed.output and "5 expected to fail" in xfailed.output
    xpassed = runner.invoke(app, ["check-plugin", "good"])
    assert xpassed.exit_code == 1
    assert "XPASS" in xpassed.output


def test_authoring_guide_count_based_example_passes_the_kit() -> None:
    """The guide's copy-paste example must stay correct: run the kit on it."""
    import re
    from pathlib import Path

    guide = Path(__file__).resolve().parents[1] / "docs" / "plugin-authoring.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(encoding="utf-8"), re.S)
    source = next(b for b in blocks if "class Bigram(SequenceModel)" in b)
    namespace: dict[str, Any] = {"__name__": "guide_example"}
    exec(compile(source, str(guide), "exec"), namespace)
    results = check_plugin(namespace["Bigram"], "guide-bigram")
    assert [r.message for r in results if r.status == "failed"] == []


def test_kit_does_not_import_pytest() -> None:
    """Plugin authors may run the kit outside pytest (``seqlab check-plugin``)."""
    import subprocess
    import sys

    code = (
        "import sys, pipeline_core.testing as t; t.all_checks(); "
        "assert 'pytest' not in sys.modules, 'the kit imported pytest'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
