"""The compare flow: vectorize once, then train and evaluate every selected plugin on
the same data, one child run each under one MLflow parent run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from prefect import flow
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.tasks import (
    clean_task,
    evaluate_task,
    ingest_task,
    start_comparison_task,
    train_task,
    vectorize_task,
)
from pipeline_core import experiment
from pipeline_core.config import RunConfig
from pipeline_core.experiment import ModelResult
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


def flow_run_tags() -> dict[str, str]:
    from prefect.runtime import flow_run

    return {"prefect.flow_run_id": str(flow_run.id or ""), "prefect.flow_name": "compare"}


SEQUENTIAL: TaskRunner[Any] = ThreadPoolTaskRunner(max_workers=1)


@flow(name="compare", task_runner=SEQUENTIAL, log_prints=False)
def compare_flow(config: RunConfig) -> ComparisonResult:
    """ingest -> clean -> vectorize -> (train -> evaluate) per model -> leaderboard."""
    uri = resolve_tracking_uri(config.tracking.tracking_uri)
    resolved = experiment.resolve_models(config.models)  # fail before any run starts
    docs = clean_task(ingest_task(config.data), config.data)
    corpus = vectorize_task(docs, config.data)
    tags = flow_run_tags()
    parent: RunRef = start_comparison_task(config, corpus, uri, tags)
    futures = []
    for item in resolved:
        trained = train_task.submit(item, corpus, config.train, uri, parent, tags)
        # Prefect resolves the future ``trained`` into its result before evaluate runs
        futures.append(
            evaluate_task.submit(  # type: ignore[call-overload]
                trained, corpus, uri, config.tracking, config.train.seed
            )
        )
    results: list[ModelResult] = []
    try:
        for future in futures:
            results.append(future.result())
    except BaseException:
        experiment.finish_comparison(get_tracker(uri), parent, results, failed=True)
        raise
    table = experiment.finish_comparison(get_tracker(uri), parent, results)
    return ComparisonResult(
        parent_run_id=parent.run_id,
        experiment=experiment.experiment_name(config.data, config.tracking),
        tracking_uri=uri,
        leaderboard=table,
        results=results,
        entropy_rate_bits=experiment.source_entropy_bits(config.data),
    )
