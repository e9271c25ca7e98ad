"""The model registry after a comparison: register the best model, move ``champion``
only when it is earned.

The best finished plugin model of a comparison (never a baseline row) by the task's
rank metric on the validation split (:attr:`Task.rank_metric`, lower is better: bpc for
next-token and fill-blank, cer for transduce, log_loss for classify, mse for regress) is
registered as a new version of ``registry.name`` (default ``seqlab-<dataset>``), tagged
with its data sha256, task, rank metric and its val figure (``seqlab.rank_metric``,
``seqlab.val_<metric>``), plugin and parent run. The ``champion`` alias moves to it only
when there is no champion yet, or when the champion was trained on the same data
(sha256) for the same task, ranked on the same metric, and the new val figure is
strictly lower. A champion trained on other data, for another task or ranked on another
metric, or with no such record, is never replaced silently: the version is registered,
the alias stays, and the decision says why. A version registered before the rank metric
was recorded (only ``seqlab.val_bpc``) reads as ranked on bpc. :func:`decide` is the
pure rule; :func:`register_best` performs it through :mod:`pipeline_core.tracking` and
records the decision on the parent run.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pipeline_core.errors import SeqlabError
from pipeline_core.tracking import (
    RunRef,
    Tracker,
    describe_error,
    model_version_by_alias,
    model_versions_of_run,
    register_model_version,
)

if TYPE_CHECKING:
    from pipeline_core.config import RunConfig
    from pipeline_core.experiment import ModelResult

ALIAS = "champion"
#: tags every registered version carries (the champion rule reads the data, task, rank
#: metric and its val figure, ``seqlab.val_<metric>``)
TAG_DATA = "seqlab.data_sha256"
TAG_TASK = "seqlab.task"
TAG_RANK_METRIC = "seqlab.rank_metric"
TAG_VAL_BPC = "seqlab.val_bpc"
TAG_PLUGIN = "seqlab.plugin"
TAG_PARENT = "seqlab.parent_run_id"
TAG_MODEL = "seqlab.model"

#: the champion rule's verdicts (:func:`decide`)
Decision = Literal["first", "better", "kept", "other-data", "other-task", "unrecorded"]
MOVES_ALIAS: frozenset[str] = frozenset({"first", "better"})
#: what a comparison's registry step can end in besides a verdict
DISABLED, NO_CANDIDATE, ALREADY = "disabled", "no-candidate", "already-registered"


#: the rank metric of a version that records a val bpc but no ``seqlab.rank_metric``
LEGACY_METRIC = "bpc"


class RegistryError(SeqlabError):
    """Registering the best model failed; nothing was left half-registered."""


def val_tag(metric: str) -> str:
    """The version tag holding the validation figure of ``metric`` (``seqlab.val_bpc``)."""
    return f"seqlab.val_{metric}"


def rank_metric_of(config: RunConfig) -> str:
    """The Scores field the comparison's task ranks by (lower is better)."""
    from pipeline_core.experiment import make_task

    return make_task(config).rank_metric


@dataclass(frozen=True)
class Candidate:
    """The model a comparison offers the registry."""

    model: str
    plugin: str
    run_id: str
    #: its validation figure of ``rank_metric``
    val_score: float
    data_sha256: str
    task: str
    parent_run_id: str
    rank_metric: str = LEGACY_METRIC

    def tags(self) -> dict[str, str]:
        return {
            TAG_DATA: self.data_sha256,
            TAG_TASK: self.task,
            TAG_RANK_METRIC: self.rank_metric,
            val_tag(self.rank_metric): repr(float(self.val_score)),
            TAG_PLUGIN: self.plugin,
            TAG_PARENT: self.parent_run_id,
            TAG_MODEL: self.model,
        }


@dataclass(frozen=True)
class Champion:
    """The version the alias names now, with what its tags record (None: not recorded)."""

    version: str
    #: its validation figure of ``rank_metric``
    val_score: float | None = None
    data_sha256: str | None = None
    task: str | None = None
    rank_metric: str | None = None

    @classmethod
    def from_tags(cls, version: str, tags: Mapping[str, str] | None) -> Champion:
        """What a version's tags record; one with ``seqlab.val_bpc`` but no
        ``seqlab.rank_metric`` (registered before it was recorded) was ranked on bpc."""
        tags = dict(tags or {})
        metric = tags.get(TAG_RANK_METRIC) or (LEGACY_METRIC if TAG_VAL_BPC in tags else None)
        value: float | None = None
        if metric is not None:
            try:
                value = float(tags[val_tag(metric)])
            except (KeyError, ValueError):
                value = None
        if value is not None and not math.isfinite(value):
            value = None
        return cls(
            str(version),
            value,
            tags.get(TAG_DATA) or None,
            tags.get(TAG_TASK) or None,
            metric,
        )


