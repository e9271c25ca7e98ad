"""The recurrent family end to end: the tutorial's experiment, every architecture in one
comparison with its gradient flow, the fill-blank and transduce tasks, and a diverging
model failing alone; real Prefect flows and a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline_core.config import RunConfig, validate_model
from tests.conftest import WONDERLAND, run_cli

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _slice(tmp_path: Path, chars: int) -> str:
    """The first ``chars`` characters of wonderland, as a file of its own."""
    path = tmp_path / "alice-slice.txt"
    path.write_text(WONDERLAND.read_text(encoding="utf-8-sig")[:chars], encoding="utf-8")
    return str(path)


def _config(
    tracking_uri: str, source: str, models: list[dict[str, Any]], **extra: Any
) -> RunConfig:
    values: dict[str, Any] = {
        "data": {"source": source, "clean": "seed", "context_len": 10},
        "models": models,
        "train": {"epochs": 1, "batch_size": 32, "progress": False, "max_batches_per_epoch": 30},
        "tracking": {"tracking_uri": tracking_uri, "sample_len": 30},
    }
    values.update(extra)
    return validate_model(RunConfig, values)


def _children(client: MlflowClient, parent_id: str) -> dict[str, Any]:
    parent = client.get_run(parent_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
    )
    return {r.info.run_name: r for r in runs}


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


TINY = {"hidden_size": 16, "embedding_dim": 8}


def test_seed_config_reproduces_the_tutorial_for_two_iterations(
    prefect_server: str, tracking_uri: str
) -> None:
    """configs/seed.yaml as the tutorial runs it, 2 of its 25 iterations: after each, 100
    greedy characters from a random seed window are logged on the rnn's run."""
    result = run_cli(
        "run",
        "--config",
        str(REPO / "configs" / "seed.yaml"),
        "--data",
        str(WONDERLAND),
        "--epochs",
        "2",
        "--tracking-uri",
        tracking_uri,
        "--set",
        "train.progress=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    parent_id = result.stdout.split("MLflow parent run: ")[1].split()[0]
    children = _children(client, parent_id)
    assert set(children) == {"rnn"}
    rnn = children["rnn"]
    params = rnn.data.params
    assert params["model.input"] == "onehot" and params["model.hidden_size"] == "128"
    assert params["train.optimizer"] == "rmsprop" and params["train.objective"] == "last"
    assert params["train.batch_size"] == "128" and params["data.context_len"] == "10"
    assert params["data.clean"] == "seed"
    files = _artifacts(client, rnn.info.run_id, "iterations")
    assert files == {"iterations/iteration_000.txt", "iterations/iteration_001.txt"}
    for i in (0, 1):
        text = mlflow.artifacts.load_text(
            f"{rnn.info.artifact_uri}/iterations/iteration_{i:03d}.txt"
        )
        header, seed_line, generated = text.rstrip("\n").split("\n")
        assert header == f"Iteration #: {i}"
        seed = seed_line.removeprefix("Generating from seed: ")
        assert len(seed) == 10 and generated.startswith(seed)
        assert len(generated) == 10 + 100  # the seed, then 100 greedy characters
    assert len(rnn.data.metrics) and rnn.data.metrics["test_bpc"] < 4.0


def test_every_recurrent_architecture_runs_with_its_gradient_flow(
    prefect_server: str, tracking_uri: str, tmp_path: Path
) -> None:
    from flows.compare import compare_flow

    models = [
        {"plugin": "ngram", "params": {"order": 3}},
        {"plugin": "rnn", "params": TINY},
        {"plugin": "lstm", "params": TINY},
        {"plugin": "gru", "params": TINY},
        {"plugin": "birnn", "params": TINY},
        {"plugin": "crnn", "params": TINY},
    ]
    config = _config(tracking_uri, _slice(tmp_path, 40_000), models)
    result = compare_flow(config)
    board = result.leaderboard
    assert sorted(board["model"]) == ["birnn", "crnn", "gru", "lstm", "ngram", "rnn"]
    assert set(board["status"]) == {"finished"}, board[["model", "error"]]
    client = MlflowClient(tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["seqlab.task"] == "next-token"
    assert "gradient_flow.png" in _artifacts(client, parent.info.run_id)
    children = _children(client, result.parent_run_id)
    n_tokens = {c.data.metrics["test_n_tokens"] for c in children.values()}
    assert len(n_tokens) == 1  # the same positions for all six
    for name, child in children.items():
        paths = _artifacts(client, child.info.run_id)
        assert "samples.txt" in paths
        if name == "ngram":
            assert "gradient_flow.json" not in paths
            continue
        assert {"gradient_flow.png", "gradient_flow.json"} <= paths, name
        flow = json.loads(
            mlflow.artifacts.load_text(f"{child.info.artifact_uri}/gradient_flow.json")
        )
        assert len(flow["grad_norm"]) == 10  # one norm per step of a context window
        assert child.data.metrics["grad_flow_ratio"] >= 0


def test_a_diverging_model_fails_alone_with_a_hint_to_clip(
    prefect_server: str, tracking_uri: str, tmp_path: Path
) -> None:
    """Exploding gradients: recurrent weights scaled up 50x, a large lr, no clipping.
    That model's loss becomes NaN, its run FAILED with the reason; the other finishes."""
    from flows.compare import compare_flow

    exploding = {
        "plugin": "rnn",
        "name": "exploding",
        "params": {"hidden_size": 64, "recurrent_scale": 50.0},
        "train": {"clip_norm": None, "lr": 10.0},
    }
    source = _slice(tmp_path, 20_000)
    config = _config(
        tracking_uri,
        source,
        [exploding, {"plugin": "lstm", "params": TINY}],
        # 50 steps of BPTT through W_h scaled 50x overflow float32 (tests/test_diagnostics.py)
        data={"source": source, "clean": "seed", "context_len": 50},
    )
    result = compare_flow(config)
    rows = result.leaderboard.set_index("model")
    assert rows.loc["lstm", "status"] == "finished"
    assert rows.loc["exploding", "status"] == "failed"
    assert "diverged" in rows.loc["exploding", "error"]
    assert "clip_norm" in rows.loc["exploding", "error"]
    client = MlflowClient(tracking_uri)
    children = _children(client, result.parent_run_id)
    assert children["exploding"].info.status == "FAILED"
    assert children["lstm"].info.status == "FINISHED"


def test_fill_blank_compares_both_sides_with_the_left_only_on_the_same_blanks(
    prefect_server: str, tracking_uri: str, tmp_path: Path
) -> None:
    from flows.compare import compare_flow

    models = [
        {"plugin": "ngram", "params": {"order": 5}},
        {"plugin": "lstm", "params": TINY},
        {"plugin": "birnn", "params": TINY},
    ]
    config = _config(
        tracking_uri,
        _slice(tmp_path, 40_000),
        models,
        task="fill-blank",
        task_options={"max_positions": 400},
    )
    result = compare_flow(config)
    assert result.experiment.endswith("/fill-blank")
    rows = result.leaderboard.set_index("model")
    assert set(rows["status"]) == {"finished"}, rows["error"]
    assert rows.loc["ngram", "scoring"] == rows.loc["birnn", "scoring"] == "left+right"
    assert rows.loc["lstm", "scoring"] == "left only"
    # the n-gram's two-sided counts beat the barely trained left-only lstm by far
    assert rows.loc["ngram", "test_bpc"] < rows.loc["lstm", "test_bpc"] - 0.5
    assert any("the right context buys" in note for note in result.notes)
    client = MlflowClient(tracking_uri)
    children = _children(client, result.parent_run_id)
    assert {c.data.metrics["test_n_tokens"] for c in children.values()} == {400.0}
    for child in children.values():
        assert {"test_nll", "test_bpc", "test_acc1", "test_acc5"} <= set(child.data.metrics)
        assert child.data.tags["seqlab.scoring"] in {"left+right", "left only"}
    assert "summary.txt" in _artifacts(client, result.parent_run_id)


def test_transduce_puts_seq2seq_beside_the_copy_baseline(
    prefect_server: str, tracking_uri: str, tmp_path: Path
) -> None:
    from flows.compare import compare_flow

    seq2seq = {"plugin": "seq2seq", "params": {"hidden_size": 32, "attention": True}}
    config = _config(
        tracking_uri,
        _slice(tmp_path, 40_000),
        [seq2seq],
        task="transduce",
        task_options={"pairs": "reverse", "words": 2, "max_pairs": 300},
    )
    result = compare_flow(config)
    assert result.experiment.endswith("/transduce")
    rows = result.leaderboard.set_index("model")
    assert set(rows.index) == {"seq2seq", "copy"}
    assert rows.loc["copy", "plugin"] == "baseline" and rows.loc["copy", "test_cer"] > 0.3
    assert rows.loc["seq2seq", "status"] == "finished"
    client = MlflowClient(tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.metrics["copy_test_cer"] == pytest.approx(rows.loc["copy", "test_cer"])
    assert parent.data.tags["seqlab.task"] == "transduce"
    child = _children(client, result.parent_run_id)["seq2seq"]
    metrics = child.data.metrics
    assert {"test_cer", "test_exact_match", "test_bpc", "val_cer"} <= set(metrics)
    assert 0 <= metrics["test_exact_match"] <= 1 and metrics["test_cer"] >= 0
    assert child.data.tags["seqlab.scoring"] == "greedy"
