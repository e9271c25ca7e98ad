"""Kill a real ``seqlab run`` with SIGKILL in its second epoch, resume it, and get the
metrics of a run that was never interrupted; and the one-line refusals of ``--resume``."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import REPO, assert_one_line_error, run_cli

pytestmark = pytest.mark.slow

CONFIG = {
    "data": {"source": "synthetic:markov?length=40000", "clean": "none", "context_len": 16},
    "models": [
        {"plugin": "ngram", "params": {"order": 3}},
        {
            "plugin": "lstm",
            "params": {"embedding_dim": 16, "hidden_size": 64, "dropout": 0.1, "num_layers": 2},
            "train": {"bptt": "stateful"},
        },
    ],
    "train": {"epochs": 3, "batch_size": 8, "lr": 0.005, "progress": False, "patience": 5},
    "tracking": {"sample_len": 20},
}


def _write_config(tmp: Path) -> Path:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    return path


def _runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _by_name(uri: str) -> dict:
    return {r.info.run_name: r for r in _runs(uri) if r.data.tags.get("seqlab.kind") != "compare"}


def _parent(uri: str):
    return next(r for r in _runs(uri) if r.data.tags.get("seqlab.kind") == "compare")


def _checkpoint_written(artifacts: Path) -> bool:
    return any(artifacts.rglob("checkpoints/last.pt"))


def test_kill_during_second_epoch_then_resume_equals_uninterrupted(
    prefect_server: str, tmp_path: Path
) -> None:
    config = _write_config(tmp_path)
    whole_uri = f"sqlite:///{tmp_path / 'whole' / 'mlruns.db'}"
    whole = run_cli("run", "--config", str(config), "--tracking-uri", whole_uri, cwd=tmp_path)
    assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    killed_uri = uri_k = f"sqlite:///{killed_dir / 'mlruns.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqlab", "run", "--config", str(config), "--tracking-uri", uri_k],
        cwd=tmp_path,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    try:
        # the first per-epoch checkpoint of the lstm: epoch 2 has just begun
        while not _checkpoint_written(killed_dir / "mlartifacts"):
            assert proc.poll() is None, "seqlab run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = _by_name(killed_uri)
    assert before["ngram"].info.status == "FINISHED"
    assert before["lstm"].info.status == "RUNNING"
    epochs_logged = MlflowClient(killed_uri).get_metric_history(
        before["lstm"].info.run_id, "val_nll"
    )
    assert [m.step for m in epochs_logged] == [1]  # killed inside epoch 2
    parent_id = _parent(killed_uri).info.run_id

    resumed = run_cli("run", "--resume", parent_id, "--tracking-uri", killed_uri, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resumed: kept finished model(s) ngram" in resumed.stdout

    after, reference = _by_name(killed_uri), _by_name(whole_uri)
    assert after["ngram"].info.run_id == before["ngram"].info.run_id
    assert after["ngram"].info.end_time == before["ngram"].info.end_time  # not retrained
    assert after["lstm"].info.run_id == before["lstm"].info.run_id  # continued in place
    assert after["lstm"].info.status == "FINISHED"
    assert _parent(killed_uri).info.status == "FINISHED"
    assert len(_runs(killed_uri)) == 3  # one parent, two children: nothing duplicated
    for name in ("ngram", "lstm"):
        for metric in ("test_bpc", "test_nll", "val_bpc", "test_acc1"):
            got, want = after[name].data.metrics[metric], reference[name].data.metrics[metric]
            assert got == pytest.approx(want, abs=1e-9), (name, metric, got, want)
    history = MlflowClient(killed_uri).get_metric_history(after["lstm"].info.run_id, "val_nll")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]  # 0: the final figure


#: a classify and a regress comparison that each train in seconds
TASK_RUNS = {
    "classify": ("synthetic:parity?length=4&examples=160&seed=1", "log_loss"),
    "regress": ("synthetic:adding?length=6&examples=400", "mse"),
}
#: the figures each task logs besides bpc's family
FIGURES = {"classify": ("accuracy", "macro_f1", "log_loss"), "regress": ("mse", "mae")}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("task", sorted(TASK_RUNS))
def test_a_resumed_task_comparison_keeps_the_finished_models_figures(
    task: str, prefect_server: str, tmp_path: Path
) -> None:
    """The lstm finished, the gru was killed: the resume keeps the lstm with every
    figure its task logs (read back from MLflow, not retrained) and finishes the gru."""
    from flows.compare import compare_flow
    from pipeline_core.config import RunConfig, validate_model
    from pipeline_core.resume import plan_resume
    from pipeline_core.tracking import get_tracker

    (source, rank_metric), figures = TASK_RUNS[task], FIGURES[task]
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    small = {"embedding_dim": 8, "hidden_size": 16}
    config = validate_model(
        RunConfig,
        {
            "task": task,
            "data": {"source": source, "clean": "none"},
            "models": [{"plugin": "lstm", "params": small}, {"plugin": "gru", "params": small}],
            "train": {"epochs": 2, "batch_size": 16, "lr": 0.01, "progress": False},
            "tracking": {"tracking_uri": uri, "samples": 0, "gradient_flow": False},
            "registry": {"enabled": False},
        },
    )
    whole = compare_flow(config)
    first = {r.label: r for r in whole.results}
    client = MlflowClient(uri)
    kept = client.get_run(first["lstm"].run_id).info
    client.set_terminated(first["gru"].run_id, "KILLED")  # as a kill during its epoch
    client.set_terminated(whole.parent_run_id, "KILLED")
    # a later, worse epoch (patience restores the best weights): the per-epoch val_nll is
    # then the run's latest value, but the model's final val nll is the one at step 0
    client.log_metric(first["lstm"].run_id, "val_nll", 99.0, step=3)
    assert client.get_run(first["lstm"].run_id).data.metrics["val_nll"] == 99.0

    plan = plan_resume(get_tracker(uri), whole.parent_run_id, config)
    assert sorted(plan.finished) == ["lstm"] and sorted(plan.unfinished) == ["gru"]
    back = plan.finished["lstm"]
    assert back.run_id == first["lstm"].run_id and back.plugin == "lstm"
    for split, want in (("test", first["lstm"].scores), ("val", first["lstm"].val_scores)):
        got = back.scores if split == "test" else back.val_scores
        assert got is not None and want is not None
        for name in asdict(want):
            assert _same(getattr(got, name), getattr(want, name)), (split, name)
        for name in figures:
            assert math.isfinite(getattr(got, name)), (split, name)

    resumed = compare_flow(config, whole.parent_run_id)
    assert resumed.resumed == ["lstm"]
    assert client.get_run(first["lstm"].run_id).info.end_time == kept.end_time  # not retrained
    assert client.get_run(first["gru"].run_id).info.status == "FINISHED"
    table = resumed.leaderboard.set_index("model")
    before = whole.leaderboard.set_index("model")
    assert table.loc["lstm", "status"] == "finished"
    for column in [f"test_{name}" for name in figures] + [f"val_{rank_metric}"]:
        got, want = float(table.loc["lstm", column]), float(before.loc["lstm", column])
        assert math.isfinite(got) and got == want, (column, got, want)


@pytest.fixture(scope="module")
def finished(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A small finished comparison on a data file the tests may change afterwards."""
    root = tmp_path_factory.mktemp("resume")
    data = root / "text.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 60, encoding="utf-8")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    result = run_cli(
        "run", "--data", str(data), "--models", "ngram", "--tracking-uri", uri, cwd=root
    )
    assert result.returncode == 0, result.stderr[-2000:]
    parent = _parent(uri)
    child = next(iter(_by_name(uri).values()))
    return {
        "uri": uri,
        "data": str(data),
        "parent": parent.info.run_id,
        "child": child.info.run_id,
        "root": str(root),
    }