def decide(candidate: Candidate, champion: Champion | None) -> Decision:
    """The champion rule (pure): ``first`` or ``better`` move the alias; ``kept``,
    ``other-data``, ``other-task`` and ``unrecorded`` leave it where it is. A champion
    ranked on another metric than the candidate is never compared: ``other-task``."""
    if champion is None:
        return "first"
    if champion.data_sha256 is None or champion.task is None:
        return "unrecorded"
    if champion.data_sha256 != candidate.data_sha256:
        return "other-data"
    if champion.task != candidate.task:
        return "other-task"
    if champion.rank_metric is not None and champion.rank_metric != candidate.rank_metric:
        return "other-task"
    if champion.val_score is None:
        return "unrecorded"
    return "better" if candidate.val_score < champion.val_score else "kept"


def describe(
    name: str, decision: Decision, version: str, candidate: Candidate, champion: Champion | None
) -> str:
    """The one line ``seqlab run`` prints under the leaderboard (pure)."""
    new = f"{name} version {version} ({candidate.model})"
    metric = f"val {candidate.rank_metric}"
    value = candidate.val_score
    if decision == "first" or champion is None:
        return f"registry: {new} is the new champion (no champion before; {metric} {value:.4f})"
    old = champion.version
    before = math.nan if champion.val_score is None else champion.val_score
    untouched = f"registered version {version} ({candidate.model}) without moving the alias"
    if decision == "better":
        return (
            f"registry: {new} is the new champion ({metric} {value:.4f} < {before:.4f}"
            f" of version {old})"
        )
    if decision == "kept":
        return (
            f"registry: {new} registered; kept version {old} as champion (its {metric} "
            f"{before:.4f} <= {value:.4f})"
        )
    if decision == "other-data":
        sha = (champion.data_sha256 or "")[:12]
        return (
            f"registry: {name} champion version {old} was trained on other data (sha256 "
            f"{sha}…, this comparison's is {candidate.data_sha256[:12]}…); {untouched}"
        )
    if decision == "other-task" and champion.task == candidate.task:
        return (
            f"registry: {name} champion version {old} was ranked on another metric "
            f"(val {champion.rank_metric}, not {metric}); {untouched}"
        )
    if decision == "other-task":
        return (
            f"registry: {name} champion version {old} was trained for another task "
            f"({champion.task}, not {candidate.task}); {untouched}"
        )
    return (
        f"registry: {name} champion version {old} records no data sha256, task or "
        f"{metric} (not registered by seqlab?); {untouched}"
    )


@dataclass(frozen=True)
class RegistryOutcome:
    """What the registry step did after a comparison (``ComparisonResult.registry``)."""

    name: str
    #: a :data:`Decision`, or ``disabled`` / ``no-candidate`` / ``already-registered``
    decision: str
    message: str
    #: the version this comparison registered (``already-registered``: the existing one)
    version: str | None = None
    #: the version ``champion`` names afterwards
    champion_version: str | None = None
    #: the candidate's and the champion's (before) validation figure of ``rank_metric``
    candidate_val: float | None = None
    champion_val_before: float | None = None
    model: str | None = None
    #: the Scores field the task ranks by (lower is better)
    rank_metric: str = LEGACY_METRIC
    #: the same figures under their bpc names (bpc-ranked tasks only, else None)
    candidate_val_bpc: float | None = field(init=False, default=None)
    champion_val_bpc_before: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.rank_metric == "bpc":
            object.__setattr__(self, "candidate_val_bpc", self.candidate_val)
            object.__setattr__(self, "champion_val_bpc_before", self.champion_val_before)

    def figures(self) -> dict[str, float | None]:
        """The parent run's metrics: ``candidate_val_<metric>`` and
        ``champion_val_<metric>_before`` (``candidate_val_bpc`` ... for bpc)."""
        return {
            f"candidate_val_{self.rank_metric}": self.candidate_val,
            f"champion_val_{self.rank_metric}_before": self.champion_val_before,
        }

    @property
    def moved_alias(self) -> bool:
        return self.decision in MOVES_ALIAS


def pick_candidate(
    results: Sequence[ModelResult], rank_metric: str = LEGACY_METRIC
) -> ModelResult | None:
    """The finished plugin model with the lowest finite validation ``rank_metric`` (the
    first of equals); baseline rows and failed models never qualify."""
    from pipeline_core.experiment import BASELINE

    best: ModelResult | None = None
    best_value = math.inf
    for r in results:
        if r.failed or r.plugin == BASELINE or r.val_scores is None:
            continue
        value = float(getattr(r.val_scores, rank_metric))
        if math.isfinite(value) and (best is None or value < best_value):
            best, best_value = r, value
    return best


