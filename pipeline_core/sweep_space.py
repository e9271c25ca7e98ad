"""The ``sweep:`` section of a config: what a sweep searches, and how a trial's values
become a config.

A search space maps a config path to a distribution::

    sweep:
      space:
        train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}      # float (a bound is a float)
        models.0.params.hidden_size: {low: 32, high: 256, step: 32}   # int (both ints)
        train.lr_schedule: {choices: [none, cosine]}          # categorical

Paths name a train setting (``train.FIELD``), the one model's plugin params
(``models.0.params.KEY``) or its per-model train overrides (``models.0.train.FIELD``).
Everything here is checked before any trial runs: a path that names nothing, a range
that is empty, or an end of a range that the config (or the plugin) would refuse is
one :class:`~pipeline_core.errors.ConfigError` naming the path.

Nothing here imports optuna: :func:`suggest` takes anything with optuna's
``suggest_float`` / ``suggest_int`` / ``suggest_categorical``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline_core.errors import ConfigError, SeqlabError

if TYPE_CHECKING:
    from pipeline_core.config import RunConfig
    from pipeline_core.tasks import Task

Scalar = str | int | float | bool | None


class _Strict(BaseModel):
    # pipeline_core.config.StrictModel's rules; not imported from there because
    # pipeline_core.config imports this module for its ``sweep`` field
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Distribution(_Strict):
    """One searched value: a numeric range (``low``/``high``, ``step`` or ``log``) or a
    list of ``choices``; a range is of ints when both bounds (and the step) are ints."""

    low: int | float | None = Field(default=None, description="Lowest value (inclusive).")
    high: int | float | None = Field(default=None, description="Highest value (inclusive).")
    step: int | float | None = Field(
        default=None, gt=0, description="Only low, low + step, ... (null: any value)."
    )
    log: bool = Field(default=False, description="Sample on a log scale (low > 0).")
    choices: list[Scalar] | None = Field(default=None, description="The values to choose from.")

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError("give either choices or low/high (with step or log), not both")
            if not self.choices:
                raise ValueError("choices must list at least one value")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"choices repeat a value (got {self.choices})")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices")
        if not self.low < self.high:
            raise ValueError(f"low must be below high (got low={self.low}, high={self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got low={self.low})")
        if self.log and self.step is not None:
            raise ValueError("give step or log: true, not both")
        if self.step is not None and self.step > self.high - self.low:
            raise ValueError(f"step {self.step} is wider than the range {self.low}..{self.high}")
        return self

    @property
    def is_int(self) -> bool:
        numbers = [self.low, self.high] + ([self.step] if self.step is not None else [])
        return all(isinstance(v, int) and not isinstance(v, bool) for v in numbers)

    def ends(self) -> list[Scalar]:
        """The values checked before any trial: both ends of a range, every choice."""
        if self.choices is not None:
            return list(self.choices)
        return [self.low, self.high]

    def describe(self) -> str:
        if self.choices is not None:
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        extra = f" step {self.step}" if self.step is not None else " log" if self.log else ""
        return f"[{self.low}, {self.high}]{extra}"


SamplerName = Literal["tpe", "random"]
PrunerName = Literal["median", "none"]


class SweepConfig(_Strict):
    """``seqlab sweep``: the search space, the figure it minimises and how it searches."""

    metric: str | None = Field(
        default=None,
        description="Validation figure minimised, e.g. `val_bpc` or `val_nll` (null: the "
        "task's, `val_<rank metric>`); the test split is never scored for a trial.",
    )
    sampler: SamplerName = Field(default="tpe", description="Optuna sampler: tpe or random.")
    seed: int = Field(default=0, description="Seeds the sampler.")
    pruner: PrunerName = Field(
        default="median",
        description="median: stop a trial whose epoch's validation figure is worse than "
        "the median of earlier trials at that epoch; none: every trial runs to the end.",
    )
    warmup_epochs: int = Field(
        default=1, ge=0, description="Epochs every trial runs before it may be pruned."
    )
    startup_trials: int = Field(
        default=2, ge=0, description="Trials that finish before any is pruned."
    )
    space: dict[str, Distribution] = Field(
        default_factory=dict,
        description="Config path -> distribution (see the module doc).",
    )


class Suggester(Protocol):
    """The part of an ``optuna.Trial`` that samples."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = ..., log: bool = ...
    ) -> float: ...

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = ..., log: bool = ...
    ) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