def _store_snapshot(uri: str) -> str:
    return json.dumps(
        sorted((r.info.run_id, r.info.status, sorted(r.data.metrics.items())) for r in _runs(uri))
    )


def test_resume_refusals_are_one_line_and_lose_nothing(finished: dict[str, str]) -> None:
    uri, root = finished["uri"], Path(finished["root"])
    before = _store_snapshot(uri)
    stale = ["--resume", finished["parent"], "--data", finished["data"], "--models=ngram"]
    cases = [
        (["--resume", "0123456789abcdef"], "no MLflow run with id"),
        (["--resume", finished["child"]], "is not a seqlab comparison"),
        (
            [*stale, "--epochs=7"],
            "another config (train.epochs: 3 then, 7 now)",
        ),
    ]
    for args, fragment in cases:
        result = run_cli("run", *args, "--tracking-uri", uri, cwd=root)
        assert_one_line_error(result, "--resume", fragment)
    assert _store_snapshot(uri) == before

    Path(finished["data"]).write_text("a different text altogether. " * 80, encoding="utf-8")
    result = run_cli("run", "--resume", finished["parent"], "--tracking-uri", uri, cwd=root)
    assert_one_line_error(result, "--resume", "other data (sha256")
    assert _store_snapshot(uri) == before


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["--task", "translate"],
            "known tasks: classify, fill-blank, next-token, regress, transduce",
        ),
        (["--set", "train.device=cuda"], "train.device: cuda"),
        (["--set", "train.bptt=sideways"], "train.bptt"),
        (["--set", "train.lr_schedule=linear"], "train.lr_schedule"),
        (["--set", "train.patience=0"], "train.patience"),
        (["--set", "nonsense"], "--set: expected KEY=VALUE"),
    ],
)
def test_bad_contract_options_are_one_line(args: list[str], fragment: str, tmp_path: Path) -> None:
    if "cuda" in fragment:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    result = run_cli("run", "--data", "synthetic:markov", *args, cwd=tmp_path)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "mlruns.db").exists()  # refused before anything was recorded


def test_resume_is_documented_in_the_cli() -> None:
    result = run_cli("run", "--help", cwd=REPO)
    assert "--resume" in result.stdout and "--task" in result.stdout


def test_resume_from_a_store_that_is_not_there_creates_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused in one line before Prefect starts; the default ./mlruns.db not made."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store, here
    for given in (["--data", "synthetic:markov"], []):  # a config given, or the stored one
        result = run_cli("run", *given, "--resume", "0" * 32, cwd=tmp_path)
        assert_one_line_error(result, "--resume", "no MLflow run with id", "(no store)")
        assert not (tmp_path / "mlruns.db").exists()
