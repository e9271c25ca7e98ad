"""The compare flow end to end, in-process, on a real Prefect server and MLflow store."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline_core.config import RunConfig, validate_model
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
    assert sorted(board["model"]) == ["lstm", "ngram", "oracle"]  # the source's true law
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


def test_a_failing_model_fails_only_its_own_run(prefect_server: str, tracking_uri: str) -> None:
    from flows.compare import compare_flow

    mle = {"plugin": "ngram", "name": "mle5", "params": {"order": 5, "smoothing": "mle"}}
    ngram = {"plugin": "ngram", "name": "kn3", "params": {"order": 3}}
    config = _config(tracking_uri, [TINY_LSTM, mle, ngram])
    result = compare_flow(config)  # the flow waits for every model
    assert [f.label for f in result.failures] == ["mle5"]
    assert "sums to 0" in (result.failures[0].error or "")
    board = result.leaderboard
    board = board[board["plugin"] != "baseline"]  # the oracle's row ranks with the models
    assert board["model"].tolist() == [
        *sorted(["lstm", "kn3"], key=lambda m: float(board.set_index("model").loc[m, "test_bpc"])),
        "mle5",
    ]
    assert board.set_index("model").loc["mle5", "status"] == "failed"
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    by_name = {r.info.run_name: r for r in runs}
    for finished in ("lstm", "kn3"):
        assert by_name[finished].info.status == "FINISHED"
        assert "test_bpc" in by_name[finished].data.metrics
    failed = by_name["mle5"]
    assert failed.info.status == "FAILED"
    assert "sums to 0" in failed.data.tags["seqlab.error"]
    error_txt = mlflow.artifacts.load_text(f"{failed.info.artifact_uri}/error.txt")
    assert "Traceback" in error_txt and "PluginOutputError" in error_txt
    parent = next(r for r in runs if r.data.tags.get("seqlab.kind") == "compare")
    assert parent.info.status == "FAILED"
    csv = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/leaderboard.csv")
    assert "lstm" in csv and "kn3" in csv and "mle5" in csv and "failed" in csv


def test_stateful_lstm_trains_by_bptt_and_scores_with_carried_state(
    prefect_server: str, tracking_uri: str
) -> None:
    from flows.compare import compare_flow

    stateful = {**TINY_LSTM, "name": "lstm-stateful", "train": {"bptt": "stateful"}}
    config = _config(tracking_uri, [TINY_LSTM, stateful])
    result = compare_flow(config)
    assert not result.failures
    scoring = result.leaderboard.set_index("model")["scoring"].to_dict()
    assert scoring == {"lstm": "windows", "lstm-stateful": "carried state", "oracle": "exact law"}
    client = MlflowClient(tracking_uri)
    run = client.get_run(next(r.run_id for r in result.results if r.label == "lstm-stateful"))
    assert run.data.tags["seqlab.scoring"] == "carried state"
    assert run.data.params["train.bptt"] == "stateful"
    # per-epoch val_bpc is computed exactly like the final one (logged at step 0)
    by_step = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_bpc")}
    assert sorted(by_step) == [0, 1, 2]
    assert by_step[2] == pytest.approx(by_step[0], rel=1e-12)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")} == {
        "checkpoints/last.pt"
    }
