"""What a sweep records and decides outside its flow: the parent run (config, space,
best trial), each trial's outcome told to the study, the check that every end of every
range trains on the corpus, and the one-line trial summary. The flow (:mod:`flows.sweep`)
only wires these to Prefect tasks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from pipeline_core import experiment
from pipeline_core.config import RunConfig
from pipeline_core.errors import DataError
from pipeline_core.sweep_space import SweepConfig, apply
from pipeline_core.sweep_trial import COMPLETE, FAILED, PRUNED, TrialOutcome, TrialSpec
from pipeline_core.tasks import Task
from pipeline_core.tracking import RunRef, Tracker
from pipeline_core.vectorize import EncodedCorpus


@dataclass(frozen=True)
class SweepResult:
    """What ``seqlab sweep`` prints."""

    parent_run_id: str
    experiment: str
    tracking_uri: str
    metric: str
    outcomes: list[TrialOutcome]

    @property
    def best(self) -> TrialOutcome | None:
        done = [o for o in self.outcomes if o.state == COMPLETE and o.value is not None]
        return min(done, key=lambda o: (o.value, o.number)) if done else None


def check_ends_fit(config: RunConfig, sweep: SweepConfig, corpus: EncodedCorpus, t: Task) -> None:
    """Every end of every range trains on this corpus (e.g. a batch_size the train split
    cannot fill), before any trial runs."""
    for path, dist in sweep.space.items():
        for value in dist.ends():
            trial = apply(config, {path: value})
            resolved = experiment.resolve_models(trial.models, t, trial.train)
            try:
                experiment.check_fits(resolved, corpus, t)
            except DataError as err:
                raise DataError(f"sweep.space.{path}: the value {value!r}: {err}") from None


def start_sweep(
    config: RunConfig,
    tracker: Tracker,
    corpus: EncodedCorpus,
    tags: dict[str, str],
    trials: int,
    metric: str,
) -> RunRef:
    """The parent run: the config as params, the space and trial count as tags."""
    sweep = config.sweep or SweepConfig()
    space = {p: d.model_dump(exclude_defaults=True) for p, d in sweep.space.items()}
    parent = tracker.start_run(
        f"sweep {experiment.dataset_name(config.data.source)}",
        experiment.experiment_name(config.data, config.tracking, config.task),
        tags={
            **tags,
            "seqlab.kind": "sweep",
            "seqlab.task": config.task,
            "seqlab.data_sha256": corpus.text_sha256,
            "seqlab.trials": str(trials),
            "seqlab.metric": metric,
            "seqlab.space": json.dumps(space)[:5000],
            **experiment.process_tags(),
        },
    )
    tracker.log_params(parent, config.model_dump(mode="json"))
    tracker.log_dict(parent, config.model_dump(mode="json"), experiment.CONFIG_ARTIFACT)
    return parent


def finish_sweep(tracker: Tracker, parent: RunRef, result: SweepResult) -> None:
    """The best trial (by its validation figure) and every trial's outcome on the
    parent, which ends FAILED only when no trial completed."""
    outcomes = result.outcomes
    counts = {s: sum(o.state == s for o in outcomes) for s in (COMPLETE, PRUNED, FAILED)}
    tracker.log_metrics(parent, {f"trials_{s.lower()}": n for s, n in counts.items()})
    tracker.log_dict(parent, {"trials": [asdict(o) for o in outcomes]}, "sweep.json")
    best = result.best
    if best is None:
        tracker.set_tags(parent, {"seqlab.error": "no trial completed"})
        tracker.end(parent, failed=True)
        return
    tracker.log_metrics(
        parent, {f"best_{result.metric}": float(best.value or 0), "best_trial": best.number}
    )
    tracker.set_tags(
        parent,
        {
            "seqlab.best_trial": str(best.number),
            "seqlab.best_params": json.dumps(best.values, default=str)[:5000],
            "seqlab.best_run_id": best.run_id,
        },
    )
    tracker.end(parent)


def failed_outcome(spec: TrialSpec, err: BaseException) -> TrialOutcome:
    from pipeline_core.tracking import describe_error

    return TrialOutcome(spec.number, spec.values, FAILED, error=describe_error(err))


def tell(study: Any, outcome: TrialOutcome) -> None:
    from optuna.trial import TrialState

    if outcome.state == COMPLETE:
        study.tell(outcome.number, outcome.value)
    else:
        state = TrialState.PRUNED if outcome.state == PRUNED else TrialState.FAIL
        study.tell(outcome.number, state=state)


def trial_line(outcome: TrialOutcome, metric: str, trials: int) -> str:
    values = ", ".join(f"{k}={format_value(v)}" for k, v in outcome.values.items())
    figure = f"{metric} {outcome.value:.4f}" if outcome.value is not None else outcome.error
    return f"trial {outcome.number + 1}/{trials} {outcome.state.lower()}: {figure} ({values})"


def format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
