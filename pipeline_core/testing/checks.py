"""The conformance checks: one named function per rule of the plugin contract.

Each ``check_<rule>(plugin, name)`` returns None when the plugin obeys the rule and raises
:class:`CheckFailure` (an ``AssertionError``) whose message states the rule and what was
observed, so a plugin author knows what to fix without reading this file. Anything else
the plugin raises inside a check is turned into such a failure too; a rule that does not
apply to the plugin raises :class:`CheckSkipped`.

``plugin`` is a :class:`KitCase` (a plugin class, the config params and the trainer
overrides the kit uses) or anything :func:`as_case` turns into one: a class (its
``test_params``), a configured instance, or a ``(class, params)`` pair.

The checks run on tiny data (a periodic sequence over a vocabulary of 5) with the case's
params and a small :data:`TrainConfig`, so the whole kit takes seconds per plugin. One
fitted model per case is cached and shared by the checks that only read it; checks that
fit (determinism, epoch records, stateful training) fit their own.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pipeline_core.config import TrainConfig, validate_model
from pipeline_core.contract import (
    TASK_KINDS,
    EpochRecord,
    FitData,
    NotFittedError,
    PluginConfig,
    SequenceModel,
    TorchSequenceModel,
)
from pipeline_core.errors import ConfigError, DataError, PluginError, SeqlabError
from pipeline_core.tasks import get_task, known_tasks
from pipeline_core.training import Callback, fit_model

# ---- the kit's tiny world ---------------------------------------------------------------
VOCAB_SIZE = 5
CONTEXT_LEN = 8
SEED = 1234
PATTERN = (1, 2, 3)  # "abcabc...": id 0 (<unk>) and id 4 never occur, yet must stay possible
NORM_TOL = 1e-6
BATCH_TOL = 1e-5  # batching may reorder float32 sums inside a network
VOCAB = tuple(["<unk>", "a", "b", "c", "d"])


def periodic(n: int, offset: int = 0) -> np.ndarray:
    """``n`` ids of the repeating PATTERN, starting ``offset`` steps into it."""
    return np.array([PATTERN[(offset + i) % len(PATTERN)] for i in range(n)], dtype=np.int64)


TRAIN_IDS = periodic(240)
VAL_IDS = periodic(60, offset=240)
TEST_IDS = periodic(60, offset=300)


#: Streams the kit cuts its 240 training tokens into under ``bptt: stateful`` (2 streams
#: of 119 tokens: 15 batches of CONTEXT_LEN per epoch, as many steps as windows give).
STATEFUL_BATCH_SIZE = 2


def kit_train_config(
    epochs: int = 4, seed: int = SEED, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Few, quick epochs on one thread; enough for a working model to learn PATTERN.

    ``overrides`` (a :class:`KitCase`'s ``train``) replace these settings; under
    ``bptt: stateful`` the batch size defaults to :data:`STATEFUL_BATCH_SIZE` streams."""
    values: dict[str, Any] = {
        "epochs": epochs,
        "batch_size": 16,
        "lr": 1e-2,
        "seed": seed,
        "progress": False,
        "num_threads": 1,
    }
    extra = dict(overrides or {})
    if extra.get("bptt") == "stateful" and "batch_size" not in extra:
        values["batch_size"] = STATEFUL_BATCH_SIZE
    return validate_model(TrainConfig, {**values, **extra}, where="train")


def kit_fit_data(val: bool = True) -> FitData:
    return FitData(
        train=TRAIN_IDS,
        val=VAL_IDS if val else None,
        vocab_size=VOCAB_SIZE,
        context_len=CONTEXT_LEN,
    )


def probe_contexts(batch: int, length: int, seed: int = 0) -> np.ndarray:
    """Random contexts over the whole vocabulary, <unk> (id 0) and unseen ids included."""
    rng = np.random.default_rng(seed)
    ctx = rng.integers(0, VOCAB_SIZE, size=(batch, length), dtype=np.int64)
    ctx[0, -1] = 0
    return ctx


class _Recorder(Callback):
    """Collects the records the trainer hands to callbacks."""

    def __init__(self, seen: list[EpochRecord]) -> None:
        self.seen = seen

    def on_epoch_end(self, trainer: Any, record: EpochRecord) -> None:
        self.seen.append(record)


# ---- failures ---------------------------------------------------------------------------
class CheckFailure(AssertionError):
    """A plugin broke a rule; the message states the rule and what was observed."""

    def __init__(self, name: str, rule: str, observed: str) -> None:
        self.plugin = name
        self.rule = rule
        self.observed = observed
        super().__init__(f"{name}: {rule}; observed: {observed}")


class CheckSkipped(Exception):
    """The rule does not apply to this plugin (e.g. a fill-blank rule for a next-token one)."""


# ---- what the kit checks: a plugin class under one configuration --------------------------
_NAMES: dict[type[Any], str] = {}


def registered_name(plugin_cls: type[Any]) -> str:
    """The entry-point name ``plugin_cls`` is registered under, else its class name."""
    from pipeline_core.registry import discover

    if plugin_cls not in _NAMES:
        value = f"{plugin_cls.__module__}:{plugin_cls.__qualname__}"
        names = [info.name for info in discover() if info.value == value and info.ok]
        _NAMES[plugin_cls] = names[0] if names else str(plugin_cls.__name__)
    return _NAMES[plugin_cls]


def _fmt(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


@dataclass(frozen=True)
class KitCase:
    """One plugin configuration for the kit, like a configured estimator for scikit-learn's.

    * ``plugin``: the plugin class;
    * ``params``: the config the kit builds its fresh models with (``None``: the class's
      ``test_params``); the kit always uses its own ``vocab_size`` of 5;
    * ``train``: :class:`TrainConfig` fields that replace the kit's in every fit of a
      neural plugin (e.g. ``{"bptt": "stateful"}``; count-based plugins never see them);
    * ``name``: the label (default: the registered entry-point name, else the class name).

    Its :attr:`label` names the test ids: ``ngram[smoothing=witten_bell]``,
    ``lstm[train.bptt=stateful]``, ``ngram[defaults]`` for explicit empty params.
    """

    plugin: type[Any]
    params: Mapping[str, Any] | None = None
    train: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.plugin, type):
            raise TypeError(f"KitCase.plugin must be a plugin class, got {self.plugin!r}")
        if self.params is not None:
            object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "train", dict(self.train))
        kit_train_config(overrides=self.train)  # a typo in train is the author's: fail now

    @classmethod
    def from_model(cls, model: SequenceModel, name: str | None = None) -> KitCase:
        """The case of a configured instance: its class and the config fields it sets
        away from their defaults (its vocab_size is ignored)."""
        params = model.config.model_dump(mode="json", exclude_defaults=True)
        return cls(type(model), params, name=name)

    @property
    def model_params(self) -> Mapping[str, Any]:
        """The config the kit builds models with."""
        if self.params is not None:
            return self.params
        return dict(getattr(self.plugin, "test_params", {}) or {})

    @property
    def config(self) -> PluginConfig:
        """``model_params`` validated by the plugin (raises ConfigError if invalid)."""
        config: PluginConfig = self.plugin.make_config(self.model_params)
        return config

    @property
    def label(self) -> str:
        base = self.name or registered_name(self.plugin)
        parts = [f"{k}={_fmt(v)}" for k, v in (self.params or {}).items()]
        parts += [f"train.{k}={_fmt(v)}" for k, v in self.train.items()]
        if self.params is not None and not self.params:
            parts.insert(0, "defaults")
        return f"{base}[{','.join(parts)}]" if parts else base

    @property
    def key(self) -> tuple[Any, ...]:
        """What identifies the case for the fitted-model cache."""
        params = (
            None if self.params is None else json.dumps(self.params, sort_keys=True, default=repr)
        )
        return (self.plugin, params, json.dumps(self.train, sort_keys=True, default=repr))

    def __hash__(self) -> int:
        return hash(self.key)

    def train_config(self, epochs: int = 4, seed: int = SEED, **forced: Any) -> TrainConfig:
        """The kit's TrainConfig with this case's overrides (``forced`` wins over both)."""
        return kit_train_config(epochs, seed, {**self.train, **forced})


