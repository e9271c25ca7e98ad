"""The compare flow end to end, in-process, on a real Prefect server and MLflow store."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline_core.config import RunConfig, validate_model
from pipeline_core.errors import DataError
from pipeline_core.experiment import encode, ingest
from pipeline_core.metrics import evaluate
from pipeline_core.registry import load_plugin

pytestmark = pytest.mark.slow
SOURCE = "synthetic:markov?length=8000"


def _config(tracking_uri: str, models: list[dict]) -> RunConfig:
    return validate_model(
        RunConfig,
        {
            "data": {"source": SOURCE, "clean": "none", "context_len": 8},
            "models": models,
            "train": {"epochs": 2, "batch_size": 64, "progress": False, "lr": 0.01},
            "tracking": {"tracking_uri": tracking_uri, "sample_len": 40},
        },
    )


TINY_LSTM = {"plugin": "lstm", "params": {"embedding_dim": 8, "hidden_size": 24}}


def test_compare_flow_logs_parent_children_and_artifacts(
    prefect_server: str, tracking_uri: str, tmp_path: Path
) -> None:
    from flows.compare import compare_flow

    config = _config(tracking_uri, [{"plugin": "ngram", "params": {"order": 3}}, TINY_LSTM])
    result = compare_flow(config)
    board = result.leaderboard
    assert sorted(board["model"]) == ["lstm", "ngram"]
    assert board["test_bpc"].is_monotonic_increasing

    client = MlflowClient(tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["seqlab.kind"] == "compare"
    entropy = parent.data.metrics["source_entropy_rate_bits"]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "leaderboard.csv",
        "leaderboard.png",
    }
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    assert len(children) == 2
    n_tokens = {c.data.metrics["test_n_tokens"] for c in children}
    assert len(n_tokens) == 1  # every model scored on the same positions
    for child in children:
        assert child.info.status == "FINISHED"
        tags = child.data.tags
        assert tags["seqlab.plugin"] in {"ngram", "lstm"}
        assert tags["seqlab.data_sha256"] == parent.data.tags["seqlab.data_sha256"]
        assert tags["prefect.flow_run_id"]
        bpc = child.data.metrics["test_bpc"]
        assert entropy - 0.05 < bpc < math.log2(7)  # no model beats the source's entropy
        assert child.data.params["data.context_len"] == "8"
        paths = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"samples.txt", "vocab.json", "learning_curve.png", "model"} <= paths
        samples = mlflow.artifacts.load_text(f"{child.info.artifact_uri}/samples.txt")
        assert samples.count("# temperature") == 3

    # the logged checkpoint reloads and reproduces the logged test bpc exactly
    lstm = next(c for c in children if c.data.tags["seqlab.plugin"] == "lstm")
    local = mlflow.artifacts.download_artifacts(
        f"{lstm.info.artifact_uri}/model/checkpoint.pt", dst_path=str(tmp_path)
    )
    corpus = encode(ingest(config.data), config.data)
    model = load_plugin("lstm").load(local, vocab=corpus.vocab.tokens)
    assert evaluate(model, corpus).bpc == pytest.approx(lstm.data.metrics["test_bpc"], rel=1e-9)


def test_a_failing_model_keeps_what_was_recorded(prefect_server: str, tracking_uri: str) -> None:
    from flows.compare import compare_flow

    mle = {"plugin": "ngram", "name": "mle5", "params": {"order": 5, "smoothing": "mle"}}
    config = _config(tracking_uri, [TINY_LSTM, mle])
    with pytest.raises(DataError, match="zero probability"):
        compare_flow(config)
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    by_name = {r.info.run_name: r for r in runs}
    assert by_name["lstm"].info.status == "FINISHED"
    assert "test_bpc" in by_name["lstm"].data.metrics
    assert by_name["mle5"].info.status == "FAILED"
    assert "zero probability" in by_name["mle5"].data.tags["seqlab.error"]
    parent = next(r for r in runs if r.data.tags.get("seqlab.kind") == "compare")
    assert parent.info.status == "FAILED"
    assert client.list_artifacts(parent.info.run_id, "") != []  # partial leaderboard kept