def suggest(trial: Suggester, space: Mapping[str, Distribution]) -> dict[str, Any]:
    """One value per path, drawn by ``trial`` (the optuna param is named by the path)."""
    values: dict[str, Any] = {}
    for path, dist in space.items():
        if dist.choices is not None:
            values[path] = trial.suggest_categorical(path, dist.choices)
        elif dist.is_int:
            step = int(dist.step) if dist.step is not None else 1
            values[path] = trial.suggest_int(
                path, int(dist.low or 0), int(dist.high or 0), step=step, log=dist.log
            )
        else:
            values[path] = trial.suggest_float(
                path, float(dist.low or 0), float(dist.high or 0), step=dist.step, log=dist.log
            )
    return values


# ---- paths ----------------------------------------------------------------------------
PATH_HINT = "use train.FIELD, models.0.params.KEY or models.0.train.FIELD"


def _set_path(values: dict[str, Any], path: str, value: Any) -> None:
    """``values`` (a config as plain data) with ``path``'s leaf set; list items by index."""
    node: Any = values
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    node[leaf] = value


def apply(config: RunConfig, values: Mapping[str, Any]) -> RunConfig:
    """``config`` with each path set to its value, validated again (one line if not)."""
    from pipeline_core.config import RunConfig, validate_model

    data = copy.deepcopy(config.model_dump(mode="json"))
    for path, value in values.items():
        _set_path(data, path, value)
    return validate_model(RunConfig, data)


def check_path(path: str, config: RunConfig) -> None:
    """``path`` names a train setting or a param of the config's one model."""
    from pipeline_core.config import TrainConfig
    from pipeline_core.experiment import make_task, resolve_models

    where = f"sweep.space.{path}"
    parts = path.split(".")
    train_fields = sorted(TrainConfig.model_fields)
    if parts[0] == "train" and len(parts) == 2:
        if parts[1] not in train_fields:
            raise ConfigError(f"{where}: train has no setting {parts[1]!r}; {PATH_HINT}")
        return
    if parts[0] != "models" or len(parts) != 4 or parts[2] not in ("params", "train"):
        raise ConfigError(f"{where}: names no config value; {PATH_HINT}")
    if parts[1] != "0":
        raise ConfigError(f"{where}: a sweep tunes one model, models.0 ({PATH_HINT})")
    if parts[2] == "train":
        if parts[3] not in train_fields:
            raise ConfigError(f"{where}: train has no setting {parts[3]!r}; {PATH_HINT}")
        return
    (resolved,) = resolve_models(config.models, make_task(config), config.train)
    if parts[3] not in resolved.config:
        known = ", ".join(sorted(resolved.config))
        raise ConfigError(
            f"{where}: plugin {resolved.spec.plugin} has no param {parts[3]!r} (its params: "
            f"{known})"
        )


def check_ends(path: str, dist: Distribution, config: RunConfig) -> None:
    """Each end of the range (each choice) gives a config that validates, plugin
    params and train settings included."""
    from pipeline_core.experiment import make_task, resolve_models

    for value in dist.ends():
        try:
            trial = apply(config, {path: value})
            resolve_models(trial.models, make_task(trial), trial.train)
        except SeqlabError as err:
            reason = str(err).removeprefix("invalid config: ")
            raise ConfigError(
                f"sweep.space.{path}: the value {value!r} is refused: {reason}"
            ) from None


def sweep_metric(sweep: SweepConfig, task: Task) -> str:
    """The figure minimised: the config's, or the task's ranking figure on val."""
    allowed = [f"val_{task.rank_metric}", "val_nll"]
    metric = sweep.metric or allowed[0]
    if metric not in allowed:
        raise ConfigError(
            f"sweep.metric: the {task.name} task has no validation figure {metric!r} to "
            f"minimise; use {' or '.join(allowed)}"
        )
    return metric


def check_sweep(config: RunConfig) -> SweepConfig:
    """The config's sweep section, checked as a whole before anything runs."""
    from pipeline_core.experiment import make_task

    sweep = config.sweep
    if sweep is None or not sweep.space:
        raise ConfigError(
            "sweep.space: the config declares no search space; add e.g. "
            "'sweep: {space: {train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}}}'"
        )
    if len(config.models) != 1:
        labels = ", ".join(m.label for m in config.models)
        raise ConfigError(
            f"models: a sweep tunes one model; the config lists {len(config.models)} "
            f"({labels}): keep one"
        )
    sweep_metric(sweep, make_task(config))
    for path, dist in sweep.space.items():
        check_path(path, config)
        check_ends(path, dist, config)
    return sweep