#: What the kit accepts as a plugin: a KitCase, a class, a configured instance, a
#: ``(class, params)`` pair, or a ``(name, class | instance | KitCase)`` pair.
PluginSpec = KitCase | type | SequenceModel | tuple[Any, Any]


def as_case(plugin: Any) -> KitCase:
    """Turn any :data:`PluginSpec` into a :class:`KitCase` (TypeError for anything else)."""
    if isinstance(plugin, KitCase):
        return plugin
    if isinstance(plugin, type):
        return KitCase(plugin)
    if isinstance(plugin, SequenceModel):
        return KitCase.from_model(plugin)
    if isinstance(plugin, tuple) and len(plugin) == 2:
        first, second = plugin
        if isinstance(first, str):
            case = as_case(second)
            return KitCase(case.plugin, case.params, case.train, first)
        if isinstance(first, type) and isinstance(second, Mapping):
            return KitCase(first, dict(second))
    raise TypeError(
        "a plugin for the kit is a class, a configured instance, a (class, params) pair, "
        f"a (name, class) pair or a KitCase; got {plugin!r}"
    )


Requirement = Literal["neural", "stateful"]
_REQUIREMENTS: dict[str, tuple[Callable[[type[Any]], bool], str]] = {
    "neural": (
        lambda cls: issubclass(cls, TorchSequenceModel),
        "the rule concerns neural plugins (TorchSequenceModel); this one is count-based",
    ),
    "stateful": (
        lambda cls: issubclass(cls, TorchSequenceModel) and bool(cls.stateful),
        "the rule concerns stateful plugins (stateful = True); this one carries no state",
    ),
}


def not_applicable(plugin: Any, task_kind: str | None, requires: Requirement | None) -> str | None:
    """Why a rule with this task kind and requirement does not apply (None: it does)."""
    cls = as_case(plugin).plugin
    if task_kind is not None and task_kind not in getattr(cls, "task_kinds", ()):
        return f"the plugin does not declare the {task_kind} task"
    if requires is not None:
        holds, reason = _REQUIREMENTS[requires]
        if not holds(cls):
            return reason
    return None


CheckFn = Callable[[Any, str | None], None]


@dataclass(frozen=True)
class Check:
    """One named rule and the function that checks it."""

    name: str
    rule: str
    fn: CheckFn
    task_kind: str | None = None  # the rule applies only to plugins declaring this task
    requires: Requirement | None = None  # ... and only to neural / stateful plugins

    def __call__(self, plugin: Any, name: str | None = None) -> None:
        """Check ``plugin`` (any :data:`PluginSpec`); raise CheckFailure or CheckSkipped."""
        self.fn(plugin, name)

    def not_applicable(self, plugin: Any) -> str | None:
        """Why the rule does not apply to ``plugin`` (None when it does)."""
        return not_applicable(plugin, self.task_kind, self.requires)

    def applies_to(self, plugin: Any) -> bool:
        return self.not_applicable(plugin) is None


class _Rule:
    """Raise-helper bound to one plugin and one rule, so every message states the rule."""

    def __init__(self, name: str, rule: str) -> None:
        self.name = name
        self.rule = rule

    def fail(self, observed: str, rule: str | None = None) -> CheckFailure:
        return CheckFailure(self.name, rule or self.rule, observed)

    def ensure(self, ok: bool, observed: str, rule: str | None = None) -> None:
        if not ok:
            raise self.fail(observed, rule)


def _instead(err: BaseException, expected: str) -> str:
    """``raised IndexError instead of DataError: <message>``."""
    return f"raised {type(err).__name__} instead of {expected}: {_describe(err, named=False)}"


def _describe(err: BaseException, named: bool = True) -> str:
    text = " ".join(str(err).split())
    if len(text) > 300:
        text = text[:297] + "..."
    if not named:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def rule(
    text: str, task_kind: str | None = None, requires: Requirement | None = None
) -> Callable[[Callable[[KitCase, _Rule], None]], CheckFn]:
    """Make ``fn(case, r)`` a check whose stray exceptions become rule failures; with
    ``task_kind`` / ``requires``, the rule concerns only plugins that declare that task /
    that are neural or stateful (for the others the check raises CheckSkipped)."""

    def wrap(fn: Callable[[KitCase, _Rule], None]) -> CheckFn:
        @functools.wraps(fn)
        def check(plugin: Any, name: str | None = None) -> None:
            case = as_case(plugin)
            r = _Rule(name or case.label, text)
            reason = not_applicable(case, task_kind, requires)
            if reason is not None:
                raise CheckSkipped(reason)
            try:
                fn(case, r)
            except (CheckFailure, CheckSkipped):
                raise
            except Exception as err:  # the plugin's own bug: report it against the rule
                raise r.fail(f"raised {_describe(err)}") from err

        check.rule = text  # type: ignore[attr-defined]
        check.task_kind = task_kind  # type: ignore[attr-defined]
        check.requires = requires  # type: ignore[attr-defined]
        return check

    return wrap


# ---- shared helpers ---------------------------------------------------------------------
def _is_neural(plugin_cls: type[Any]) -> bool:
    return issubclass(plugin_cls, TorchSequenceModel)


def _new(case: KitCase, seed: int = SEED) -> SequenceModel:
    model: SequenceModel = case.plugin.create(VOCAB_SIZE, case.model_params, seed=seed)
    return model


_FITTED: dict[tuple[Any, ...], SequenceModel] = {}
_CACHE_SIZE = 32


def fitted_model(plugin: Any, r: _Rule) -> SequenceModel:
    """The case fitted on the kit's data (cached per case; callers must not mutate it)."""
    case = as_case(plugin)
    model = _FITTED.get(case.key)
    if model is None:
        model = _new(case)
        try:
            fit_model(model, kit_fit_data(), case.train_config())
        except Exception as err:
            raise r.fail(f"fit on the kit's periodic data failed first: {_describe(err)}") from err
        if len(_FITTED) >= _CACHE_SIZE:
            _FITTED.pop(next(iter(_FITTED)))
        _FITTED[case.key] = model
    return model


def clear_cache() -> None:
    """Forget fitted models (e.g. after editing a plugin class in a notebook)."""
    _FITTED.clear()


def _log_proba(model: SequenceModel, contexts: np.ndarray, r: _Rule, what: str) -> np.ndarray:
    try:
        return model.log_proba(contexts)
    except Exception as err:
        raise r.fail(f"log_proba on {what} raised {_describe(err)}") from err


def _valid_rows(lp: Any, batch: int, r: _Rule, what: str, values: bool = True) -> np.ndarray:
    """Shape (B, V), float64 and (``values``) finite, <= 0, rows of exp summing to 1."""
    r.ensure(
        isinstance(lp, np.ndarray),
        f"log_proba on {what} returned {type(lp).__name__}, not a numpy array",
        "log_proba returns a numpy array",
    )
    r.ensure(
        lp.shape == (batch, VOCAB_SIZE),
        f"log_proba on {what} returned shape {lp.shape}, expected ({batch}, {VOCAB_SIZE})",
        "log_proba returns shape (batch, vocab_size): one row per context, one column per id",
    )
    r.ensure(
        lp.dtype == np.float64,
        f"log_proba on {what} returned dtype {lp.dtype}",
        "log_proba returns float64",
    )
    if not values:
        return lp
    bad = ~np.isfinite(lp)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise r.fail(
            f"{int(bad.sum())} non-finite value(s) on {what}, first {lp[row, col]} "
            f"at row {row}, token id {col}",
            "every log-probability is finite (smoothed: no token, <unk> included, has p = 0)",
        )
    sums = np.exp(lp).sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    r.ensure(
        abs(sums[worst] - 1.0) <= NORM_TOL,
        f"row {worst} of {what} sums to {sums[worst]:.9f}",
        f"each row of exp(log_proba) sums to 1 within {NORM_TOL:g}",
    )
    r.ensure(
        bool((lp <= 1e-9).all()),
        f"largest value {lp.max():.3g} on {what}",
        "log-probabilities are <= 0",
    )
    return lp


