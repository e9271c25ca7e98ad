"""One Prefect task per stage, each a thin call into :mod:`pipeline_core.experiment`.

Tasks receive plain values (configs, a tracking URI, run references), never clients, so
any task runner (threads today, Dask processes tomorrow) can ship them.
"""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from pipeline_core import experiment
from pipeline_core.config import DataConfig, RunConfig, TrackingConfig
from pipeline_core.tasks import Task
from pipeline_core.tracking import RunRef, get_tracker
from pipeline_core.vectorize import EncodedCorpus


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(data: DataConfig) -> pd.DataFrame:
    return experiment.ingest(data)


@task(name="clean", cache_policy=NO_CACHE)
def clean_task(docs: pd.DataFrame, data: DataConfig) -> pd.DataFrame:
    return experiment.clean(docs, data)


@task(name="vectorize", cache_policy=NO_CACHE)
def vectorize_task(
    docs: pd.DataFrame, data: DataConfig, refresh: bool = False, windows: bool = True
) -> EncodedCorpus:
    """Cached on disk by pipeline_core on the text's sha256 + the data config;
    ``refresh`` recomputes it and overwrites the cache; ``windows``: False for a task
    of whole examples (its own data checks name the fault)."""
    return experiment.encode(docs, data, refresh, windows)


@task(name="start-comparison", cache_policy=NO_CACHE)
def start_comparison_task(
    config: RunConfig, corpus: EncodedCorpus, tracking_uri: str, tags: dict[str, str]
) -> RunRef:
    return experiment.start_comparison(config, get_tracker(tracking_uri), corpus, tags)


@task(name="train", cache_policy=NO_CACHE, task_run_name="train-{resolved.label}")
def train_task(
    resolved: experiment.ResolvedModel,
    corpus: EncodedCorpus,
    task_name: str | Task,
    tracking_uri: str,
    parent: RunRef,
    tags: dict[str, str],
    resume_run: RunRef | None = None,
    tracking: TrackingConfig | None = None,
) -> experiment.TrainedModel:
    tracker = get_tracker(tracking_uri)
    return experiment.train_model(
        resolved, corpus, task_name, tracker, parent, tags, resume_run, tracking
    )


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(
    trained: experiment.TrainedModel,
    corpus: EncodedCorpus,
    task_name: str | Task,
    tracking_uri: str,
    tracking: TrackingConfig,
    seed: int,
) -> experiment.ModelResult:
    tracker = get_tracker(tracking_uri)
    return experiment.evaluate_model(trained, corpus, task_name, tracker, tracking, seed)
