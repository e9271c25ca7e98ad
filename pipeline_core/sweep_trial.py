"""One trial of a sweep, and the Optuna study the trials share.

The study lives in a SQLite file (Optuna's RDB storage) so that a trial running in
another process (a Dask worker) can report each epoch's validation figure for its own
trial and ask whether to stop: :func:`open_trial` loads the study by name and takes the
trial the driver asked for by its id. The driver alone asks (samples) and tells.

A trial trains in its own MLflow child run exactly as a comparison's model does (the
same per-epoch figures), is scored on the validation split only (never test), and ends
with the tag ``seqlab.trial_state``: COMPLETE, PRUNED (stopped by the pruner after an
epoch; its run is FINISHED with the epochs it ran) or FAILED (its run FAILED, with why).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline_core.contract import EpochRecord
from pipeline_core.sweep_space import SweepConfig
from pipeline_core.tracking import RunRef, Tracker, describe_error
from pipeline_core.training import Callback, Trainer

if TYPE_CHECKING:
    import optuna

    from pipeline_core.experiment import ResolvedModel
    from pipeline_core.tasks import Task
    from pipeline_core.vectorize import EncodedCorpus

COMPLETE, PRUNED, FAILED = "COMPLETE", "PRUNED", "FAILED"
STATE_TAG = "seqlab.trial_state"


@dataclass(frozen=True)
class StudyRef:
    """What a worker needs to reach the study: storage URL, name, pruner settings."""

    storage: str
    name: str
    sweep: SweepConfig


@dataclass(frozen=True)
class TrialSpec:
    """A trial as the driver asked it: optuna's number and id, and its values."""

    number: int
    trial_id: int
    values: dict[str, Any]


@dataclass
class TrialOutcome:
    """What the driver tells the study and prints."""

    number: int
    values: dict[str, Any]
    state: str
    value: float | None = None
    run_id: str = ""
    epochs: int = 0
    pid: int = 0
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


def quiet_optuna() -> None:
    """Optuna's per-trial INFO lines and experimental-feature warnings off the terminal:
    the sweep prints its own line per trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("optuna").setLevel(logging.WARNING)


def storage(url: str) -> optuna.storages.RDBStorage:
    """The study's SQLite storage, waiting (not failing) while another process writes."""
    import optuna

    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


def make_pruner(sweep: SweepConfig) -> optuna.pruners.BasePruner:
    import optuna

    if sweep.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=sweep.startup_trials, n_warmup_steps=sweep.warmup_epochs
    )


def make_sampler(sweep: SweepConfig) -> optuna.samplers.BaseSampler:
    import optuna

    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=sweep.seed)
    return optuna.samplers.TPESampler(seed=sweep.seed)


def create_study(ref: StudyRef) -> optuna.Study:
    import optuna

    quiet_optuna()
    return optuna.create_study(
        storage=storage(ref.storage),
        study_name=ref.name,
        direction="minimize",
        sampler=make_sampler(ref.sweep),
        pruner=make_pruner(ref.sweep),
    )


def open_trial(ref: StudyRef, trial_id: int) -> optuna.Trial:
    """The running trial ``trial_id`` of the study, from any process (the pruner is not
    stored with the study: it is made again from the sweep settings)."""
    import optuna

    quiet_optuna()
    study = optuna.load_study(
        study_name=ref.name, storage=storage(ref.storage), pruner=make_pruner(ref.sweep)
    )
    return optuna.trial.Trial(study, trial_id)


class PruneOnEpoch(Callback):
    """After each epoch: report its validation figure (``metric`` where it is a
    per-epoch figure, else ``val_nll``) to the trial, and stop training by
    ``optuna.TrialPruned`` when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str, val_tokens_per_char: float) -> None:
        self.trial, self.metric, self.ratio = trial, metric, val_tokens_per_char
        self.reported: list[tuple[int, float]] = []

    def on_epoch_end(self, trainer: Trainer | None, record: EpochRecord) -> None:
        import optuna

        from pipeline_core.callbacks import epoch_metrics

        figures = epoch_metrics(record, self.ratio)
        value = float(figures.get(self.metric, figures["val_nll"]))
        self.trial.report(value, record.epoch)
        self.reported.append((record.epoch, value))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {record.epoch} ({value:.4f})")


def trial_tags(spec: TrialSpec, tags: dict[str, str]) -> dict[str, str]:
    return {**tags, "seqlab.kind": "trial", "seqlab.trial": str(spec.number)}


def run_trial(
    spec: TrialSpec,
    resolved: ResolvedModel,
    corpus: EncodedCorpus,
    task: Task,
    tracker: Tracker,
    parent: RunRef,
    tags: dict[str, str],
    study: StudyRef,
    metric: str,
) -> TrialOutcome:
    """Train one trial in its child run and score it on val; a failure is an outcome
    (its run FAILED with the reason), an interrupt goes on (the run KILLED)."""
    import optuna

    from pipeline_core.callbacks import MlflowMetrics
    from pipeline_core.experiment import (
        carries_state,
        check_fits,
        fit_data,
        start_model_run,
    )
    from pipeline_core.interrupt import raise_if_stopped
    from pipeline_core.training import fit_model

    raise_if_stopped()  # Ctrl-C while this trial waited its turn: it never starts
    outcome = TrialOutcome(spec.number, spec.values, FAILED, pid=os.getpid())
    run = start_model_run(resolved, corpus, tracker, parent, trial_tags(spec, tags))
    outcome.run_id = run.run_id
    tracker.set_tags(
        run, {"seqlab.pid": str(os.getpid()), "mlflow.runName": f"trial-{spec.number}"}
    )
    tracker.log_params(run, {"trial": spec.values})
    try:
        with tracker.run(run):
            task.prepare(corpus)
            check_fits([resolved], corpus, task)
            trial = open_trial(study, spec.trial_id)
            ratio = task.tokens_per_char(corpus, "val")
            pruning = PruneOnEpoch(trial, metric, ratio)
            carry = carries_state(resolved)
            model = resolved.plugin_cls.create(
                len(corpus.vocab), resolved.config, seed=resolved.train.seed
            )
            started = time.perf_counter()
            try:
                history = fit_model(
                    model,
                    fit_data(corpus),
                    resolved.train,
                    task=task,
                    callbacks=[MlflowMetrics(tracker, run, ratio), pruning],
                    validate=lambda m: task.score(m, corpus, "val", carry).nll,
                )
            except optuna.TrialPruned:
                epoch, value = pruning.reported[-1]
                outcome.state, outcome.value, outcome.epochs = PRUNED, value, epoch
                tracker.log_metrics(run, {"train_seconds": time.perf_counter() - started})
                tracker.set_tags(run, {STATE_TAG: PRUNED})
                return outcome
            tracker.log_metrics(run, {"train_seconds": time.perf_counter() - started})
            scores = task.score(model, corpus, "val", carry)
            figures = scores.as_metrics("val")
            if metric not in figures:
                raise ValueError(f"the val scores hold no {metric}")
            outcome.metrics, outcome.epochs = figures, len(history)
            outcome.state, outcome.value = COMPLETE, figures[metric]
            tracker.log_metrics(run, {**figures, "trial_value": figures[metric]}, step=len(history))
            tracker.set_tags(run, {STATE_TAG: COMPLETE})
    except Exception as err:  # the run is FAILED with its reason by tracker.run
        tracker.set_tags(run, {STATE_TAG: FAILED})
        outcome.state, outcome.error = FAILED, describe_error(err)
    return outcome