def _max_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference; equal entries (infinities included) count as 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    same = a == b
    with np.errstate(invalid="ignore"):
        gap = np.where(same, 0.0, np.abs(a - b))
    gap = np.where(np.isnan(gap), np.inf, gap)
    return float(gap.max()) if gap.size else 0.0


def _states_equal(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """None when equal, else the first difference in words."""
    if set(a) != set(b):
        return f"different keys: {sorted(set(a) ^ set(b))[:5]}"
    for key in sorted(a):
        x, y = a[key], b[key]
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            return f"'{key}' is a {type(x).__name__}, not a torch.Tensor"
        if x.shape != y.shape or x.dtype != y.dtype or not torch.equal(x, y):
            return f"tensor '{key}' differs"
    return None


@contextmanager
def one_thread() -> Iterator[None]:
    """Run a check on one torch thread: fast on shared cores and bitwise reproducible."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- the rules --------------------------------------------------------------------------
@rule("a plugin is a concrete SequenceModel subclass with a PluginConfig config_class")
def check_class_contract(case: KitCase, r: _Rule) -> None:
    plugin_cls = case.plugin
    from pipeline_core.registry import PluginInfo, check_plugin_class

    info = PluginInfo(r.name, getattr(plugin_cls, "__qualname__", "?"), "<kit>", "?")
    try:
        check_plugin_class(plugin_cls, info)
    except PluginError as err:
        raise r.fail(str(err)) from err


@rule("config_class() builds with every field defaulted, and the config round-trips as JSON")
def check_config_defaults(case: KitCase, r: _Rule) -> None:
    plugin_cls = case.plugin
    cfg_cls = plugin_cls.config_class
    r.ensure(
        isinstance(cfg_cls, type) and issubclass(cfg_cls, PluginConfig),
        f"config_class is {cfg_cls!r}",
        "config_class subclasses PluginConfig",
    )
    required = [k for k, f in cfg_cls.model_fields.items() if f.is_required()]
    r.ensure(not required, f"field(s) without a default: {', '.join(required)}")
    default = cfg_cls()
    r.ensure(
        plugin_cls.make_config(None) == default,
        f"make_config(None) gave {plugin_cls.make_config(None)!r}, config_class() {default!r}",
        "make_config(None) equals config_class()",
    )
    dumped = default.model_dump(mode="json")
    json.dumps(dumped)
    again = plugin_cls.make_config(dumped)
    r.ensure(
        again == default,
        f"{default!r} became {again!r} after model_dump(mode='json')",
        "a config rebuilt from its JSON dump is equal (checkpoints store it so)",
    )


@rule("test_params is a dict of config fields that validates, for a fast but real fit")
def check_test_params(case: KitCase, r: _Rule) -> None:
    plugin_cls = case.plugin
    params = plugin_cls.test_params
    r.ensure(isinstance(params, dict), f"test_params is a {type(params).__name__}")
    unknown = sorted(set(params) - set(plugin_cls.config_class.model_fields))
    r.ensure(not unknown, f"test_params names unknown field(s): {', '.join(unknown)}")
    try:
        plugin_cls.make_config(params)
    except ConfigError as err:
        raise r.fail(f"make_config(test_params) raised {_describe(err)}") from err


@rule("an unknown config key raises ConfigError naming the key")
def check_config_rejects_unknown_key(case: KitCase, r: _Rule) -> None:
    plugin_cls = case.plugin
    key = "no_such_option_xyz"
    for where, call in (
        ("make_config", lambda: plugin_cls.make_config({key: 1})),
        ("the constructor", lambda: plugin_cls(VOCAB_SIZE, {key: 1})),
    ):
        try:
            call()
        except ConfigError as err:
            r.ensure(key in str(err), f"{where} raised ConfigError without the key: {err}")
        except Exception as err:
            raise r.fail(f"{where} {_instead(err, 'ConfigError')}") from err
        else:
            raise r.fail(f"{where} accepted {{'{key}': 1}}")


_BAD_VALUES: tuple[Any, ...] = ("¬not-a-valid-value¬", [["nested"]], {"x": 1}, -(10**9), 1.5)


def _invalid_value(cfg_cls: type[PluginConfig], field: str) -> Any:
    """A value the field's own type rejects, or a sentinel when it accepts them all."""
    for value in _BAD_VALUES:
        try:
            cfg_cls.model_validate({field: value})
        except Exception:
            return value
    return _NO_BAD_VALUE


_NO_BAD_VALUE = object()


@rule("an invalid config value raises ConfigError naming the field")
def check_config_rejects_invalid_value(case: KitCase, r: _Rule) -> None:
    plugin_cls = case.plugin
    cfg_cls = plugin_cls.config_class
    tested = 0
    for field in cfg_cls.model_fields:
        bad = _invalid_value(cfg_cls, field)
        if bad is _NO_BAD_VALUE:
            continue
        tested += 1
        for where, call in (
            ("make_config", lambda f=field, b=bad: plugin_cls.make_config({f: b})),
            ("the constructor", lambda f=field, b=bad: plugin_cls(VOCAB_SIZE, {f: b})),
        ):
            try:
                call()
            except ConfigError as err:
                r.ensure(
                    field in str(err),
                    f"{where} with {field}={bad!r} raised ConfigError not naming it: {err}",
                )
            except Exception as err:
                raise r.fail(
                    f"{where} with {field}={bad!r} {_instead(err, 'ConfigError')}"
                ) from err
            else:
                raise r.fail(f"{where} accepted {field}={bad!r}")
    if not tested and cfg_cls.model_fields:
        raise CheckSkipped("no config field rejects any of the kit's invalid values")


@rule("vocab_size must be a positive integer: anything else raises ConfigError naming it")
def check_vocab_size_validated(case: KitCase, r: _Rule) -> None:
    plugin_cls = case.plugin
    for bad in (0, -3, 2.5, True, "5"):
        try:
            plugin_cls(bad, case.model_params)
        except ConfigError as err:
            r.ensure("vocab_size" in str(err), f"vocab_size={bad!r}: ConfigError says {err}")
        except Exception as err:
            raise r.fail(f"vocab_size={bad!r} {_instead(err, 'ConfigError')}") from err
        else:
            raise r.fail(f"vocab_size={bad!r} was accepted")


@rule(f"task_kinds is a non-empty set drawn from {', '.join(TASK_KINDS)}")
def check_task_kinds(case: KitCase, r: _Rule) -> None:
    plugin_cls = case.plugin
    kinds = plugin_cls.task_kinds
    r.ensure(isinstance(kinds, set | frozenset), f"task_kinds is a {type(kinds).__name__}")
    r.ensure(bool(kinds), "task_kinds is empty")
    unknown = sorted(set(kinds) - set(TASK_KINDS))
    r.ensure(not unknown, f"unknown task kind(s): {', '.join(map(str, unknown))}")
    if "fill-blank" in kinds:
        r.ensure(
            plugin_cls.fill_blank_log_proba is not SequenceModel.fill_blank_log_proba,
            "task_kinds has fill-blank but fill_blank_log_proba is the base's",
            "a fill-blank plugin overrides fill_blank_log_proba",
        )
    if "classify" in kinds:
        r.ensure(
            getattr(plugin_cls, "summary", None) is not TorchSequenceModel.summary,
            "task_kinds has classify but summary is the base's",
            "a classify plugin is a TorchSequenceModel that overrides summary",
        )
    if "regress" in kinds:
        for method in ("summary_values", "attach_value_input"):
            r.ensure(
                getattr(plugin_cls, method, None) is not getattr(TorchSequenceModel, method),
                f"task_kinds has regress but {method} is the base's",
                "a regress plugin is a TorchSequenceModel that overrides summary_values and "
                "attach_value_input",
            )
    if "transduce" in kinds:
        for method in ("transduce", "target_log_proba"):
            r.ensure(
                getattr(plugin_cls, method) is not getattr(SequenceModel, method),
                f"task_kinds has transduce but {method} is the base's",
                "a transduce plugin overrides transduce and target_log_proba",
            )


@rule("construction takes only (vocab_size, config=None) and init_args() rebuilds the model")
def check_construction(case: KitCase, r: _Rule) -> None:
    plugin_cls = case.plugin
    params = list(inspect.signature(plugin_cls).parameters.values())
    names = [p.name for p in params]
    r.ensure(names == ["vocab_size", "config"], f"the constructor's parameters are {names}")
    r.ensure(params[1].default is None, f"config defaults to {params[1].default!r}, not None")
    model = plugin_cls(VOCAB_SIZE)
    r.ensure(model.vocab_size == VOCAB_SIZE, f"vocab_size became {model.vocab_size!r}")
    model = plugin_cls(VOCAB_SIZE, case.model_params)
    args = model.init_args()
    r.ensure(
        isinstance(args, dict) and set(args) == {"vocab_size", "config"},
        f"init_args() returned {args!r}",
        "init_args() returns exactly {'vocab_size', 'config'}",
    )
    json.dumps(args)  # checkpoints load with weights_only=True: plain types only
    rebuilt = plugin_cls(**args)
    r.ensure(
        rebuilt.config == model.config and rebuilt.vocab_size == model.vocab_size,
        f"{plugin_cls.__name__}(**init_args()) has config {rebuilt.config!r}",
        "a model rebuilt from init_args() has the same config",
    )


@rule(
    "construction holds no data-dependent state: not fitted, and two create(V, params, "
    "seed=s) give identical get_state() (count-based: empty, or NotFittedError)"
)
def check_no_state_before_fit(case: KitCase, r: _Rule) -> None:
    plugin_cls = case.plugin
    a, b = _new(case, seed=7), _new(case, seed=7)
    r.ensure(a.is_fitted is False, f"is_fitted is {a.is_fitted!r} right after construction")
    try:
        state_a = a.get_state()
    except NotFittedError:
        # a count-based plugin has nothing to save yet; refusing is better than {} (which
        # set_state would then mark as fitted). Neural weights are a model from the start.
        r.ensure(
            not _is_neural(plugin_cls),
            "get_state() raised NotFittedError before fit",
            "a neural plugin's get_state() returns its initial weights before fit",
        )
        return
    state_b = b.get_state()
    r.ensure(isinstance(state_a, dict), f"get_state() returned {type(state_a).__name__}")
    diff = _states_equal(state_a, state_b)
    r.ensure(diff is None, f"two instances built under seed 7: {diff}")


@rule(
    "before fit, log_proba raises NotFittedError (count-based plugins) or returns valid "
    "(B, V) log-probabilities (neural plugins, whose untrained weights are a model)"
)
def check_unfitted_log_proba(case: KitCase, r: _Rule) -> None:
    plugin_cls = case.plugin
    model = _new(case)
    contexts = probe_contexts(2, CONTEXT_LEN)
    if _is_neural(plugin_cls):
        _valid_rows(_log_proba(model, contexts, r, "an unfitted model"), 2, r, "an unfitted model")
        return
    try:
        model.log_proba(contexts)
    except NotFittedError:
        return
    except Exception as err:
        raise r.fail(_instead(err, "NotFittedError")) from err
    raise r.fail("an unfitted count-based model answered instead of raising NotFittedError")


@rule(
    "fit returns a non-empty list of EpochRecord (one per epoch for neural plugins), numbered "
    "from 1, passes each to on_epoch, works with val=None, and leaves is_fitted True"
)
def check_fit_returns_epoch_records(case: KitCase, r: _Rule) -> None:
    plugin_cls = case.plugin
    model = _new(case)
    seen: list[EpochRecord] = []
    settings = case.train_config(epochs=2)
    epochs = settings.epochs  # a case's train overrides may set another number
    history = fit_model(model, kit_fit_data(val=False), settings, callbacks=[_Recorder(seen)])
    r.ensure(isinstance(history, list), f"fit returned a {type(history).__name__}")
    r.ensure(bool(history), "fit returned an empty list")
    kinds = {type(h).__name__ for h in history if not isinstance(h, EpochRecord)}
    r.ensure(not kinds, f"fit returned item(s) of type {', '.join(sorted(kinds))}")
    if _is_neural(plugin_cls):
        r.ensure(len(history) == epochs, f"{len(history)} record(s) for epochs={epochs}")
    numbers = [h.epoch for h in history]
    r.ensure(numbers == list(range(1, len(history) + 1)), f"epoch numbers {numbers}")
    r.ensure(
        [s.epoch for s in seen] == numbers,
        f"on_epoch received epochs {[s.epoch for s in seen]}, fit returned {numbers}",
    )
    r.ensure(model.is_fitted is True, f"is_fitted is {model.is_fitted!r} after fit")


@rule("log_proba returns a float64 numpy array of shape (batch, vocab_size)")
def check_log_proba_shape(case: KitCase, r: _Rule) -> None:
    model = fitted_model(case, r)
    contexts = probe_contexts(3, CONTEXT_LEN)
    _valid_rows(_log_proba(model, contexts, r, "3 contexts"), 3, r, "3 contexts", values=False)


@rule(
    f"rows of exp(log_proba) sum to 1 within {NORM_TOL:g} and every value is finite "
    "(smoothed: every id, <unk> and unseen ones included, has p > 0)"
)
def check_log_proba_normalised(case: KitCase, r: _Rule) -> None:
    model = fitted_model(case, r)
    seen = np.lib.stride_tricks.sliding_window_view(TEST_IDS, CONTEXT_LEN)[:6]
    for what, contexts in (
        ("contexts seen in training", np.ascontiguousarray(seen, dtype=np.int64)),
        ("random contexts with unseen ids", probe_contexts(16, CONTEXT_LEN, seed=1)),
        ("all-<unk> contexts", np.zeros((2, CONTEXT_LEN), dtype=np.int64)),
    ):
        _valid_rows(_log_proba(model, contexts, r, what), len(contexts), r, what)


@rule("a batch of one context works and gives the same row as inside a larger batch")
def check_batch_of_one(case: KitCase, r: _Rule) -> None:
    model = fitted_model(case, r)
    contexts = probe_contexts(4, CONTEXT_LEN, seed=2)
    together = _valid_rows(_log_proba(model, contexts, r, "4 contexts"), 4, r, "4 contexts")
    for i in range(len(contexts)):
        alone = _valid_rows(
            _log_proba(model, contexts[i : i + 1], r, "a batch of one"), 1, r, "a batch of one"
        )
        gap = _max_gap(alone[0], together[i])
        r.ensure(gap <= BATCH_TOL, f"context {i}: alone vs in a batch of 4 differ by {gap:.3g}")


@rule(
    f"contexts shorter than the training window (T=1 and T=3 after context_len {CONTEXT_LEN}) "
    "give valid rows"
)
def check_short_context(case: KitCase, r: _Rule) -> None:
    model = fitted_model(case, r)
    for length in (1, 3):
        what = f"contexts of length {length}"
        _valid_rows(_log_proba(model, probe_contexts(3, length), r, what), 3, r, what)


@rule(
    f"contexts longer than the training window (T={3 * CONTEXT_LEN} after context_len "
    f"{CONTEXT_LEN}) give valid rows"
)
def check_long_context(case: KitCase, r: _Rule) -> None:
    model = fitted_model(case, r)
    what = f"contexts of length {3 * CONTEXT_LEN}"
    _valid_rows(_log_proba(model, probe_contexts(3, 3 * CONTEXT_LEN), r, what), 3, r, what)


@rule(
    "log_proba rejects ids outside [0, vocab_size), non-2-D arrays and non-integer dtypes "
    "with a SeqlabError (DataError), not IndexError or a silent answer"
)
def check_rejects_bad_input(case: KitCase, r: _Rule) -> None:
    model = fitted_model(case, r)
    good = probe_contexts(2, CONTEXT_LEN)
    last, early, negative = good.copy(), good.copy(), good.copy()
    last[0, -1] = VOCAB_SIZE
    early[1, 2] = VOCAB_SIZE
    negative[0, -1] = -1
    cases = (
        (f"id {VOCAB_SIZE} (= vocab_size) at the last position", last),
        ("id -1 at the last position", negative),
        (f"id {VOCAB_SIZE} early in the context", early),
        ("a 1-D array", good[0]),
        ("a 3-D array", good[None]),
        ("float contexts", good.astype(np.float64) + 0.5),
    )
    for what, bad in cases:
        try:
            model.log_proba(bad)
        except SeqlabError:
            continue
        except Exception as err:
            raise r.fail(f"{what} {_instead(err, 'a SeqlabError')}") from err
        raise r.fail(f"{what} was answered without an error")


@rule("log_proba is pure: asking twice gives identical rows and leaves get_state() unchanged")
def check_inference_is_pure(case: KitCase, r: _Rule) -> None:
    model = fitted_model(case, r)
    before = model.get_state()
    contexts = probe_contexts(4, CONTEXT_LEN, seed=3)
    first = _log_proba(model, contexts, r, "4 contexts")
    second = _log_proba(model, contexts, r, "the same 4 contexts again")
    r.ensure(
        np.array_equal(first, second),
        f"max difference {_max_gap(first, second):.3g} (dropout left on?)",
    )
    diff = _states_equal(before, model.get_state())
    r.ensure(diff is None, f"after log_proba: {diff}")


@rule(
    "fitting twice under the same seed (create(..., seed=s), TrainConfig(seed=s)) gives "
    "identical log_proba"
)
def check_deterministic_fit(case: KitCase, r: _Rule) -> None:
    contexts = probe_contexts(4, CONTEXT_LEN, seed=4)
    settings = case.train_config(epochs=1, seed=11)
    outputs = []
    for _ in range(2):
        model = _new(case, seed=settings.seed)
        fit_model(model, kit_fit_data(), settings)
        outputs.append(_log_proba(model, contexts, r, "4 contexts"))
    gap = _max_gap(outputs[0], outputs[1])
    r.ensure(gap <= 1e-9, f"two fits under seed {settings.seed} differ by up to {gap:.3g}")


@rule(
    "save() then load() with the same vocabulary restores a fitted model with identical "
    "init_args and log_proba; loading with another vocabulary raises DataError"
)
def check_save_load_roundtrip(case: KitCase, r: _Rule) -> None:
    plugin_cls = case.plugin
    model = fitted_model(case, r)
    state = model.get_state()
    non_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    r.ensure(
        not non_tensors,
        f"non-tensor entries {non_tensors[:5]}",
        "get_state() holds only tensors (checkpoints load with weights_only=True)",
    )
    contexts = probe_contexts(4, CONTEXT_LEN, seed=5)
    expected = _log_proba(model, contexts, r, "4 contexts")
    with tempfile.TemporaryDirectory(prefix="seqlab-kit-") as tmp:
        path = Path(tmp) / "model.pt"
        model.save(path, vocab=list(VOCAB), plugin=r.name)
        loaded = plugin_cls.load(path, vocab=list(VOCAB))
        r.ensure(
            type(loaded) is plugin_cls,
            f"load returned a {type(loaded).__name__}",
            "load returns an instance of the plugin class",
        )
        r.ensure(loaded.is_fitted is True, "is_fitted is False after load")
        r.ensure(
            loaded.init_args() == model.init_args(),
            f"init_args {loaded.init_args()!r} != {model.init_args()!r}",
        )
        got = _log_proba(loaded, contexts, r, "4 contexts after load")
        gap = _max_gap(got, expected)
        r.ensure(gap == 0.0, f"log_proba after load differs by up to {gap:.3g}")
        other = ["<unk>", "a", "b", "x", "d"]
        try:
            plugin_cls.load(path, vocab=other)
        except DataError:
            pass
        except Exception as err:
            raise r.fail(f"loading with another vocabulary {_instead(err, 'DataError')}") from err
        else:
            raise r.fail("a checkpoint loaded with another vocabulary without an error")


@rule(
    f"after fit, a periodic sequence over V={VOCAB_SIZE} is learnt: held-out mean nll "
    f"below 0.5*ln(V) = {0.5 * math.log(VOCAB_SIZE):.3f} and acc@1 >= 0.95",
    task_kind="next-token",
)
def check_learns_periodic_sequence(case: KitCase, r: _Rule) -> None:
    _ensure_learnt(fitted_model(case, r), r)


def _ensure_learnt(model: SequenceModel, r: _Rule, what: str = "") -> None:
    """The learning threshold, on windows of TEST_IDS scored through log_proba."""
    from pipeline_core.metrics import score_targets

    windows = np.lib.stride_tricks.sliding_window_view(TEST_IDS, CONTEXT_LEN + 1)
    contexts = np.ascontiguousarray(windows[:, :-1], dtype=np.int64)
    scores = score_targets(model, contexts, windows[:, -1])
    nll, acc = float(-scores.logp.mean()), float(scores.top1.mean())
    r.ensure(
        nll < 0.5 * math.log(VOCAB_SIZE) and acc >= 0.95,
        f"{what}held-out nll {nll:.3f} nats (uniform: {math.log(VOCAB_SIZE):.3f}), acc@1 {acc:.2f}",
    )


@rule(
    "fill-blank plugins: fill_blank_log_proba(left, right) returns valid (B, V) rows",
    task_kind="fill-blank",
)
def check_fill_blank(case: KitCase, r: _Rule) -> None:
    model = fitted_model(case, r)
    left = probe_contexts(3, CONTEXT_LEN, seed=6)
    right = probe_contexts(3, CONTEXT_LEN, seed=7)
    what = "3 (left, right) contexts"
    try:
        lp = model.fill_blank_log_proba(left, right)
    except Exception as err:
        raise r.fail(f"fill_blank_log_proba raised {_describe(err)}") from err
    _valid_rows(lp, 3, r, what)


# ---- rules of contract v2: causality, carried state, tasks, stateful training ----------
CAUSAL_TOL = 1e-6
STATE_TOL = 1e-6
#: chunk length for carried-state scoring: shorter than the probe, so the state crosses
#: chunk boundaries (and 5 does not divide the probe's length)
STREAM_CHUNK = 5


@contextmanager
def _evaluating(model: TorchSequenceModel) -> Iterator[None]:
    """Eval mode and no autograd for the block; the previous mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _step_logits(model: TorchSequenceModel, ids: np.ndarray, r: _Rule) -> np.ndarray:
    """``model.step(x)[0]`` (fresh state) as float64, checked to be (B, T, V)."""
    logits, _ = model.step(torch.from_numpy(ids).to(model.device))
    shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
    expected = (*ids.shape, VOCAB_SIZE)
    r.ensure(
        shape == expected,
        f"step(x)[0] for x of shape {ids.shape} is {shape}, expected {expected}",
        "forward returns logits of shape (batch, time, vocab_size), position t predicting t+1",
    )
    return np.asarray(logits.detach().double().cpu().numpy())


@rule(
    "a next-token neural plugin is causal: forward's logits at positions <= t do not change "
    f"(within {CAUSAL_TOL:g}) when only the tokens after t change, so position t never sees "
    "t+1 (teacher-forced training and carried-state scoring rely on it)",
    task_kind="next-token",
    requires="neural",
)
def check_causal(case: KitCase, r: _Rule) -> None:
    model = fitted_model(case, r)
    assert isinstance(model, TorchSequenceModel)
    base = probe_contexts(2, CONTEXT_LEN, seed=8)
    rng = np.random.default_rng(9)
    with _evaluating(model):
        ref = _step_logits(model, base, r)
        for t in range(CONTEXT_LEN - 1):
            other = base.copy()
            shift = rng.integers(1, VOCAB_SIZE, size=other[:, t + 1 :].shape)
            other[:, t + 1 :] = (other[:, t + 1 :] + shift) % VOCAB_SIZE  # every later id moves
            got = _step_logits(model, other, r)
            gaps = [_max_gap(ref[:, p], got[:, p]) for p in range(t + 1)]
            worst = int(np.argmax(gaps))
            r.ensure(
                gaps[worst] <= CAUSAL_TOL,
                f"changing only the tokens after position {t} moved the logits at position "
                f"{worst} by {gaps[worst]:.3g} (a convolution or attention that sees later "
                "tokens, e.g. padding on both sides or no causal mask?)",
            )


@rule(
    "a stateful plugin carries its state exactly: score_stream and stream_log_proba, in "
    f"chunks of {STREAM_CHUNK} so the state crosses chunk boundaries, equal log_proba of "
    f"each full prefix within {STATE_TOL:g}",
    requires="stateful",
)
def check_carried_state(case: KitCase, r: _Rule) -> None:
    from pipeline_core.metrics import score_stream

    model = fitted_model(case, r)
    assert isinstance(model, TorchSequenceModel)
    # 23 ids: a stretch of the pattern, then random ones (<unk> and unseen ids included)
    ids = np.concatenate([TEST_IDS[:12], probe_contexts(1, 11, seed=10)[0]])
    n = len(ids)
    prefixes = np.concatenate(
        [_log_proba(model, ids[None, : i + 1], r, f"the prefix of {i + 1} ids") for i in range(n)]
    )
    rows, _ = model.stream_log_proba(ids, None, chunk=STREAM_CHUNK)
    r.ensure(
        np.shape(rows) == (n, VOCAB_SIZE),
        f"stream_log_proba over {n} ids returned shape {np.shape(rows)}",
        "stream_log_proba returns one row per id, (len(ids), vocab_size)",
    )
    gaps = np.array([_max_gap(rows[i], prefixes[i]) for i in range(n)])
    off = np.flatnonzero(gaps > STATE_TOL)
    if off.size:
        i = int(off[0])
        raise r.fail(
            f"stream_log_proba row {i} (after {i + 1} ids, in chunks of {STREAM_CHUNK}) differs "
            f"from log_proba of that prefix by {gaps[i]:.3g}; the state forward returns does "
            "not continue the sequence"
        )
    scores = score_stream(model, ids, first=1, chunk=STREAM_CHUNK)
    want = prefixes[np.arange(n - 1), ids[1:]]
    r.ensure(
        scores.logp.shape == want.shape,
        f"score_stream scored {scores.logp.shape[0]} of the {n - 1} ids after the first",
    )
    gap = _max_gap(scores.logp, want)
    r.ensure(
        gap <= STATE_TOL,
        f"score_stream differs from log_proba of the prefixes by up to {gap:.3g}",
    )


@rule(
    "every registered task refuses the plugin with a one-line PluginError exactly when "
    "its task_kinds do not let it run the task (Task.check_plugin, Task.accepts)"
)
def check_refuses_undeclared_task(case: KitCase, r: _Rule) -> None:
    plugin_cls = case.plugin
    kinds = plugin_cls.task_kinds
    declared = set(kinds) if isinstance(kinds, set | frozenset | tuple | list) else set()
    for name in known_tasks():
        task = get_task(name)
        allowed = task.accepts(frozenset(declared))
        try:
            task.check_plugin(plugin_cls, r.name)
        except PluginError as err:
            r.ensure(
                not allowed,
                f"the {name} task refused a plugin whose task_kinds allow it: {_describe(err)}",
            )
            r.ensure("\n" not in str(err), f"the {name} task's refusal spans several lines")
            continue
        except Exception as err:
            raise r.fail(f"the {name} task {_instead(err, 'PluginError')}") from err
        r.ensure(
            allowed,
            f"the {name} task accepted a plugin whose task_kinds ({sorted(declared)}) "
            "do not let it run the task",
        )


@rule(
    "with TrainConfig(bptt='stateful'), a stateful plugin trains by truncated BPTT over "
    f"contiguous streams (one EpochRecord per epoch) and learns the periodic sequence (nll "
    f"below {0.5 * math.log(VOCAB_SIZE):.3f}, acc@1 >= 0.95); fit_model refuses a neural "
    "plugin without state with ConfigError",
    requires="neural",
)
def check_stateful_training(case: KitCase, r: _Rule) -> None:
    model = _new(case)
    assert isinstance(model, TorchSequenceModel)
    settings = case.train_config(bptt="stateful")
    if not model.stateful:  # seqlab's part of the rule: refuse before anything runs
        try:
            fit_model(model, kit_fit_data(), settings)
        except ConfigError as err:
            r.ensure("bptt" in str(err), f"ConfigError does not name train.bptt: {err}")
            return
        except Exception as err:
            raise r.fail(f"a plugin without state {_instead(err, 'ConfigError')}") from err
        raise r.fail("fit_model trained a plugin without state (stateful = False) statefully")
    seen: list[EpochRecord] = []
    history = fit_model(model, kit_fit_data(), settings, callbacks=[_Recorder(seen)])
    numbers = [getattr(h, "epoch", None) for h in history]
    r.ensure(
        all(isinstance(h, EpochRecord) for h in history)
        and numbers == list(range(1, settings.epochs + 1)),
        f"{len(history)} record(s) numbered {numbers} for epochs={settings.epochs}",
    )
    r.ensure(model.is_fitted is True, f"is_fitted is {model.is_fitted!r} after fit")
    _ensure_learnt(model, r, "after bptt: stateful, ")


# ---- transduce rules: sequence-to-sequence plugins (neural: the task trains pair_logits) --
#: the kit's pair set: every sequence of 1 to 3 symbols over ids 1..4 and its reversal
TRANSDUCE_LENGTHS = (1, 2, 3)
TRANSDUCE_MAX_LEN = 6
TRANSDUCE_EPOCHS = 40
TRANSDUCE_EXACT = 0.9
TRANSDUCE_TOL = 1e-5
_TRANSDUCE_FITTED: dict[tuple[Any, ...], TorchSequenceModel] = {}


def transduce_pairs() -> Any:
    """The kit's reversal pairs (84 of them, a :class:`pipeline_core.pairs.PairSet`)."""
    import itertools

    from pipeline_core.pairs import PairSet

    seqs = [s for n in TRANSDUCE_LENGTHS for s in itertools.product((1, 2, 3, 4), repeat=n)]
    return PairSet.of([(s, s[::-1]) for s in seqs])


def transduce_probe_sources() -> list[np.ndarray]:
    """Sources a transduce plugin must answer: empty, <unk>, an unseen id, longer than
    any trained one."""
    rng = np.random.default_rng(12)
    probes = [np.empty(0, dtype=np.int64), np.array([0]), np.array([4, 4, 1])]
    probes += [rng.integers(0, VOCAB_SIZE, size=n) for n in (2, 5, 7)]
    return [p.astype(np.int64) for p in probes]


def transduce_model(case: KitCase, r: _Rule) -> TorchSequenceModel:
    """The case trained by the transduce task on the kit's reversal pairs (cached)."""
    from pipeline_core.tasks.transduce import TransduceTask
    from pipeline_core.vectorize import Vocabulary

    model = _TRANSDUCE_FITTED.get(case.key)
    if model is None:
        new = _new(case)
        assert isinstance(new, TorchSequenceModel)
        pairs = transduce_pairs()
        task = TransduceTask({"pairs": "reverse", "max_len": TRANSDUCE_MAX_LEN, "max_pairs": None})
        task.use(Vocabulary(VOCAB), "char", {"train": pairs, "val": pairs, "test": pairs})
        data = FitData(train=TRAIN_IDS, val=None, vocab_size=VOCAB_SIZE, context_len=CONTEXT_LEN)
        settings = case.train_config(epochs=TRANSDUCE_EPOCHS, bptt="windows")
        try:
            with one_thread():
                fit_model(new, data, settings, task=task)
        except Exception as err:
            raise r.fail(
                f"training by the transduce task on the kit's reversal pairs failed first: "
                f"{_describe(err)}"
            ) from err
        if len(_TRANSDUCE_FITTED) >= _CACHE_SIZE:
            _TRANSDUCE_FITTED.pop(next(iter(_TRANSDUCE_FITTED)))
        _TRANSDUCE_FITTED[case.key] = model = new
    return model


def _transduce(
    model: SequenceModel, sources: list[np.ndarray], max_len: int, beam: int, r: _Rule
) -> list[np.ndarray]:
    """``model.transduce`` checked: one 1-D integer array per source, ids in [0, V), at
    most ``max_len`` of them."""
    what = f"transduce({len(sources)} sources, max_len={max_len}, beam_size={beam})"
    try:
        outputs = model.transduce(sources, max_len, beam_size=beam)
    except Exception as err:
        raise r.fail(f"{what} raised {_describe(err)}") from err
    r.ensure(
        isinstance(outputs, list) and len(outputs) == len(sources),
        f"{what} returned {type(outputs).__name__} of "
        f"{len(outputs) if isinstance(outputs, list) else '?'} items",
        "transduce returns a list with one output per source",
    )
    checked = []
    for i, out in enumerate(outputs):
        arr = np.asarray(out)
        r.ensure(
            isinstance(out, np.ndarray)
            and arr.ndim == 1
            and (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)),
            f"{what}: output {i} is {type(out).__name__} of shape {np.shape(out)}",
            "each transduce output is a 1-D integer numpy array",
        )
        r.ensure(
            arr.size == 0 or (arr.min() >= 0 and arr.max() < VOCAB_SIZE),
            f"{what}: output {i} holds ids {arr.tolist()} (the end class must not be returned)",
            f"transduce outputs hold ids in [0, {VOCAB_SIZE})",
        )
        r.ensure(
            len(arr) <= max_len,
            f"{what}: output {i} has {len(arr)} ids",
            "a transduce output has at most max_len ids",
        )
        checked.append(arr.astype(np.int64))
    return checked


