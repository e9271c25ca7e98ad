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
import tempfile
import uuid
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.tasks import clean_task, ingest_task, vectorize_task
from pipeline_core import experiment, interrupt
from pipeline_core.config import RunConfig
from pipeline_core.errors import ConfigError, SeqlabError
from pipeline_core.sweep_record import (
    SweepResult,
    check_ends_fit,
    failed_outcome,
    finish_sweep,
    start_sweep,
    tell,
    trial_line,
)
from pipeline_core.sweep_space import apply, check_sweep, suggest, sweep_metric
from pipeline_core.sweep_trial import (
    StudyRef,
    TrialOutcome,
    TrialSpec,
    create_study,
    run_trial,
)
from pipeline_core.tasks import Task
from pipeline_core.tracking import RunRef, get_tracker, resolve_tracking_uri
from pipeline_core.vectorize import EncodedCorpus


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


def outcome_of(future: PrefectFuture[Any], spec: TrialSpec) -> TrialOutcome:
    """The trial's outcome; a task that crashed (a worker died) is a failed trial."""
    future.wait()  # a done callback may come before the future holds its final state
    result = future.result(raise_on_failure=False)
    if isinstance(result, TrialOutcome):
        return result
    if not isinstance(result, BaseException):
        result = RuntimeError(str(future.state.message))
    return failed_outcome(spec, result)


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
