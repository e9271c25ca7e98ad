"""The sweep flow: Optuna over the config's ``sweep.space``, one trial a Prefect task and
an MLflow child run under one ``sweep <dataset>`` parent run.

The flow is the driver: it vectorizes once, asks the study for as many trials as can
run at once (one on the sequential runner, ``execution.dask_workers`` on Dask), submits
each as a task, and tells the study each result as it finishes, then asks for the next.
Trials are scored on the validation split only; the parent run holds the best trial's
number, values and figure. The study is a SQLite file in a temporary folder of this
machine, which the trials (in Dask worker processes too) open to report each epoch and
ask whether to stop (:mod:`pipeline_core.sweep_trial`).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.tasks import clean_task, ingest_task, vectorize_task
from pipeline_core import experiment, interrupt
from pipeline_core.config import RunConfig
from pipeline_core.errors import ConfigError, DataError, SeqlabError
from pipeline_core.sweep_space import SweepConfig, apply, check_sweep, suggest, sweep_metric
from pipeline_core.sweep_trial import (
    COMPLETE,
    FAILED,
    PRUNED,
    StudyRef,
    TrialOutcome,
    TrialSpec,
    create_study,
    run_trial,
)
from pipeline_core.tasks import Task
from pipeline_core.tracking import RunRef, Tracker, get_tracker, resolve_tracking_uri
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


def flow_run_tags() -> dict[str, str]:
    from prefect.runtime import flow_run

    return {"prefect.flow_run_id": str(flow_run.id or ""), "prefect.flow_name": "sweep"}


@task(name="sweep-trial", cache_policy=NO_CACHE, task_run_name="trial-{spec.number}")
def sweep_trial_task(
    spec: TrialSpec,
    resolved: experiment.ResolvedModel,
    corpus: EncodedCorpus,
    the_task: Task,
    tracking_uri: str,
    parent: RunRef,
    tags: dict[str, str],
    study: StudyRef,
    metric: str,
) -> TrialOutcome:
    tracker = get_tracker(tracking_uri)
    return run_trial(spec, resolved, corpus, the_task, tracker, parent, tags, study, metric)


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


def outcome_of(future: PrefectFuture[Any], spec: TrialSpec) -> TrialOutcome:
    """The trial's outcome; a task that crashed (a worker died) is a failed trial."""
    future.wait()  # a done callback may come before the future holds its final state
    result = future.result(raise_on_failure=False)
    if isinstance(result, TrialOutcome):
        return result
    if not isinstance(result, BaseException):
        result = RuntimeError(str(future.state.message))
    return failed_outcome(spec, result)


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


SEQUENTIAL: TaskRunner[Any] = ThreadPoolTaskRunner(max_workers=1)


@flow(name="sweep", task_runner=SEQUENTIAL, log_prints=False)
def sweep_flow(
    config: RunConfig, trials: int, storage: str, width: int = 1, echo: bool = True
) -> SweepResult:
    """ingest -> clean -> vectorize -> trials (``width`` at a time) -> best trial."""
    uri = resolve_tracking_uri(config.tracking.tracking_uri)
    tracker = get_tracker(uri)
    sweep = check_sweep(config)
    the_task = experiment.make_task(config)
    metric = sweep_metric(sweep, the_task)
    docs = clean_task(ingest_task(config.data), config.data)
    corpus = vectorize_task(
        docs, config.data, config.execution.refresh, the_task.scores_token_stream
    )
    check_ends_fit(config, sweep, corpus, the_task)
    ref = StudyRef(storage, f"sweep-{uuid.uuid4().hex[:12]}", sweep)
    study = create_study(ref)
    tags = flow_run_tags()
    parent = start_sweep(config, tracker, corpus, tags, trials, metric)
    outcomes: list[TrialOutcome] = []
    pending: dict[PrefectFuture[Any], TrialSpec] = {}
    asked = 0
    with tracker.run(parent, close=False), interrupt.stopping_workers():
        while asked < trials or pending:
            while asked < trials and len(pending) < width:
                trial = study.ask()
                spec = TrialSpec(trial.number, trial._trial_id, suggest(trial, sweep.space))
                asked += 1
                try:
                    trial_config = apply(config, spec.values)
                    (resolved,) = experiment.resolve_models(
                        trial_config.models, the_task, trial_config.train
                    )
                except SeqlabError as err:  # a combination of values the config refuses
                    outcome = failed_outcome(spec, err)  # no run: nothing was trained
                    tell(study, outcome)
                    outcomes.append(outcome)
                    if echo:
                        print(trial_line(outcome, metric, trials), flush=True)
                    continue
                future = sweep_trial_task.submit(
                    spec, resolved, corpus, the_task, uri, parent, tags, ref, metric
                )
                pending[future] = spec
            if not pending:
                continue
            done = next(iter(as_completed(list(pending))))
            outcome = outcome_of(done, pending.pop(done))
            tell(study, outcome)
            outcomes.append(outcome)
            if echo:
                print(trial_line(outcome, metric, trials), flush=True)
        outcomes.sort(key=lambda o: o.number)
        result = SweepResult(
            parent.run_id,
            experiment.experiment_name(config.data, config.tracking, config.task),
            uri,
            metric,
            outcomes,
        )
        finish_sweep(tracker, parent, result)
    return result