def _target_logp(
    model: SequenceModel, sources: list[np.ndarray], targets: list[np.ndarray], r: _Rule
) -> list[np.ndarray]:
    """``model.target_log_proba`` checked: (len(target) + 1,) rows, finite, <= 0."""
    what = f"target_log_proba on {len(sources)} pairs"
    try:
        rows = model.target_log_proba(sources, targets)
    except Exception as err:
        raise r.fail(f"{what} raised {_describe(err)}") from err
    r.ensure(
        isinstance(rows, list) and len(rows) == len(targets),
        f"{what} returned {type(rows).__name__}",
        "target_log_proba returns a list with one row per pair",
    )
    out = []
    for i, (row, tgt) in enumerate(zip(rows, targets, strict=True)):
        arr = np.asarray(row, dtype=np.float64)
        r.ensure(
            arr.shape == (len(tgt) + 1,),
            f"{what}: row {i} has shape {arr.shape} for a target of {len(tgt)} ids",
            "target_log_proba gives one value per target token and one for its end",
        )
        r.ensure(
            bool(np.isfinite(arr).all() and (arr <= 1e-9).all()),
            f"{what}: row {i} is {arr.tolist()}",
            "target_log_proba values are finite log-probabilities (<= 0)",
        )
        out.append(arr)
    return out


