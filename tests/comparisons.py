"""Comparisons for tests: one trained in this process through the project's stages
(:func:`compare_in_process`, for stores that serving and scoring tests read), and
reading back one that ``seqlab run`` printed: its parent run, leaderboard and children,
from the tracking store (for the end-to-end reproduction tests)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from mlflow import MlflowClient

from tests.conftest import CliResult

if TYPE_CHECKING:
    from pipeline_core.config import RunConfig
    from pipeline_core.experiment import ModelResult
    from pipeline_core.tasks import Task
    from pipeline_core.tracking import RunRef, Tracker
    from pipeline_core.vectorize import EncodedCorpus


@dataclass(frozen=True)
class InProcess:
    """A comparison trained in this process: its task, corpus, tracker, parent run and
    one result per model (in the config's order)."""

    task: Task
    corpus: EncodedCorpus
    tracker: Tracker
    parent: RunRef
    results: list[ModelResult]

    @property
    def run_ids(self) -> dict[str, str]:
        """Each model's child run id, by model label."""
        return {r.label: r.run_id for r in self.results}


def compare_in_process(config: RunConfig) -> InProcess:
    """Train and evaluate ``config``'s models through the project's stages, as ``seqlab
    run`` does without Prefect, into ``config.tracking.tracking_uri``: one parent run
    with a child run per model, finished with the leaderboard. Fails if a model did."""
    from pipeline_core import experiment
    from pipeline_core.tracking import get_tracker

    task = experiment.make_task(config)
    resolved = experiment.resolve_models(config.models, task, config.train)
    corpus = experiment.encode(
        experiment.clean(experiment.ingest(config.data), config.data), config.data
    )
    tracker = get_tracker(config.tracking.tracking_uri)
    parent = experiment.start_comparison(config, tracker, corpus, {})
    results = []
    for item in resolved:
        trained = experiment.train_model(
            item, corpus, task, tracker, parent, {}, tracking=config.tracking
        )
        results.append(experiment.evaluate_model(trained, corpus, task, tracker, config.tracking))
    experiment.finish_comparison(tracker, parent, results, task, corpus)
    assert not [r for r in results if r.failed], [r.error for r in results]
    return InProcess(task, corpus, tracker, parent, results)


@dataclass
class Comparison:
    """A finished comparison as MLflow holds it."""

    parent: Any
    board: pd.DataFrame
    children: dict[str, Any]
    stdout: str

    def summary(self, client: MlflowClient, dst: Path) -> list[str]:
        """The lines under the leaderboard, as logged (``summary.txt``, unwrapped)."""
        path = client.download_artifacts(self.parent.info.run_id, "summary.txt", str(dst))
        return Path(path).read_text().splitlines()

    def gradient_flow(self, model: str, client: MlflowClient, dst: Path) -> dict[str, Any]:
        """The model's ``gradient_flow.json``."""
        run_id = self.children[model].info.run_id
        path = client.download_artifacts(run_id, "gradient_flow.json", str(dst))
        return dict(json.loads(Path(path).read_text()))


def read_comparison(result: CliResult, tracking_uri: str, dst: Path) -> Comparison:
    """The parent run named in ``result``'s output, its leaderboard (indexed by model)
    and its child runs by model name."""
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"MLflow parent run: ([0-9a-f]{32})", result.stdout)
    assert match is not None, result.stdout[-2000:]
    client = MlflowClient(tracking_uri)
    parent = client.get_run(match.group(1))
    board = pd.read_csv(client.download_artifacts(parent.info.run_id, "leaderboard.csv", str(dst)))
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    return Comparison(
        parent, board.set_index("model"), {r.info.run_name: r for r in runs}, result.stdout
    )
