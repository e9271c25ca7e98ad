"""The compare flow: vectorize once, then train and evaluate every selected plugin on
the same data, one child run each under one MLflow parent run.

The flow waits for every model: one model's failure fails its own run and becomes a
failed leaderboard row with its reason; the others go on. ``resume`` continues a killed
comparison in its own parent run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from prefect import flow
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.tasks import (
    clean_task,
    evaluate_task,
    ingest_task,
    start_comparison_task,
    train_task,
    vectorize_task,
)
from pipeline_core import experiment, interrupt
from pipeline_core.champion import RegistryOutcome, register_best
from pipeline_core.config import RunConfig
from pipeline_core.experiment import ModelResult, ResolvedModel
from pipeline_core.tracking import RunRef, get_tracker, resolve_tracking_uri


@dataclass(frozen=True)
class ComparisonResult:
    """What ``seqlab run`` prints: the leaderboard and where MLflow holds the runs."""

    parent_run_id: str
    experiment: str
    tracking_uri: str
    leaderboard: pd.DataFrame
    results: list[ModelResult]
    entropy_rate_bits: float | None = None
    resumed: list[str] = field(default_factory=list)
    task: str = "next-token"
    notes: list[str] = field(default_factory=list)
    #: what the model registry did (pipeline_core.champion); None: not asked
    registry: RegistryOutcome | None = None

    @property
    def failures(self) -> list[ModelResult]:
        return [r for r in self.results if r.failed]


def flow_run_tags() -> dict[str, str]:
    from prefect.runtime import flow_run

    return {"prefect.flow_run_id": str(flow_run.id or ""), "prefect.flow_name": "compare"}


SEQUENTIAL: TaskRunner[Any] = ThreadPoolTaskRunner(max_workers=1)


def collect(
    resolved: ResolvedModel, trained: PrefectFuture[Any], evaluated: PrefectFuture[Any]
) -> ModelResult:
    """The model's result, or its failure (from training first, else evaluation)."""
    for future in (trained, evaluated):
        future.wait()
        if future.state.is_completed() and future is evaluated:
            return future.result()
        if future.state.is_failed() or future.state.is_crashed():
            err = future.result(raise_on_failure=False)
            if not isinstance(err, BaseException):
                err = RuntimeError(str(future.state.message))
            return experiment.failed_result(resolved, err, getattr(err, "seqlab_run_id", ""))
    message = f"task ended in state {evaluated.state.type.value}"
    return experiment.failed_result(resolved, RuntimeError(message))


@flow(name="compare", task_runner=SEQUENTIAL, log_prints=False)
def compare_flow(config: RunConfig, resume: str | None = None) -> ComparisonResult:
    """ingest -> clean -> vectorize -> (train -> evaluate) per model -> leaderboard."""
    from pipeline_core.resume import check_data, plan_resume

    uri = resolve_tracking_uri(config.tracking.tracking_uri)
    tracker = get_tracker(uri)
    # fail before any run starts: unknown task or plugin, a bad config, a bad resume
    the_task = experiment.make_task(config)
    resolved = experiment.resolve_models(config.models, the_task, config.train)
    plan = plan_resume(tracker, resume, config) if resume else None
    docs = clean_task(ingest_task(config.data), config.data)
    corpus = vectorize_task(
        docs, config.data, config.execution.refresh, the_task.scores_token_stream
    )
    # batches the data cannot fill, a step past the train split: refused before any run
    experiment.check_fits(resolved, corpus, the_task)
    tags = flow_run_tags()
    if plan is not None and resume is not None:
        check_data(plan, resume, corpus.text_sha256)
        parent: RunRef = plan.parent
        tracker.reopen(parent)
        tracker.set_tags(parent, experiment.process_tags())
    else:
        parent = start_comparison_task(config, corpus, uri, tags)
    results: dict[str, ModelResult] = dict(plan.finished) if plan else {}
    pending = []
    # Ctrl-C or SIGTERM: the parent ends KILLED, each running model stops at its next
    # batch and ends KILLED too (pipeline_core.interrupt), the rest never start
    with tracker.run(parent, close=False), interrupt.stopping_workers():
        for item in resolved:
            if item.label in results:
                continue
            resume_run = plan.unfinished.get(item.label) if plan else None
            trained = train_task.submit(
                item, corpus, the_task, uri, parent, tags, resume_run, config.tracking
            )
            # Prefect resolves the future ``trained`` into its result before evaluate runs
            evaluated = evaluate_task.submit(  # type: ignore[call-overload]
                trained, corpus, the_task, uri, config.tracking, config.train.seed
            )
            pending.append((item, trained, evaluated))
        for item, trained, evaluated in pending:
            results[item.label] = collect(item, trained, evaluated)
        ordered = [results[item.label] for item in resolved]
        table, notes = experiment.finish_comparison(tracker, parent, ordered, the_task, corpus)
    registry = register_best(config, tracker, parent, ordered, corpus.text_sha256)
    return ComparisonResult(
        parent_run_id=parent.run_id,
        experiment=experiment.experiment_name(config.data, config.tracking, config.task),
        tracking_uri=uri,
        leaderboard=table,
        results=ordered,
        entropy_rate_bits=experiment.source_entropy_bits(config.data),
        resumed=sorted(plan.finished) if plan else [],
        task=config.task,
        notes=notes,
        registry=registry,
    )


def run_comparison(config: RunConfig, resume: str | None = None) -> ComparisonResult:
    """The compare flow on the task runner ``config.execution.runner`` names
    (:mod:`flows.runners`): sequential as ``compare_flow`` itself; threads or Dask with
    one torch thread per model. A Dask run without ``PREFECT_API_URL`` gets a temporary
    Prefect server on 127.0.0.1 for its duration, which its workers report to."""
    import contextlib

    from flows.runners import (
        check_execution,
        dask_settings,
        kill_orphaned_model_runs,
        parallel_config,
        task_runner_for,
    )
    from flows.server import prefect_api
    from pipeline_core.training import torch_threads

    runner = config.execution.runner
    if runner == "sequential":
        return compare_flow(config, resume)
    check_execution(config)  # an unreachable dask_address: one line, before any run
    config = parallel_config(config)
    parallel_flow = compare_flow.with_options(task_runner=task_runner_for(config))
    if runner == "dask":
        with prefect_api(), dask_settings():  # workers cannot share an ephemeral server
            try:
                return parallel_flow(config, resume)
            except BaseException as err:
                if not isinstance(err, Exception):  # Ctrl-C, SIGTERM: workers stopped too
                    with contextlib.suppress(Exception):  # the interrupt must go on
                        kill_orphaned_model_runs(config)
                raise
    # threads share this process's torch: one thread, for evaluation too
    with torch_threads(config.train.num_threads):
        return parallel_flow(config, resume)