@rule(
    "transduce plugins: transduce(sources, max_len, beam_size) returns one 1-D integer "
    "array per source with ids in [0, V) (the end class V left out), at most max_len of "
    "them, for empty, <unk> and unseen-id sources, greedy and beam",
    task_kind="transduce",
    requires="neural",
)
def check_transduce_outputs(case: KitCase, r: _Rule) -> None:
    model = transduce_model(case, r)
    sources = transduce_probe_sources()
    for max_len in (1, TRANSDUCE_MAX_LEN):
        for beam in (1, 3):
            _transduce(model, sources, max_len, beam, r)


def _kit_greedy(model: TorchSequenceModel, source: np.ndarray, max_len: int) -> np.ndarray:
    """Greedy decoding through pair_logits alone: the argmax of the last position, fed
    back, until the end class V or max_len ids."""
    out: list[int] = []
    src = torch.from_numpy(np.ascontiguousarray(source[None], dtype=np.int64))
    with _evaluating(model):
        for _ in range(max_len):
            inputs = torch.tensor([[VOCAB_SIZE, *out]], dtype=torch.long)
            logits = model.pair_logits(src.to(model.device), inputs.to(model.device))
            token = int(logits[0, -1].argmax())
            if token == VOCAB_SIZE:
                break
            out.append(token)
    return np.array(out, dtype=np.int64)