def registry_name(config: RunConfig) -> str:
    from pipeline_core.experiment import dataset_name

    return config.registry.name or f"seqlab-{dataset_name(config.data.source)}"


def register_best(
    config: RunConfig,
    tracker: Tracker,
    parent: RunRef,
    results: Sequence[ModelResult],
    data_sha256: str,
) -> RegistryOutcome:
    """Register the comparison's best model by its task's rank metric on the validation
    split and apply the champion rule; record the decision on ``parent`` (tags
    ``seqlab.registry.*``, metrics ``candidate_val_<metric>`` and
    ``champion_val_<metric>_before``, e.g. ``candidate_val_bpc``). A failure is one
    :class:`RegistryError` line and leaves no version behind."""
    name = registry_name(config)
    metric = rank_metric_of(config)
    if not config.registry.enabled:
        message = "registry: nothing registered (--no-register)"
        outcome = RegistryOutcome(name, DISABLED, message, rank_metric=metric)
        return _recorded(tracker, parent, outcome)
    best = pick_candidate(results, metric)
    if best is None or best.val_scores is None:
        message = f"registry: nothing registered (no finished model has a validation {metric})"
        outcome = RegistryOutcome(name, NO_CANDIDATE, message, rank_metric=metric)
        return _recorded(tracker, parent, outcome)
    candidate = Candidate(
        model=best.label,
        plugin=best.plugin,
        run_id=best.run_id,
        val_score=float(getattr(best.val_scores, metric)),
        data_sha256=data_sha256,
        task=config.task,
        parent_run_id=parent.run_id,
        rank_metric=metric,
    )
    uri = tracker.uri
    try:
        current = model_version_by_alias(name, ALIAS, uri)
        champion = None if current is None else Champion.from_tags(current.version, current.tags)
        before = None if champion is None else champion.val_score
        known = model_versions_of_run(name, candidate.run_id, uri)
        if known:  # a resumed comparison whose best model is registered already
            message = (
                f"registry: {name} version {known[-1]} already holds {candidate.model} (run "
                f"{candidate.run_id}); nothing new registered"
            )
            outcome = RegistryOutcome(
                name=name,
                decision=ALREADY,
                message=message,
                version=known[-1],
                champion_version=None if champion is None else champion.version,
                candidate_val=candidate.val_score,
                champion_val_before=before,
                model=candidate.model,
                rank_metric=metric,
            )
            return _recorded(tracker, parent, outcome)
        decision = decide(candidate, champion)
        moves = decision in MOVES_ALIAS
        version = register_model_version(
            name,
            candidate.run_id,
            "model",
            alias=ALIAS if moves else None,
            tracking_uri=uri,
            tags=candidate.tags(),
        )
    except Exception as err:
        with contextlib.suppress(Exception):
            tracker.set_tags(parent, {"seqlab.registry.decision": "failed"})
        raise RegistryError(
            f"registry: could not register {candidate.model} (run {candidate.run_id}) as "
            f"{name}: {describe_error(err)[:300]}; nothing was registered (the comparison "
            f"is recorded in parent run {parent.run_id})"
        ) from None
    outcome = RegistryOutcome(
        name=name,
        decision=decision,
        message=describe(name, decision, version, candidate, champion),
        version=version,
        champion_version=version if moves or champion is None else champion.version,
        candidate_val=candidate.val_score,
        champion_val_before=before,
        model=candidate.model,
        rank_metric=metric,
    )
    return _recorded(tracker, parent, outcome)


def _recorded(tracker: Tracker, parent: RunRef, outcome: RegistryOutcome) -> RegistryOutcome:
    """Log ``outcome`` on the parent run, and return it."""
    tags: dict[str, Any] = {
        "seqlab.registry.decision": outcome.decision,
        "seqlab.registry.name": outcome.name,
        "seqlab.registry.message": outcome.message,
        "seqlab.registry.rank_metric": outcome.rank_metric,
    }
    for key, value in (
        ("version", outcome.version),
        ("champion", outcome.champion_version),
        ("model", outcome.model),
    ):
        if value is not None:
            tags[f"seqlab.registry.{key}"] = value
    figures = outcome.figures()
    try:
        tracker.set_tags(parent, tags)
        tracker.log_metrics(parent, {k: v for k, v in figures.items() if v is not None})
    except Exception as err:
        raise RegistryError(
            f"{outcome.message}; but the decision could not be recorded on parent run "
            f"{parent.run_id}: {describe_error(err)[:300]}"
        ) from None
    return outcome