def kill_running_trials(config: RunConfig) -> None:
    """After Ctrl-C on Dask: trial runs of this process's sweeps left RUNNING by the
    workers killed on the way out, marked KILLED (the parent is KILLED by the flow)."""
    from pipeline_core.runs import process_tags

    tracker = get_tracker(config.tracking.tracking_uri)
    found = tracker.client.get_experiment_by_name(
        experiment.experiment_name(config.data, config.tracking, config.task)
    )
    if found is None:
        return
    mine = " and ".join(f"tags.`{k}` = '{v}'" for k, v in process_tags().items())
    parents = tracker.client.search_runs(
        [found.experiment_id], filter_string=f"tags.`seqlab.kind` = 'sweep' and {mine}"
    )
    for parent in parents:
        for child in tracker.child_runs(RunRef(parent.info.run_id, found.experiment_id)):
            if child.info.status == "RUNNING":
                tracker.kill(RunRef(child.info.run_id, found.experiment_id))


def check_runner(config: RunConfig) -> None:
    """Before anything starts: sequential or dask, and a scheduler on this host (the
    study is a file in a temporary folder here, which the workers open)."""
    from flows.runners import address_host, is_loopback

    runner = config.execution.runner
    if runner == "threads":
        raise ConfigError("--runner: a sweep runs sequential or dask (got threads)")
    address = config.execution.dask_address
    if runner == "dask" and address and not is_loopback(address_host(address)):
        raise ConfigError(
            f"--dask-address {address}: a sweep's study is a file on this machine; its "
            "trials run on a scheduler here (127.0.0.1) or on a LocalCluster"
        )


def run_sweep(config: RunConfig, trials: int, echo: bool = True) -> SweepResult:
    """The sweep flow on the runner ``config.execution.runner`` names: sequential (one
    trial at a time, in this process) or dask (``execution.dask_workers`` trials at once,
    each a task on a worker process, one torch thread each; see :mod:`flows.runners`).
    The trials' own progress bars are off: the flow prints a line per finished trial."""
    from flows.runners import check_execution, dask_settings, parallel_config, task_runner_for
    from flows.server import prefect_api

    if trials < 1:
        raise ConfigError(f"--trials: must be at least 1 (got {trials})")
    check_runner(config)
    runner = config.execution.runner
    config = config.model_copy(
        update={"train": config.train.model_copy(update={"progress": False})}
    )
    with tempfile.TemporaryDirectory(prefix="seqlab-sweep-") as tmp:
        storage = f"sqlite:///{Path(tmp) / 'study.db'}"
        if runner == "sequential":
            return sweep_flow(config, trials, storage, 1, echo)
        check_execution(config)
        config = parallel_config(config)
        parallel_flow = sweep_flow.with_options(task_runner=task_runner_for(config))
        with prefect_api(), dask_settings():
            try:
                return parallel_flow(config, trials, storage, config.execution.dask_workers, echo)
            except BaseException as err:
                if not isinstance(err, Exception):  # Ctrl-C, SIGTERM: workers stopped too
                    with contextlib.suppress(Exception):
                        kill_running_trials(config)
                raise