@rule(
    "transduce plugins: beam_size=1 is deterministic (asking twice gives the same outputs) "
    "and is greedy decoding: each output is what feeding pair_logits' argmax back gives",
    task_kind="transduce",
    requires="neural",
)
def check_transduce_greedy(case: KitCase, r: _Rule) -> None:
    model = transduce_model(case, r)
    sources = transduce_probe_sources()
    first = _transduce(model, sources, TRANSDUCE_MAX_LEN, 1, r)
    second = _transduce(model, sources, TRANSDUCE_MAX_LEN, 1, r)
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        r.ensure(np.array_equal(a, b), f"source {i}: {a.tolist()} then {b.tolist()}")
    for src, got in zip(sources, first, strict=True):
        want = _kit_greedy(model, src, TRANSDUCE_MAX_LEN)
        r.ensure(
            np.array_equal(got, want),
            f"source {src.tolist()}: beam_size=1 gave {got.tolist()}, greedy decoding through "
            f"pair_logits gives {want.tolist()}",
        )


@rule(
    "transduce plugins: target_log_proba rows hold len(target) + 1 finite values <= 0, "
    f"equal (within {TRANSDUCE_TOL:g}) the log-softmax of pair_logits in eval mode at the "
    "target and end classes, and a pair scores the same alone as inside a padded batch",
    task_kind="transduce",
    requires="neural",
)
def check_transduce_target_log_proba(case: KitCase, r: _Rule) -> None:
    from pipeline_core.tasks.transduce import make_batch

    model = transduce_model(case, r)
    sources = transduce_probe_sources()
    targets = [src[::-1].copy() for src in sources[::-1]]  # every length against every other
    rows = _target_logp(model, sources, targets, r)
    batch = make_batch(sources, targets, VOCAB_SIZE)
    assert batch.source is not None
    with _evaluating(model):
        logits = model.pair_logits(
            torch.from_numpy(batch.source).to(model.device),
            torch.from_numpy(batch.inputs).to(model.device),
        )
    expected_shape = (*batch.inputs.shape, VOCAB_SIZE + 1)
    r.ensure(
        tuple(logits.shape) == expected_shape,
        f"pair_logits for inputs of shape {batch.inputs.shape} is {tuple(logits.shape)}",
        "pair_logits returns (batch, target time, vocab_size + 1): the end class last",
    )
    lp = torch.log_softmax(logits.double(), dim=-1).cpu().numpy()
    for i, (row, tgt) in enumerate(zip(rows, targets, strict=True)):
        want = lp[i, np.arange(len(tgt) + 1), np.append(tgt, VOCAB_SIZE)]
        gap = _max_gap(row, want)
        r.ensure(
            gap <= TRANSDUCE_TOL,
            f"pair {i}: target_log_proba differs from pair_logits by {gap:.3g}",
        )
        alone = _target_logp(model, [sources[i]], [tgt], r)[0]
        gap = _max_gap(alone, row)
        r.ensure(
            gap <= TRANSDUCE_TOL,
            f"pair {i} alone differs from the same pair in a padded batch by {gap:.3g} "
            "(padding leaks into the encoder or attention?)",
        )


