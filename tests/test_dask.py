"""The comparison's runners (issue 9): sequential, threads and Dask pick the right Prefect
task runner, an unreachable scheduler is one line, and a comparison on a real two-process
Dask cluster gives exactly the sequential leaderboard, every child run FINISHED."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow import MlflowClient
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runners import (
    check_dask_scheduler,
    check_execution,
    parallel_config,
    task_runner_for,
)
from pipeline_core.config import RunConfig, validate_model
from pipeline_core.errors import ConfigError
from pipeline_core.network import NetworkError
from tests.conftest import assert_one_line_error, run_cli

SOURCE = "synthetic:markov?length=6000"
UNREACHABLE = "tcp://127.0.0.1:1"  # port 1: nothing listens, the connection is refused
MODELS: list[dict[str, Any]] = [
    {"plugin": "ngram", "params": {"order": 3}},
    {"plugin": "lstm", "params": {"embedding_dim": 8, "hidden_size": 24}},
    {"plugin": "gru", "params": {"embedding_dim": 8, "hidden_size": 24}},
]


def _config(
    tracking_uri: str = "sqlite:///unused.db",
    runner: str = "sequential",
    models: list[dict[str, Any]] = MODELS,
    **execution: Any,
) -> RunConfig:
    return validate_model(
        RunConfig,
        {
            "data": {"source": SOURCE, "clean": "none", "context_len": 8},
            "models": models,
            "train": {
                "epochs": 2,
                "batch_size": 32,
                "max_batches_per_epoch": 6,
                "seed": 7,
                "lr": 0.01,
                "progress": False,
            },
            "tracking": {
                "tracking_uri": tracking_uri,
                "samples": 1,
                "sample_len": 20,
                "gradient_flow": False,
            },
            "execution": {"runner": runner, **execution},
            "registry": {"enabled": False},
        },
    )


# ---- fast: which runner, and the checks before anything runs ---------------------------
def test_each_runner_gets_its_task_runner() -> None:
    from prefect_dask import DaskTaskRunner

    sequential = task_runner_for(_config())
    assert isinstance(sequential, ThreadPoolTaskRunner) and sequential._max_workers == 1
    threads = task_runner_for(_config(runner="threads"))
    assert isinstance(threads, ThreadPoolTaskRunner)
    assert threads._max_workers == 2 * len(MODELS)  # train + evaluate: every model at once

    local = task_runner_for(_config(runner="dask", dask_workers=3))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    kwargs = local.cluster_kwargs
    assert kwargs["n_workers"] == 3 and kwargs["threads_per_worker"] == 1
    assert kwargs["host"] == "127.0.0.1"
    assert not str(kwargs["dashboard_address"]).endswith(":8787")  # a free port instead

    remote = task_runner_for(_config(runner="dask", dask_address="tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    assert remote.cluster_kwargs == {}


def test_parallel_runners_train_with_one_torch_thread_unless_told() -> None:
    sequential = _config()
    assert parallel_config(sequential) is sequential  # untouched
    for runner in ("threads", "dask"):
        config = _config(runner=runner)
        config.train.progress = True
        single = parallel_config(config)
        assert single.train.num_threads == 1
        assert single.train.progress is (runner == "threads")  # no bars from Dask workers
        assert config.train.num_threads is None and config.train.progress  # a copy
        assert single.models == config.models and single.execution == config.execution
    told = _config(runner="dask")
    told.train.num_threads = 2
    assert parallel_config(told).train.num_threads == 2


def test_unreachable_scheduler_is_one_network_error() -> None:
    with pytest.raises(NetworkError) as err:
        check_dask_scheduler(UNREACHABLE, timeout=1)
    assert str(err.value) == f"--dask-address {UNREACHABLE}: no Dask scheduler answered within 1 s"
    with pytest.raises(ConfigError, match="not a Dask address"):
        check_dask_scheduler("bogus://host:1", timeout=1)

    async def in_a_notebook() -> None:  # an event loop already runs in this thread
        check_dask_scheduler(UNREACHABLE, timeout=0.5)

    with pytest.raises(NetworkError, match=r"no Dask scheduler answered within 0\.5 s$"):
        asyncio.run(in_a_notebook())
    check_execution(_config(runner="threads", dask_address=UNREACHABLE))  # not used: no check


def test_remote_scheduler_needs_a_prefect_api_its_workers_reach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    remote = _config(runner="dask", dask_address="tcp://10.0.0.5:8786")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    with pytest.raises(ConfigError, match="set PREFECT_API_URL to a Prefect server they"):
        check_execution(remote)  # refused before any connection is tried
    # a reachable-looking API: the scheduler is asked, and nothing answers (TEST-NET-1)
    monkeypatch.setenv("PREFECT_API_URL", "http://192.0.2.1:4200/api")
    monkeypatch.setenv("SEQLAB_NETWORK_TIMEOUT", "0.5")
    with pytest.raises(NetworkError, match=r"no Dask scheduler answered within 0\.5 s"):
        check_execution(_config(runner="dask", dask_address="tcp://192.0.2.1:1"))


def test_an_interrupt_kills_the_model_runs_its_workers_left_running(tracking_uri: str) -> None:
    from flows.runners import kill_orphaned_model_runs
    from pipeline_core.experiment import experiment_name
    from pipeline_core.runs import process_tags
    from pipeline_core.tracking import Tracker

    config = _config(tracking_uri, "dask")
    tracker = Tracker(tracking_uri)
    name = experiment_name(config.data, config.tracking, config.task)
    compare = {"seqlab.kind": "compare"}
    mine = tracker.start_run("compare", name, tags={**compare, **process_tags()})
    other = tracker.start_run("compare", name, tags={**compare, "seqlab.pid": "1"})
    running = tracker.start_run("lstm", parent=mine)
    finished = tracker.start_run("ngram", parent=mine)
    tracker.end(finished)
    elsewhere = tracker.start_run("gru", parent=other)  # another process's: left alone
    tracker.kill(mine)  # as the flow leaves it

    assert kill_orphaned_model_runs(config) == [running.run_id]
    status = {
        r.run_id: tracker.client.get_run(r.run_id).info.status
        for r in (running, finished, elsewhere)
    }
    assert status == {
        running.run_id: "KILLED",
        finished.run_id: "FINISHED",
        elsewhere.run_id: "RUNNING",
    }


# ---- slow: the CLI, and flows on a Prefect server --------------------------------------
@pytest.mark.slow
def test_cli_unreachable_address_and_unknown_runner_are_one_line(tmp_path: Path) -> None:
    os.environ["SEQLAB_NETWORK_TIMEOUT"] = "2"
    try:
        base = ("run", "--data", SOURCE, "--models", "ngram")
        result = run_cli(*base, "--runner", "dask", "--dask-address", UNREACHABLE, cwd=tmp_path)
    finally:
        os.environ.pop("SEQLAB_NETWORK_TIMEOUT", None)
    assert_one_line_error(result, f"--dask-address {UNREACHABLE}: no Dask scheduler answered")
    result = run_cli(*base, "--runner", "bogus", cwd=tmp_path)
    assert_one_line_error(result, "execution.runner", "'bogus'")
    assert not list(tmp_path.iterdir())  # refused before any store or run was made


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_kills_every_open_run(
    prefect_server: str, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys
    import time

    from tests.test_signals import _runs, _wait_gone, descendants

    db = tmp_path / "mlruns.db"
    args = ["run", "--data", "synthetic:markov?length=20000", "--models", "ngram,lstm"]
    args += ["--epochs", "500", "--set", "train.max_batches_per_epoch=20", "--runner", "dask"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqlab", *args, "--tracking-uri", f"sqlite:///{db}"],
        cwd=tmp_path,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not any((tmp_path / "mlartifacts").rglob("checkpoints/last.pt")):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no model finished an epoch in 180 s"
            time.sleep(0.2)
        workers = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr.splitlines() == ["error: interrupted"], stderr[-3000:]
    runs = _runs(db)
    assert runs.pop("compare synthetic-markov") == "KILLED"
    assert runs["lstm"] == "KILLED" and runs["ngram"] in ("FINISHED", "KILLED"), runs
    assert _wait_gone(workers, seconds=10) == set(), "Dask workers outlived seqlab run"


def _children(tracking_uri: str, parent_id: str) -> list[Any]:
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_id)
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )


def _figures(result: Any) -> dict[str, tuple[float, float]]:
    board = result.leaderboard
    models = board[board["plugin"] != "baseline"]
    return {r.model: (r.test_bpc, r.val_bpc) for r in models.itertuples()}


@pytest.mark.slow
def test_threads_runner_trains_every_model(prefect_server: str, tmp_path: Path) -> None:
    from flows.compare import run_comparison

    uri = f"sqlite:///{tmp_path / 'threads.db'}"
    threads_before = torch.get_num_threads()
    result = run_comparison(_config(uri, "threads", MODELS[:2]))
    assert torch.get_num_threads() == threads_before
    assert not result.failures
    children = _children(uri, result.parent_run_id)
    assert sorted(c.data.tags["mlflow.runName"] for c in children) == ["lstm", "ngram"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.params["train.num_threads"] == "1"


@pytest.mark.slow
def test_dask_comparison_equals_the_sequential_one(prefect_server: str, tmp_path: Path) -> None:
    from distributed import LocalCluster

    from flows.compare import run_comparison
    from pipeline_core.training import torch_threads

    seq_uri = f"sqlite:///{tmp_path / 'sequential.db'}"
    sequential = _config(seq_uri)
    sequential.train.num_threads = 1
    with torch_threads(1):  # as on a Dask worker: one torch thread, scoring included
        expected = run_comparison(sequential)
    assert not expected.failures

    dask_uri = f"sqlite:///{tmp_path / 'dask.db'}"
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        got = run_comparison(_config(dask_uri, "dask", dask_address=cluster.scheduler_address))
        # what the scheduler ran: each model's train and evaluate task, on its workers
        ran = {
            name: prefix.state_counts.get("memory", 0)
            for name, prefix in cluster.scheduler.task_prefixes.items()
        }
    assert not got.failures

    want, have = _figures(expected), _figures(got)
    assert sorted(have) == sorted(want) == ["gru", "lstm", "ngram"]
    for model, (test_bpc, val_bpc) in want.items():
        assert have[model][0] == pytest.approx(test_bpc, abs=1e-9, rel=0), model
        assert have[model][1] == pytest.approx(val_bpc, abs=1e-9, rel=0), model
    assert ran.get("train_task") == ran.get("evaluate_task") == len(MODELS), ran

    children = _children(dask_uri, got.parent_run_id)
    assert sorted(c.data.tags["mlflow.runName"] for c in children) == ["gru", "lstm", "ngram"]
    parent = MlflowClient(dask_uri).get_run(got.parent_run_id)
    assert parent.info.status == "FINISHED"
    for child in children:
        label = child.data.tags["mlflow.runName"]
        assert child.info.status == "FINISHED", label
        assert child.data.tags["mlflow.parentRunId"] == got.parent_run_id
        assert child.data.params["train.num_threads"] == "1"
        assert child.data.metrics["test_bpc"] == pytest.approx(have[label][0], abs=1e-12)
