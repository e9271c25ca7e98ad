"""One Prefect task per stage, each a thin call into :mod:`pipeline_core.experiment`.

Tasks receive plain values (configs, a tracking URI, run references), never clients, so
any task runner (threads today, Dask processes tomorrow) can ship them.
"""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from pipeline_core import experiment
from pipeline_core.config import DataConfig, RunConfig, TrackingConfig, TrainConfig
from pipeline_core.tracking import RunRef, get_tracker
from pipeline_core.vectorize import EncodedCorpus


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(data: DataConfig) -> pd.DataFrame:
    return experiment.ingest(data)


@task(name="clean", cache_policy=NO_CACHE)
def clean_task(docs: pd.DataFrame, data: DataConfig) -> pd.DataFrame:
    return experiment.clean(docs, data)


@task(name="vectorize", cache_policy=NO_CACHE)
def vectorize_task(docs: pd.DataFrame, data: DataConfig) -> EncodedCorpus:
    """Cached on disk by pipeline_core on the text's sha256 + the data config."""
    return experiment.encode(docs, data)


@task(name="start-comparison", cache_policy=NO_CACHE)
def start_comparison_task(
    config: RunConfig, corpus: EncodedCorpus, tracking_uri: str, tags: dict[str, str]
) -> RunRef:
    return experiment.start_comparison(config, get_tracker(tracking_uri), corpus, tags)


@task(name="train", cache_policy=NO_CACHE, task_run_name="train-{resolved.spec.plugin}")
def train_task(
    resolved: experiment.ResolvedModel,
    corpus: EncodedCorpus,
    train: TrainConfig,
    tracking_uri: str,
    parent: RunRef,
    tags: dict[str, str],
) -> experiment.TrainedModel:
    return experiment.train_model(resolved, corpus, train, get_tracker(tracking_uri), parent, tags)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(
    trained: experiment.TrainedModel,
    corpus: EncodedCorpus,
    tracking_uri: str,
    tracking: TrackingConfig,
    seed: int,
) -> experiment.ModelResult:
    return experiment.evaluate_model(trained, corpus, get_tracker(tracking_uri), tracking, seed)