@rule(
    "transduce plugins: save() then load() gives identical transduce outputs (greedy and "
    "beam) and target_log_proba",
    task_kind="transduce",
    requires="neural",
)
def check_transduce_save_load(case: KitCase, r: _Rule) -> None:
    model = transduce_model(case, r)
    sources = transduce_probe_sources()
    targets = [src[::-1].copy() for src in sources]
    with tempfile.TemporaryDirectory(prefix="seqlab-kit-") as tmp:
        path = Path(tmp) / "model.pt"
        model.save(path, vocab=list(VOCAB), plugin=r.name)
        loaded = case.plugin.load(path, vocab=list(VOCAB))
    for beam in (1, 2):
        before = _transduce(model, sources, TRANSDUCE_MAX_LEN, beam, r)
        after = _transduce(loaded, sources, TRANSDUCE_MAX_LEN, beam, r)
        for i, (a, b) in enumerate(zip(before, after, strict=True)):
            r.ensure(
                np.array_equal(a, b),
                f"beam_size={beam}, source {i}: {a.tolist()} before, {b.tolist()} after load",
            )
    gap = max(
        _max_gap(a, b)
        for a, b in zip(
            _target_logp(model, sources, targets, r),
            _target_logp(loaded, sources, targets, r),
            strict=True,
        )
    )
    r.ensure(gap == 0.0, f"target_log_proba after load differs by up to {gap:.3g}")


