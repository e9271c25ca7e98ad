"""The model registry after a comparison: register the best model, move ``champion``
only when it is earned.

The best finished plugin model of a comparison (never a baseline row) by validation
bpc is registered as a new version of ``registry.name`` (default ``seqlab-<dataset>``),
tagged with its data sha256, task, val bpc, plugin and parent run. The ``champion``
alias moves to it only when there is no champion yet, or when the champion was trained
on the same data (sha256) for the same task and the new val bpc is strictly lower. A
champion trained on other data, for another task, or with no such record, is never
replaced silently: the version is registered, the alias stays, and the decision says
why. :func:`decide` is the pure rule; :func:`register_best` performs it through
:mod:`pipeline_core.tracking` and records the decision on the parent run.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
#: tags every registered version carries (the champion rule reads the first three)
TAG_DATA = "seqlab.data_sha256"
TAG_TASK = "seqlab.task"
TAG_VAL_BPC = "seqlab.val_bpc"
TAG_PLUGIN = "seqlab.plugin"
TAG_PARENT = "seqlab.parent_run_id"
TAG_MODEL = "seqlab.model"

#: the champion rule's verdicts (:func:`decide`)
Decision = Literal["first", "better", "kept", "other-data", "other-task", "unrecorded"]
MOVES_ALIAS: frozenset[str] = frozenset({"first", "better"})
#: what a comparison's registry step can end in besides a verdict
DISABLED, NO_CANDIDATE, ALREADY = "disabled", "no-candidate", "already-registered"


class RegistryError(SeqlabError):
    """Registering the best model failed; nothing was left half-registered."""


@dataclass(frozen=True)
class Candidate:
    """The model a comparison offers the registry."""

    model: str
    plugin: str
    run_id: str
    val_bpc: float
    data_sha256: str
    task: str
    parent_run_id: str

    def tags(self) -> dict[str, str]:
        return {
            TAG_DATA: self.data_sha256,
            TAG_TASK: self.task,
            TAG_VAL_BPC: repr(float(self.val_bpc)),
            TAG_PLUGIN: self.plugin,
            TAG_PARENT: self.parent_run_id,
            TAG_MODEL: self.model,
        }


@dataclass(frozen=True)
class Champion:
    """The version the alias names now, with what its tags record (None: not recorded)."""

    version: str
    val_bpc: float | None = None
    data_sha256: str | None = None
    task: str | None = None

    @classmethod
    def from_tags(cls, version: str, tags: Mapping[str, str] | None) -> Champion:
        tags = dict(tags or {})
        try:
            bpc: float | None = float(tags[TAG_VAL_BPC])
        except (KeyError, ValueError):
            bpc = None
        if bpc is not None and not math.isfinite(bpc):
            bpc = None
        return cls(str(version), bpc, tags.get(TAG_DATA) or None, tags.get(TAG_TASK) or None)


def decide(candidate: Candidate, champion: Champion | None) -> Decision:
    """The champion rule (pure): ``first`` or ``better`` move the alias; ``kept``,
    ``other-data``, ``other-task`` and ``unrecorded`` leave it where it is."""
    if champion is None:
        return "first"
    if champion.data_sha256 is None or champion.task is None:
        return "unrecorded"
    if champion.data_sha256 != candidate.data_sha256:
        return "other-data"
    if champion.task != candidate.task:
        return "other-task"
    if champion.val_bpc is None:
        return "unrecorded"
    return "better" if candidate.val_bpc < champion.val_bpc else "kept"


def describe(
    name: str, decision: Decision, version: str, candidate: Candidate, champion: Champion | None
) -> str:
    """The one line ``seqlab run`` prints under the leaderboard (pure)."""
    new = f"{name} version {version} ({candidate.model})"
    bpc = candidate.val_bpc
    if decision == "first" or champion is None:
        return f"registry: {new} is the new champion (no champion before; val bpc {bpc:.4f})"
    old = champion.version
    untouched = f"registered version {version} ({candidate.model}) without moving the alias"
    if decision == "better":
        return (
            f"registry: {new} is the new champion (val bpc {bpc:.4f} < {champion.val_bpc:.4f}"
            f" of version {old})"
        )
    if decision == "kept":
        return (
            f"registry: {new} registered; kept version {old} as champion (its val bpc "
            f"{champion.val_bpc:.4f} <= {bpc:.4f})"
        )
    if decision == "other-data":
        sha = (champion.data_sha256 or "")[:12]
        return (
            f"registry: {name} champion version {old} was trained on other data (sha256 "
            f"{sha}…, this comparison's is {candidate.data_sha256[:12]}…); {untouched}"
        )
    if decision == "other-task":
        return (
            f"registry: {name} champion version {old} was trained for another task "
            f"({champion.task}, not {candidate.task}); {untouched}"
        )
    return (
        f"registry: {name} champion version {old} records no data sha256, task or val bpc "
        f"(not registered by seqlab?); {untouched}"
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
    candidate_val_bpc: float | None = None
    champion_val_bpc_before: float | None = None
    model: str | None = None

    @property
    def moved_alias(self) -> bool:
        return self.decision in MOVES_ALIAS


def pick_candidate(results: Sequence[ModelResult]) -> ModelResult | None:
    """The finished plugin model with the lowest finite validation bpc (the first of
    equals); baseline rows and failed models never qualify."""
    from pipeline_core.experiment import BASELINE

    best: ModelResult | None = None
    best_bpc = math.inf
    for r in results:
        if r.failed or r.plugin == BASELINE or r.val_scores is None:
            continue
        bpc = float(r.val_scores.bpc)
        if math.isfinite(bpc) and (best is None or bpc < best_bpc):
            best, best_bpc = r, bpc
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
    """Register the comparison's best model and apply the champion rule; record the
    decision on ``parent`` (tags ``seqlab.registry.*``, metrics ``candidate_val_bpc``
    and ``champion_val_bpc_before``). A failure is one :class:`RegistryError` line and
    leaves no version behind."""
    name = registry_name(config)
    if not config.registry.enabled:
        outcome = RegistryOutcome(name, DISABLED, "registry: nothing registered (--no-register)")
        return _recorded(tracker, parent, outcome)
    best = pick_candidate(results)
    if best is None or best.val_scores is None:
        message = "registry: nothing registered (no finished model has a validation bpc)"
        return _recorded(tracker, parent, RegistryOutcome(name, NO_CANDIDATE, message))
    candidate = Candidate(
        model=best.label,
        plugin=best.plugin,
        run_id=best.run_id,
        val_bpc=float(best.val_scores.bpc),
        data_sha256=data_sha256,
        task=config.task,
        parent_run_id=parent.run_id,
    )
    uri = tracker.uri
    try:
        current = model_version_by_alias(name, ALIAS, uri)
        champion = None if current is None else Champion.from_tags(current.version, current.tags)
        before = None if champion is None else champion.val_bpc
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
                candidate_val_bpc=candidate.val_bpc,
                champion_val_bpc_before=before,
                model=candidate.model,
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
        candidate_val_bpc=candidate.val_bpc,
        champion_val_bpc_before=before,
        model=candidate.model,
    )
    return _recorded(tracker, parent, outcome)


def _recorded(tracker: Tracker, parent: RunRef, outcome: RegistryOutcome) -> RegistryOutcome:
    """Log ``outcome`` on the parent run, and return it."""
    tags: dict[str, Any] = {
        "seqlab.registry.decision": outcome.decision,
        "seqlab.registry.name": outcome.name,
        "seqlab.registry.message": outcome.message,
    }
    for key, value in (
        ("version", outcome.version),
        ("champion", outcome.champion_version),
        ("model", outcome.model),
    ):
        if value is not None:
            tags[f"seqlab.registry.{key}"] = value
    figures = {
        "candidate_val_bpc": outcome.candidate_val_bpc,
        "champion_val_bpc_before": outcome.champion_val_bpc_before,
    }
    try:
        tracker.set_tags(parent, tags)
        tracker.log_metrics(parent, {k: v for k, v in figures.items() if v is not None})
    except Exception as err:
        raise RegistryError(
            f"{outcome.message}; but the decision could not be recorded on parent run "
            f"{parent.run_id}: {describe_error(err)[:300]}"
        ) from None
    return outcome
