"""Every built-in plugin passes every check; and the kit catches what it claims to.

The first test is what a plugin author writes (``parametrize_with_checks``), run over
each plugin that seqlab's own distribution registers. The rest test the kit itself: a
small, correct count-based model defined here passes every check, and each deliberately
broken variant of it fails the check for the rule it breaks, with a message stating it.
"""

from __future__ import annotations

import math
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
    TaskKind,
    TorchSequenceModel,
    as_context_array,
)
from pipeline_core.errors import DataError
from pipeline_core.testing import (
    CheckFailure,
    all_checks,
    check_plugin,
    parametrize_with_checks,
    run_check,
)
from pipeline_core.testing import checks as kit

BUILTINS = sorted(i.name for i in registry.discover() if i.distribution == "seqlab")


@parametrize_with_checks(BUILTINS)
def test_builtin_plugin_conforms(plugin: type, check: Any) -> None:
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
]
CHECKS = {c.name: c for c in all_checks()}


def test_check_names_are_unique_and_state_their_rule() -> None:
    checks = all_checks()
    assert len(CHECKS) == len(checks) >= 20
    for check in checks:
        assert check.fn.__name__ == f"check_{check.name}"
        assert len(check.rule) > 20, check.name


def test_reference_plugin_passes_every_check() -> None:
    results = check_plugin(Bigram, "bigram")
    failed = {r.check: r.message for r in results if r.status == "failed"}
    assert not failed
    assert {r.check for r in results} == set(CHECKS)
    assert {r.check for r in results if r.status == "skipped"} == {"fill_blank"}
    assert all(r.seconds >= 0 for r in results)


@pytest.mark.parametrize(
    ("plugin_cls", "check_name", "fragment"),
    BROKEN,
    ids=[f"{cls.__name__}-{check}" for cls, check, _ in BROKEN],
)
def test_broken_plugin_fails_the_right_check(
    plugin_cls: type, check_name: str, fragment: str
) -> None:
    check = CHECKS[check_name]
    assert run_check(check, Bigram, "bigram").status == "passed", "the reference must pass"
    result = run_check(check, plugin_cls, plugin_cls.__name__)
    assert result.status == "failed"
    assert result.message.startswith(f"{plugin_cls.__name__}: ")
    assert "; observed: " in result.message
    assert fragment in result.message
    with pytest.raises(CheckFailure):  # direct calls raise an AssertionError subclass
        check(plugin_cls, plugin_cls.__name__)


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
    assert "bigram-learns_periodic_sequence" in ids
    assert "no-such-plugin-loads" in ids
    # rules for tasks a plugin does not declare (fill-blank here) are not generated
    assert "lstm-fill_blank" not in ids and "bigram-fill_blank" not in ids
    assert len(ids) == 2 * (len(CHECKS) - 1) + 1
    broken = next(p for p in params if p.id == "no-such-plugin-loads")
    with pytest.raises(CheckFailure, match="unknown plugin 'no-such-plugin'"):
        broken.values[1](broken.values[0])


@parametrize_with_checks([("bigram", Bigram)])
def test_parametrize_with_checks_on_a_class(plugin: type, check: Any) -> None:
    check(plugin)


def test_check_plugin_cli_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    from seqlab.cli import app

    runner = CliRunner()
    plugins = {"good": Bigram, "bad": Unnormalised}
    monkeypatch.setattr(registry, "load_plugin", plugins.__getitem__)
    ok = runner.invoke(app, ["check-plugin", "good"])
    assert ok.exit_code == 0, ok.output
    assert f"no check failed: {len(CHECKS) - 1} passed, 1 not applicable" in ok.output
    bad = runner.invoke(app, ["check-plugin", "bad"])
    assert bad.exit_code == 1
    assert "FAIL" in bad.output and "log_proba_normalised" in bad.output


def test_fitted_model_cache_is_per_class() -> None:
    rule = kit._Rule("x", "r")
    assert kit.fitted_model(Bigram, rule) is kit.fitted_model(Bigram, rule)
    assert kit.fitted_model(Uniform, rule) is not kit.fitted_model(Bigram, rule)


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