@rule(
    "transduce plugins: trained by the transduce task for "
    f"{TRANSDUCE_EPOCHS} epochs on every sequence of {TRANSDUCE_LENGTHS[0]} to "
    f"{TRANSDUCE_LENGTHS[-1]} symbols and its reversal, greedy outputs match at least "
    f"{TRANSDUCE_EXACT:.0%} of the training targets exactly",
    task_kind="transduce",
    requires="neural",
)
def check_transduce_learns_reversal(case: KitCase, r: _Rule) -> None:
    model = transduce_model(case, r)
    pairs = transduce_pairs()
    outputs = _transduce(model, list(pairs.sources), TRANSDUCE_MAX_LEN, 1, r)
    hits = [np.array_equal(o, t) for o, t in zip(outputs, pairs.targets, strict=True)]
    share = float(np.mean(hits))
    wrong = next((i for i, h in enumerate(hits) if not h), None)
    example = (
        ""
        if wrong is None
        else f"; e.g. {pairs.sources[wrong].tolist()} -> {outputs[wrong].tolist()}"
    )
    r.ensure(share >= TRANSDUCE_EXACT, f"exact match {share:.2f} on {len(hits)} pairs{example}")


@rule(
    "classify plugins: summary(x, lengths) is one (B, H) vector per sequence, unchanged by "
    "the padding after each row's length; attach_head adds task_head to the state, and "
    "save() then load() rebuilds it with identical outputs",
    task_kind="classify",
    requires="neural",
)
def check_classify_summary(case: KitCase, r: _Rule) -> None:
    model = _new(case)
    r.ensure(isinstance(model, TorchSequenceModel), "a classify plugin is not neural")
    assert isinstance(model, TorchSequenceModel)
    model.eval()
    x = torch.from_numpy(probe_contexts(3, 6, seed=7))
    lengths = torch.tensor([6, 2, 4])
    with torch.no_grad():
        both = model.summary(x, lengths)
        shapes_ok = both.ndim == 2 and both.shape[0] == 3
        r.ensure(shapes_ok, f"summary returned shape {tuple(both.shape)} for 3 sequences")
        for row, n in enumerate(lengths.tolist()):
            alone = model.summary(x[row : row + 1, :n], torch.tensor([n]))
            gap = float((alone[0] - both[row]).abs().max())
            r.ensure(gap <= 1e-5, f"row {row}: the padding changes summary by {gap:.3g}")
    head = model.attach_head(3)
    r.ensure("task_head.weight" in model.get_state(), "task_head is not in get_state()")
    model.mark_fitted()
    with torch.no_grad():
        expected = head(model.summary(x, lengths))
    with tempfile.TemporaryDirectory(prefix="seqlab-kit-") as tmp:
        path = model.save(Path(tmp) / "model.pt", vocab=list(VOCAB), plugin=r.name)
        loaded = case.plugin.load(path, vocab=list(VOCAB))
    r.ensure(loaded.task_head is not None, "load did not rebuild task_head")
    loaded.eval()
    with torch.no_grad():
        got = loaded.task_head(loaded.summary(x, lengths))
    gap = float((got - expected).abs().max())
    r.ensure(gap == 0.0, f"head outputs after load differ by up to {gap:.3g}")


_CHECK_FNS: tuple[CheckFn, ...] = (
    check_class_contract,
    check_config_defaults,
    check_test_params,
    check_config_rejects_unknown_key,
    check_config_rejects_invalid_value,
    check_vocab_size_validated,
    check_task_kinds,
    check_construction,
    check_no_state_before_fit,
    check_unfitted_log_proba,
    check_fit_returns_epoch_records,
    check_log_proba_shape,
    check_log_proba_normalised,
    check_batch_of_one,
    check_short_context,
    check_long_context,
    check_rejects_bad_input,
    check_inference_is_pure,
    check_deterministic_fit,
    check_save_load_roundtrip,
    check_learns_periodic_sequence,
    check_fill_blank,
    check_causal,
    check_carried_state,
    check_refuses_undeclared_task,
    check_stateful_training,
    check_transduce_outputs,
    check_transduce_greedy,
    check_transduce_target_log_proba,
    check_transduce_save_load,
    check_transduce_learns_reversal,
    check_classify_summary,
)


def all_checks() -> list[Check]:
    """Every check, in the order a failure is easiest to read (class first, learning last)."""
    return [
        Check(
            fn.__name__.removeprefix("check_"),
            fn.rule,  # type: ignore[attr-defined]
            fn,
            fn.task_kind,  # type: ignore[attr-defined]
            fn.requires,  # type: ignore[attr-defined]
        )
        for fn in _CHECK_FNS
    ]
